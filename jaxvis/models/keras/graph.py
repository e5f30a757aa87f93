"""A validated Keras layer graph: nodes in a topological order that keeps Keras's own.

Contract: `build_graph(layer_configs)` checks the graph (one input, unique names, known inputs, no
cycle, single-input layers fed once) and returns a hashable `Graph`; `keras_order` gives the order
Keras itself lists a Functional model's layers in (what weight files are laid out by).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

from jaxvis.errors import JaxvisError
from jaxvis.models.keras.ops import Arithmetic, Concat, Input, Merge
from jaxvis.models.keras.parse import LayerConfig, Node, parse_layer

__all__ = ["Graph", "build_graph", "keras_order"]


@dataclasses.dataclass(frozen=True)
class Graph:
    """A validated Keras layer graph: nodes in execution order, the first one the input."""

    name: str
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    sequential: bool = False  # Keras 3 `model.layers` of a Sequential model leave the InputLayer out
    keras_list: tuple[tuple[str, str], ...] | None = None  # (name, class) per model.layers, nested models too

    @property
    def input(self) -> Node:
        return self.nodes[0]

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return self.nodes[0].op.shape

    @functools.cached_property
    def layer_names(self) -> tuple[str, ...]:
        """Every addressable layer but the input, in execution order."""
        return tuple(node.name for node in self.nodes[1:])

    @functools.cached_property
    def by_name(self) -> dict[str, Node]:
        return {node.name: node for node in self.nodes}

    @functools.cached_property
    def weighted(self) -> tuple[Node, ...]:
        """The nodes that carry weights, in execution order (Keras's `load_weights` order)."""
        return tuple(node for node in self.nodes if node.op.weight_names)

    def keras_layers(self) -> tuple[tuple[str, str], ...]:
        """(name, class name) in Keras 3's `model.layers` order (what `.weights.h5` paths are counted
        over); a nested model is listed by its name, then its own layers by path (`vgg16/block1_conv1`)."""
        if self.keras_list is not None:
            return self.keras_list
        nodes = self.nodes[1:] if self.sequential else self.nodes
        return tuple((node.name, node.class_name) for node in nodes)

    def ancestors(self, names: Sequence[str]) -> set[str]:
        """`names` and every layer they depend on."""
        needed, stack = set(), list(names)
        while stack:
            name = stack.pop()
            if name not in needed:
                needed.add(name)
                stack.extend(self.by_name[name].inputs)
        return needed


def build_graph(layers: Sequence[LayerConfig], *, name: str = "model", outputs: Sequence[str] | None = None,
                sequential: bool = False, keras_list: Sequence[tuple[str, str]] | None = None) -> Graph:
    """Validate `layers` (one InputLayer, unique names, known inputs) and order them topologically.

    The order is Keras's where it is already topological (a stable topological sort), so that
    weights stored in layer order line up. `outputs` defaults to the layers nothing consumes.
    """
    nodes = [parse_layer(layer) for layer in layers]
    names = [node.name for node in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise JaxvisError(f"Keras model {name!r} has several layers named {', '.join(map(repr, duplicates))}")
    inputs = [node for node in nodes if isinstance(node.op, Input)]
    if len(inputs) != 1:
        raise JaxvisError(f"Keras model {name!r} has {len(inputs)} inputs; jaxvis supports models with one image input")
    known = set(names)
    for node in nodes:
        missing = [i for i in node.inputs if i not in known]
        if missing:
            raise JaxvisError(f"Keras layer {node.name!r} takes the output of unknown layer(s) {', '.join(missing)}")
        if not node.inputs and not isinstance(node.op, Input):
            raise JaxvisError(f"Keras layer {node.name!r} ({node.class_name}) has no inputs")
        if len(node.inputs) > 1 and not isinstance(node.op, (Merge, Concat, Arithmetic)):
            raise JaxvisError(
                f"Keras layer {node.name!r} ({node.class_name}) takes {len(node.inputs)} inputs; expected one"
            )
    # Stable topological sort (Kahn's, always taking the earliest ready node).
    order, done, pending = [], set(), list(nodes)
    while pending:
        ready = next((n for n in pending if all(i in done for i in n.inputs)), None)
        if ready is None:
            raise JaxvisError(f"Keras model {name!r} has a cycle through {', '.join(n.name for n in pending[:5])}")
        pending.remove(ready)
        order.append(ready)
        done.add(ready.name)
    if order[0] is not inputs[0]:  # unreachable: the input is the only node without inputs
        order.remove(inputs[0])
        order.insert(0, inputs[0])
    if outputs is None:
        consumed = {i for node in nodes for i in node.inputs}
        outputs = [node.name for node in order if node.name not in consumed]
    for output in outputs:
        if output not in known:
            raise JaxvisError(f"Keras model {name!r} names unknown output layer {output!r}")
    return Graph(name, tuple(order), tuple(outputs), sequential,
                 None if keras_list is None else tuple(map(tuple, keras_list)))


def keras_order(layers: Sequence[LayerConfig], outputs: Sequence[str]) -> list[LayerConfig]:
    """`layers` in the order Keras gives a Functional model's `model.layers` (and its saved config).

    Keras sorts layers by decreasing depth (the longest path to an output), ties broken by the
    order of a depth-first walk from the outputs (`keras.src.ops.function.map_graph`). Weight files
    are laid out in this order, so generated architectures must follow it.
    """
    by_name = {layer.name: layer for layer in layers}
    first_seen: dict[str, int] = {}
    post_order: list[str] = []
    finished: set[str] = set()
    for output in outputs:
        stack = [(output, False)]
        while stack:
            name, expanded = stack.pop()
            if name in finished:
                continue
            if expanded:
                finished.add(name)
                post_order.append(name)
                continue
            first_seen.setdefault(name, len(first_seen))
            stack.append((name, True))
            stack.extend((source, False) for source in reversed(by_name[name].inputs))
    depth: dict[str, int] = {}
    for name in reversed(post_order):
        d = depth.setdefault(name, 0)
        for source in by_name[name].inputs:
            depth[source] = max(d + 1, depth.get(source, 0))
    ordered = sorted(post_order, key=lambda name: (-depth[name], first_seen[name]))
    return [by_name[name] for name in ordered]

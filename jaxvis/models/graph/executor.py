"""`GraphModule`: a Flax module that runs a graph IR (`ir.Graph`) on NHWC activations.

Contract: `GraphModule(graph).apply(variables, x[B,H,W,C], outputs=names, relu_redirect=r)` returns
`{name: activation}` for exactly `names` (layer names of `graph.layers`, the input's name, or
`<layer>/pre_softmax` of a layer ending in a softmax: its logits), running only the nodes
those layers depend on. A 4-D activation is returned NHWC -- the source framework's NCHW tensor
transposed; in a graph whose input is NHWC (TensorFlow exports) a 4-D tensor the source holds NHWC
is returned as it is -- and any other rank as the source framework has it ([B, N] for logits). Every
ReLU-family op runs through `jaxvis.models.activations` with `relu_redirect`; convolutions use the
formulations of `jaxvis.models.layers`. Variables are `{"params": {param_name: array}}` in the
layouts `ir.convert_weight` gives (`{"params": {group: {weight: array}}}` for a graph with
`param_groups`, as Keras layers keep their weights); `init` draws small normal weights of the
recorded shapes.

The ops live by family, each module with its layout rule: `values` (the layout flag every value
carries), `elementwise`, `spatial`, `axis_ops`, `shape_ops`; `HANDLERS` is their union.

Batch: shapes are traced for one image and the batch rides on axis 0. A graph that moves the batch
off axis 0 (`graph.per_item`, e.g. a decomposed einsum) runs each image as a batch of one under
`jax.vmap`, which is what its fixed shapes describe.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.graph.axis_ops import AXIS
from jaxvis.models.graph.elementwise import ELEMENTWISE
from jaxvis.models.graph.ir import OPS, Graph, Node
from jaxvis.models.graph.shape_ops import SHAPE
from jaxvis.models.graph.spatial import SPATIAL
from jaxvis.models.graph.values import Ctx, V, to_output
from jaxvis.models.spec import PRE_SOFTMAX

__all__ = ["HANDLERS", "Ctx", "GraphModule", "V", "run_node"]

HANDLERS: dict[str, Callable] = {**SPATIAL, **ELEMENTWISE, **AXIS, **SHAPE}
_SIZED_OPS = ("matmul", "gemm", "linear", "reshape")  # ops whose shapes fix the input size of what follows
assert set(HANDLERS) == set(OPS), "every IR op has exactly one handler"


def run_node(node: Node, args: list, ctx: Ctx) -> list[V]:
    """Run one node on its argument values; a bad shape or attribute is a `JaxvisError` naming the node."""
    try:
        return HANDLERS[node.op](node.attr, args, ctx)
    except (ValueError, TypeError, IndexError, KeyError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if node.op in _SIZED_OPS:
            message += " (does the model take inputs of this size?)"
        raise JaxvisError(f"graph op {node.op!r} of {node.name or node.outputs[0]!r} cannot run: {message}") from None


class GraphModule(nn.Module):
    """Runs an `ir.Graph` (see the module docstring for the call contract)."""

    graph: Graph
    conv_impl: str = "auto"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.graph.layer_names

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        graph = self.graph
        outputs = graph.layer_names if outputs is None else tuple(outputs)
        values = {name: _layer_value(graph, name) for name in outputs}
        _check_input(graph, x)
        nodes = [graph.nodes[i] for i in graph.needed_nodes(list(values.values()))]
        known: dict = {}  # weights and constants the nodes read, fetched once from the variables
        groups: dict = {}
        for node in nodes:
            for a in node.inputs:
                if isinstance(a, str) and a not in known and (a in graph.params or a in graph.constants):
                    known[a] = self._value(a, groups)
        ctx = Ctx(relu_redirect, self.conv_impl)
        channels_first = graph.input_layout == "nchw"

        def run(x):
            env = dict(known)
            env[graph.input] = V(x, channels_first)
            for node in nodes:
                args = [env[a] if isinstance(a, str) else a for a in node.inputs]
                env.update(zip(node.outputs, run_node(node, args, ctx)))
            return {name: to_output(env[value], channels_first=channels_first) for name, value in values.items()}

        if not graph.per_item:
            return run(x)
        # shapes fixed for one image: run each image as a batch of one
        found = jax.vmap(lambda xi: run(xi[None]))(x)
        return {k: v[:, 0] if v.ndim > 1 and v.shape[1] == 1 else v for k, v in found.items()}

    def _value(self, name: str, groups: dict) -> V:
        """A constant or a weight (drawn at init: small normal values of the recorded shape)."""
        graph = self.graph
        if name in graph.constants:
            return V(jnp.asarray(graph.constants[name]))
        path = graph.param_path(name)
        if len(path) == 2:
            if path[0] not in groups:
                groups[path[0]] = self._weights(path[0], {k.split("/", 1)[1]: tuple(shape)
                                                          for k, shape in graph.params.items()
                                                          if graph.param_path(k)[0] == path[0]})
            if path[1] not in groups[path[0]]:
                raise JaxvisError(f"the variables of model {graph.name} have no weight {path[1]!r} for {path[0]!r}")
            return V(groups[path[0]][path[1]])
        return V(self._weights(name, tuple(graph.params[name])))

    def _weights(self, key: str, shapes):
        """`variables["params"][key]`: one array of shape `shapes`, or a dict of them (a param group)."""
        if self.is_initializing():
            def draw(rng):
                if isinstance(shapes, dict):
                    return {k: 0.05 * jax.random.normal(jax.random.fold_in(rng, i), s, jnp.float32)
                            for i, (k, s) in enumerate(shapes.items())}
                return 0.05 * jax.random.normal(rng, shapes, jnp.float32)
            return self.param(key, draw)
        if not self.has_variable("params", key):
            raise JaxvisError(f"the variables of model {self.graph.name} have no weight {key!r}")
        return self.get_variable("params", key)


def _layer_value(graph: Graph, name: str) -> str:
    """The value a requested layer name reads: a layer's, the graph input's (by its name), or for
    `<layer>/pre_softmax` of a layer that ends in a softmax the softmax's input
    (`jaxvis.models.spec.PRE_SOFTMAX`)."""
    values = graph.layer_values
    if name in values:
        return values[name]
    if name == graph.input:
        return name
    if name.endswith(PRE_SOFTMAX) and name[: -len(PRE_SOFTMAX)] in values:
        value = values[name[: -len(PRE_SOFTMAX)]]
        node = next((n for n in graph.nodes if value in n.outputs), None)
        if node is not None and node.op == "softmax":
            return node.inputs[0]
    raise unknown_name(f"layer of model {graph.name}", name, graph.layer_names)


def _check_input(graph: Graph, x) -> None:
    """The input's rank and channels must be the graph's (its other sizes are free)."""
    shape = graph.input_shape
    channels = shape[1] if graph.input_layout == "nchw" else shape[-1]
    if x.ndim != len(shape) or x.shape[-1] != channels:
        axes = "height, width" if len(shape) == 4 else ", ".join(["size"] * (len(shape) - 2))
        raise JaxvisError(f"model {graph.name} takes inputs of shape [batch, {axes}, {channels}], got {tuple(x.shape)}")

"""`GraphBuilder`: what the front-ends (`from_export`, `from_onnx`) lower a file into.

Contract: a front-end declares the input (NCHW shape for one image), the file's tensors
(`add_param`: weights, kept in the variables; `add_const`: small constants), then adds nodes in
topological order with `node(...)`. Each node is checked as it is added, by running the
executor's own op on the known shapes (`jax.eval_shape`; `shape_rules` does the commonest nodes
by arithmetic), so a bad attribute or shape is a `JaxvisError` naming the node before anything
runs; a node whose inputs are all known at load time (shape arithmetic, weight-only subgraphs
such as a transposed matrix) is folded into a constant. `static(name)` gives a value that must be
known at load time (a reshape target, a slice bound) or raises the "dynamic shape" error. Shapes
are traced with a batch of one; a reshape / expand whose first dimension is that batch is
rewritten to keep the batch free. `finish` returns the `Graph` and its variables, with every
weight converted once to the executor's layout.

Weights are converted on worker threads while the front-end goes on lowering (NumPy copies
release the GIL): a conv kernel's new layout is a full pass over its memory, most of an all-conv
model's load time. Every parameter ends up in aligned memory the variables own (`host_buffers`),
never as a view of the source file's mapping, so the device arrays alias nothing of the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.convert.host_buffers import aligned_copy, is_aligned
from jaxvis.errors import JaxvisError
from jaxvis.models.graph.executor import run_node
from jaxvis.models.graph.ir import Graph, Node, convert_weight, converted_shape
from jaxvis.models.graph.shape_rules import infer as infer_shapes
from jaxvis.models.graph.values import Ctx, V, plain

__all__ = ["GraphBuilder"]

_SMALL = 256  # folded results up to this many entries are embedded in the program; larger ones are weights
# Shape inference traces each node alone: lax.conv has the same shapes as the fast formulations and
# traces in a fraction of the time (Winograd and the redirected ReLUs are custom_vjp functions).
_SHAPE_CTX = Ctx(impl="lax")


_workers: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _workers
    if _workers is None:
        _workers = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="jaxvis-weights")
    return _workers


class _Converting:
    """A weight whose conversion runs on a worker thread: its shape and dtype are known now, its
    array on `result()` (or `np.asarray`)."""

    def __init__(self, future: Future, shape: tuple[int, ...], dtype):
        self.future, self.shape, self.dtype = future, shape, np.dtype(dtype)
        self.ndim, self.size = len(shape), int(np.prod(shape, dtype=np.int64))

    def result(self) -> np.ndarray:
        return self.future.result()

    def __array__(self, dtype=None, copy=None):
        array = self.result()
        return array if dtype is None else array.astype(dtype, copy=False)


def _resolved(value):
    return value.result() if isinstance(value, _Converting) else value


def _owned(array) -> np.ndarray:
    """A parameter in memory it owns: aligned, writable, float32 if floating (see the module docstring)."""
    floating = np.issubdtype(array.dtype, np.floating)
    if floating and array.dtype != np.float32 or not array.flags.writeable or not is_aligned(array):
        return aligned_copy(array, np.float32 if floating else None)
    return array


class GraphBuilder:
    """Accumulates a graph (see the module docstring)."""

    def __init__(self, name: str, source_format: str):
        self.name, self.source_format = name, source_format
        self.input: str | None = None
        self.input_layout = "nchw"
        self.input_shape: tuple = ()
        self.nodes: list[Node] = []
        self.shapes: dict[str, jax.ShapeDtypeStruct] = {}
        self.known: dict[str, np.ndarray] = {}  # values known at load time: params, constants, folded
        self.params: set[str] = set()
        self.batched: set[str] = set()
        self.weight_kinds: dict[str, tuple[str, int, str]] = {}
        self.per_item = False  # set when a node moves the batch off axis 0
        # (op, attrs, input shapes) -> output shapes: a CNN repeats its blocks, and tracing a node
        # for its shapes costs milliseconds, most of a file's load time
        self._shape_cache: dict[tuple, list] = {}

    # -- declarations -----------------------------------------------------------------------------

    def set_input(self, name: str, shape: Sequence[int], dtype=jnp.float32, layout: str = "nchw") -> None:
        """The image input with a batch of one, NCHW (or NHWC: `layout="nhwc"`)."""
        self.input, self.input_shape, self.input_layout = name, (None, *map(int, shape[1:])), layout
        self.shapes[name] = jax.ShapeDtypeStruct(tuple(int(d) for d in shape), dtype)
        self.batched.add(name)

    def add_param(self, name: str, array) -> None:
        self.known[name] = np.asarray(array)
        self.params.add(name)

    def add_const(self, name: str, array) -> None:
        self.known[name] = np.asarray(array)

    def has(self, name: str) -> bool:
        return name in self.shapes or name in self.known

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.known:
            return tuple(self.known[name].shape)
        return tuple(self.shapes[name].shape)

    def is_known(self, name) -> bool:
        return not isinstance(name, str) or name in self.known

    def static(self, name, what: str, node: str) -> np.ndarray:
        """A value that must be known at load time; else the dynamic-shape error."""
        if not isinstance(name, str):
            return np.asarray(name)
        if name not in self.known:
            raise JaxvisError(
                f"{self.source_format} node {node!r}: its {what} ({name!r}) depends on the input at run time "
                f"(a dynamic shape); jaxvis needs it fixed when the model loads -- export with static shapes or "
                f"pass input_size")
        return _resolved(self.known[name])

    def mark_weight(self, name: str, kind: str, groups: int, node: str) -> None:
        """Convert the stored weight `name` once with `ir.convert_weight(kind, groups)` (a conv uses it)."""
        if name not in self.known:
            raise JaxvisError(f"{self.source_format} node {node!r}: its convolution weight {name!r} is computed "
                              f"from the input; only stored weights are supported")
        previous = self.weight_kinds.get(name)
        if previous is not None and previous[:2] != (kind, groups):
            raise JaxvisError(f"{self.source_format} node {node!r}: weight {name!r} is shared by convolutions of "
                              f"different kinds, which is not supported")
        if previous is None:
            array = _resolved(self.known[name])
            try:
                shape = converted_shape(kind, array.shape, groups)
            except JaxvisError as error:
                raise JaxvisError(f"{self.source_format} node {node!r}: {error}") from None
            self.known[name] = _Converting(_pool().submit(convert_weight, kind, array, groups), shape, array.dtype)
        self.weight_kinds[name] = (kind, groups, node)
        self.params.add(name)

    # -- nodes --------------------------------------------------------------------------------------

    def node(self, op: str, inputs, outputs, attrs: Mapping | None = None, name: str = "") -> list[str]:
        """Add (or fold) one node; returns its output names."""
        outputs = list(outputs)
        node = Node.make(op, inputs, outputs, attrs, name)
        for value in node.inputs:
            if isinstance(value, str) and not self.has(value):
                raise JaxvisError(f"{self.source_format} node {name!r} reads {value!r}, which nothing produces")
        tensors = [v for v in node.inputs if isinstance(v, str)]
        if tensors and all(v in self.known for v in tensors) and op not in ("conv",):
            args = [V(jnp.asarray(_resolved(self.known[v]))) if isinstance(v, str) else v for v in node.inputs]
            results = run_node(node, args, Ctx())
            for out, value in zip(outputs, results):
                array = np.asarray(plain(value))
                self.known[out] = array
                if array.size > _SMALL:
                    self.params.add(out)
            return outputs
        batched = any(v in self.batched for v in tensors)
        if batched and self._moves_batch(node):
            self.per_item = True
        node = self._free_batch(node, batched)

        def trace(*arrays):
            it = iter(arrays)
            args = [V(next(it)) if isinstance(v, str) else v for v in node.inputs]
            return [plain(r) for r in run_node(node, args, _SHAPE_CTX)]

        shapes = [self.shapes.get(v) or jax.ShapeDtypeStruct(self.known[v].shape, self._dtype(self.known[v]))
                  for v in tensors]
        key_shapes = _aligned(node.inputs, shapes)
        key = (node.op, node.attrs, tuple((v, None) if not isinstance(v, str) else (None, s.shape, str(s.dtype))
                                          for v, s in zip(node.inputs, key_shapes)))
        try:
            results = (self._shape_cache.get(key) or infer_shapes(node.op, node.attr, node.inputs, key_shapes)
                       or jax.eval_shape(trace, *shapes))
        except JaxvisError:
            raise
        except Exception as error:  # noqa: BLE001 -- any tracing failure is a bad node
            raise JaxvisError(f"{self.source_format} node {name!r} (op {op}) does not fit its input shapes "
                              f"{[tuple(s.shape) for s in shapes]}: {str(error).splitlines()[0]}") from None
        if len(results) < len(outputs):
            raise JaxvisError(
                f"{self.source_format} node {name!r} has {len(outputs)} outputs, its op gives {len(results)}"
            )
        self._shape_cache[key] = results
        for out, result in zip(outputs, results):
            self.shapes[out] = result
            if batched:
                self.batched.add(out)
        self.nodes.append(node)
        return outputs

    def _moves_batch(self, node: Node) -> bool:
        """Whether a node on a batched value moves or mixes the batch axis 0 (then the traced
        shapes hold for one image only, and the graph runs per image)."""
        attrs = node.attr
        first = node.inputs[0]
        rank = len(self.shape(first)) if isinstance(first, str) and self.has(first) else 0
        if rank == 0:
            return False
        on_batch = lambda axis: int(axis) % rank == 0  # noqa: E731
        if node.op == "permute":
            return not on_batch(attrs["perm"][0])
        if node.op in ("concat", "split", "gather", "gather_elements", "softmax", "log_softmax", "cumsum", "argmax",
                       "slice_scatter"):
            return on_batch(attrs.get("axis", 0))
        if node.op == "stack":
            return int(attrs["axis"]) % (rank + 1) == 0
        if node.op == "slice":  # a whole-axis slice of the batch (`x[:, 1:]` in torch) keeps it
            return any(on_batch(a) and not (start in (0, None) and (end is None or end >= 2 ** 31) and step == 1)
                       for a, start, end, step in zip(attrs["axes"], attrs["starts"], attrs["ends"], attrs["steps"]))
        if node.op == "reduce":
            return attrs.get("axes") is None or any(on_batch(a) for a in attrs["axes"])
        if node.op == "tile":
            return int(attrs["repeats"][0]) != 1
        if node.op == "index":
            return node.inputs[1] is not None
        return node.op in ("gather_nd", "scatter_nd", "einsum")

    @staticmethod
    def _dtype(array):
        return jnp.float32 if np.issubdtype(array.dtype, np.floating) else (
            jnp.bool_ if array.dtype == np.bool_ else jnp.int32)

    def _free_batch(self, node: Node, batched: bool) -> Node:
        """Shape targets traced for one image keep the batch free: `view(x, [1, 512])` becomes
        `view(x, [-1, 512])`, and a view merging the batch into the next axis (`[1, 4, 9, 11]` to
        `[4, 9, 11]`, as decomposed matmuls do) or splitting it out again scales its first axis."""
        if not batched or node.op not in ("reshape", "expand"):
            return node
        attrs = node.attr
        shape = list(attrs["shape"])
        x = self.shape(node.inputs[0])
        if not shape or not x:
            return node
        if node.op == "expand" and (shape[0] not in (1, -1) or x[0] != 1):
            return node
        shape[0] = -1
        if node.op == "reshape":  # the batch scales the first dimension; the others are the traced ones
            from jaxvis.models.graph.shape_ops import target_shape

            try:
                shape = [-1, *target_shape(x, attrs["shape"], allowzero=attrs.get("allowzero", False))[1:]]
            except ValueError:
                return node  # a bad target: tracing the node reports it
        attrs["shape"] = tuple(shape)
        return Node.make(node.op, node.inputs, node.outputs, attrs, node.name)

    # -- the result ---------------------------------------------------------------------------------

    def finish(self, layers: Sequence[tuple[str, str]], outputs: Sequence[str]) -> tuple[Graph, dict]:
        """The `Graph` and its variables `{"params": {...}}` (weights converted to the executor's layouts)."""
        if self.input is None:
            raise JaxvisError(f"{self.source_format} model {self.name!r} has no image input")
        used = {v for node in self.nodes for v in node.inputs if isinstance(v, str)}
        for layer, value in layers:
            if value in self.known and value not in self.shapes:
                raise JaxvisError(f"{self.source_format} layer {layer!r} does not depend on the input")
        params, constants = {}, {}
        for name in sorted(used):
            if name not in self.known:
                continue
            if name in self.params:
                # resolved here, not inside the task: a pool task never waits on another pool task
                params[name] = _pool().submit(_owned, _resolved(self.known[name]))
            else:
                constants[name] = _resolved(self.known[name])
        params = {k: v.result() for k, v in params.items()}
        graph = Graph(
            name=self.name, input=self.input, input_shape=self.input_shape, nodes=tuple(self.nodes),
            params={k: tuple(v.shape) for k, v in params.items()}, constants=constants,
            layers=tuple(layers), outputs=tuple(outputs), source_format=self.source_format,
            input_layout=self.input_layout, per_item=self.per_item)
        return graph, {"params": jax.device_put(params)}


def _aligned(inputs, shapes):
    """Each input beside its traced shape (None for the inputs that are not tensors)."""
    it = iter(shapes)
    return [next(it) if isinstance(v, str) else None for v in inputs]

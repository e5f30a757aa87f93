"""The graph IR: one data description for every model file that carries its own architecture.

Contract: a `Graph` is a DAG of `Node`s in topological order over named values, with the source
framework's semantics -- PyTorch's and ONNX's, so 4-D tensors are NCHW, `flatten` is C·H·W order,
axis 1 is the channel axis. `GraphModule` (executor.py) runs it on NHWC activations. The graph is
data, never code: an op is a name from `OPS`, attributes are plain hashable values.

* `Node(op, inputs, outputs, attrs, name)`: `inputs` are value names (graph input, earlier node
  outputs, parameters or constants), `None` for an absent optional input, or a Python number
  for a scalar operand; `attrs` is a sorted tuple of `(key, value)` pairs with ints, floats,
  strings, bools, None and tuples of them; `name` is the source node / module the error messages
  name.
* `Graph`: `input` (value name) and `input_shape` (batch first, `None` for the batch; NCHW, or
  NHWC where `input_layout` is "nhwc", as TensorFlow-exported ONNX files take images),
  `nodes`, `params` (`{name: shape}` of the weights kept in `variables["params"]`, already in
  the executor's layouts, see `convert_weight`), `constants` (`{name: np.ndarray}` small folded
  tensors embedded in the program), `layers` (`((layer_name, value_name), ...)`, the addressable
  layers in execution order) and `outputs` (the graph's own outputs). Where `param_groups` is set
  (Keras graphs), a param named `group/weight` lives at `variables["params"][group][weight]`, so
  a Keras layer's weights stay one dict with Keras's names and layouts.
* Padding attributes are explicit pairs, or `"same"` (TensorFlow's rule, resolved from the input's
  size when the graph runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxvis.convert.host_buffers import aligned_copy
from jaxvis.convert.kernel_layout import oihw_to_hwio
from jaxvis.errors import JaxvisError

__all__ = ["Graph", "Node", "OPS", "convert_weight", "converted_shape", "freeze", "graph_from_data", "graph_to_data"]

# Every op the executor runs, by how it treats layouts (see executor.py).
SPATIAL_OPS = ("conv", "max_pool", "avg_pool", "lp_pool", "adaptive_avg_pool", "adaptive_max_pool", "group_norm",
               "resize", "image_resize", "lrn", "depth_to_space")
UNARY_OPS = (
    "relu",
    "relu6",
    "clip",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "hardswish",
    "hardsigmoid",
    "sigmoid",
    "tanh",
    "softplus",
    "softsign",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "abs",
    "neg",
    "reciprocal",
    "erf",
    "expm1",
    "log1p",
    "floor",
    "ceil",
    "round",
    "sign",
    "sin",
    "cos",
    "identity",
    "cast",
    "not",
)
BINARY_OPS = ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "where", "prelu", "equal", "less", "greater",
              "less_equal", "greater_equal", "and", "or", "mod",
              "quantize", "dequantize")
AXIS_OPS = (
    "batch_norm",
    "instance_norm",
    "concat",
    "split",
    "slice",
    "softmax",
    "log_softmax",
    "reduce",
    "pad",
    "gather",
    "gather_nd",
    "gather_elements",
    "index",
    "slice_scatter",
    "argmax",
    "cumsum",
)
PLAIN_OPS = ("reshape", "flatten", "permute", "squeeze", "unsqueeze", "expand", "tile", "matmul", "gemm", "linear",
             "layer_norm", "stack", "einsum", "scatter_nd")
OPS = SPATIAL_OPS + UNARY_OPS + BINARY_OPS + AXIS_OPS + PLAIN_OPS


def freeze(value) -> Any:
    """An attribute value as hashable plain data (lists and arrays become tuples, NumPy scalars Python ones)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    return value


@dataclasses.dataclass(frozen=True)
class Node:
    """One op application (see the module docstring)."""

    op: str
    inputs: tuple
    outputs: tuple[str, ...]
    attrs: tuple = ()
    name: str = ""

    @classmethod
    def make(cls, op: str, inputs, outputs, attrs: Mapping | None = None, name: str = "") -> Node:
        if op not in OPS:
            raise JaxvisError(f"internal: graph op {op!r} is not in the op library")
        return cls(op, tuple(inputs), tuple(outputs), freeze(dict(attrs or {})), name)

    @property
    def attr(self) -> dict:
        return dict(self.attrs)


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """A model as data (see the module docstring). Hashed by identity: it holds arrays."""

    name: str
    input: str
    input_shape: tuple
    nodes: tuple[Node, ...]
    params: Mapping[str, tuple[int, ...]]
    constants: Mapping[str, np.ndarray]
    layers: tuple[tuple[str, str], ...]
    outputs: tuple[str, ...]
    source_format: str = ""
    input_layout: str = "nchw"
    per_item: bool = False  # run each image as a batch of one (the graph moves the batch off axis 0)
    param_groups: bool = False  # params named `group/weight` are nested dicts (see the module docstring)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one input image."""
        if self.input_layout == "nhwc":
            return tuple(self.input_shape[1:4])
        _, c, h, w = self.input_shape
        return h, w, c

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.layers)

    @property
    def layer_values(self) -> dict[str, str]:
        return dict(self.layers)

    def param_path(self, name: str) -> tuple[str, ...]:
        """Where param `name` lives in `variables["params"]` (a key, or a group and a key)."""
        return tuple(name.split("/", 1)) if self.param_groups else (name,)

    def producers(self) -> dict[str, int]:
        """{value name: index of the node producing it}."""
        return {out: i for i, node in enumerate(self.nodes) for out in node.outputs}

    def needed_nodes(self, values) -> list[int]:
        """Indices (in order) of the nodes the given values depend on."""
        producers = self.producers()
        needed, stack = set(), [producers[v] for v in values if v in producers]
        while stack:
            i = stack.pop()
            if i in needed:
                continue
            needed.add(i)
            stack.extend(producers[v] for v in self.nodes[i].inputs if isinstance(v, str) and v in producers)
        return sorted(needed)


def graph_to_data(graph: Graph) -> dict:
    """The graph as JSON-able data (no weights; constants inline), for a converted file's recipe."""
    return {
        "name": graph.name, "input": graph.input, "input_shape": list(graph.input_shape),
        "input_layout": graph.input_layout, "source_format": graph.source_format, "per_item": graph.per_item,
        "param_groups": graph.param_groups,
        "nodes": [{"op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs), "attrs": dict(n.attrs),
                   "name": n.name} for n in graph.nodes],
        "params": {k: list(v) for k, v in graph.params.items()},
        "constants": {k: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.reshape(-1).tolist()}
                      for k, v in graph.constants.items()},
        "layers": [list(pair) for pair in graph.layers], "outputs": list(graph.outputs),
    }


def graph_from_data(data: Mapping) -> Graph:
    """The inverse of `graph_to_data`; a malformed recipe is a `JaxvisError`."""
    try:
        return Graph(
            name=str(data["name"]), input=str(data["input"]), input_shape=tuple(data["input_shape"]),
            nodes=tuple(Node.make(n["op"], n["inputs"], n["outputs"], n["attrs"], n.get("name", ""))
                        for n in data["nodes"]),
            params={k: tuple(v) for k, v in data["params"].items()},
            constants={k: np.asarray(v["data"], v["dtype"]).reshape(v["shape"]) for k, v in data["constants"].items()},
            layers=tuple((str(a), str(b)) for a, b in data["layers"]), outputs=tuple(data["outputs"]),
            source_format=str(data.get("source_format", "")), input_layout=str(data.get("input_layout", "nchw")),
            per_item=bool(data.get("per_item", False)), param_groups=bool(data.get("param_groups", False)))
    except (KeyError, TypeError, ValueError) as error:
        raise JaxvisError(f"a stored graph recipe is malformed ({error})") from None


def converted_shape(kind: str, shape, groups: int = 1) -> tuple[int, ...]:
    """The shape `convert_weight(kind, array, groups)` gives an array of `shape`, or the
    `JaxvisError` it would raise: known before the (possibly deferred) conversion runs."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 4:
        raise JaxvisError(f"a 2-D convolution weight must have 4 dimensions, got shape {shape}")
    if kind == "conv":
        o, i, kh, kw = shape
        return kh, kw, i, o
    if kind == "conv_transpose":
        cin, cout_g, kh, kw = shape
        if groups < 1 or cin % groups:
            raise JaxvisError(f"a transposed convolution weight of shape {shape} does not split into {groups} groups")
        return kh, kw, cin // groups, groups * cout_g
    raise JaxvisError(f"internal: unknown weight layout {kind!r}")


def convert_weight(kind: str, array: np.ndarray, groups: int = 1) -> np.ndarray:
    """A source weight in the layout the executor uses, converted once at load.

    `"conv"`: torch / ONNX [O, I/g, kh, kw] -> HWIO [kh, kw, I/g, O].
    `"conv_transpose"`: [I, O/g, kh, kw] -> the HWIO kernel of the equivalent dilated conv
    [kh, kw, I/g, O], spatially flipped.
    """
    array = np.asarray(array)
    converted_shape(kind, array.shape, groups)
    if kind == "conv":
        return oihw_to_hwio(array, num_threads=1)  # the builder converts several weights at once
    if kind == "conv_transpose":
        cin, cout_g, kh, kw = array.shape
        w = array.reshape(groups, cin // groups, cout_g, kh, kw).transpose(3, 4, 1, 0, 2)
        return aligned_copy(w.reshape(kh, kw, cin // groups, groups * cout_g)[::-1, ::-1])
    raise JaxvisError(f"internal: unknown weight layout {kind!r}")

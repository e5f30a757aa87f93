"""Lowers an ONNX model (read by `jaxvis.convert.onnx_file`) to the graph IR.

Contract: `graph_from_onnx(model, name=, input_size=)` returns `(Graph, variables)`. The model's one
real input is the image (NCHW, any batch; NHWC when its last dimension is a static 1-4 channels and
its second is not, as TensorFlow exports take images); its height / width are the file's static sizes, or
`input_size` where they are symbolic (a symbolic size without `input_size` is an error naming the
dimension). Ops follow the ONNX specification for opsets 11-21 with all their attributes
(`SUPPORTED_ONNX` lists them); shape arithmetic (`Shape`, `Gather`, `Concat`, ... on sizes) folds to
constants for the fixed input size, and the inputs that must be static (reshape targets, slice
bounds, pads, resize scales) must fold, else the error names the node. Layers are addressed by
node name (the first output's name where a node has none); nodes that fold away are not layers.
An op outside the list, or in another domain, is one `JaxvisError` naming op, node and the list.

The op lowerings live in `jaxvis.models.graph.onnx_ops`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxvis.convert.onnx_file import OnnxModel
from jaxvis.errors import JaxvisError
from jaxvis.models.graph.build import GraphBuilder
from jaxvis.models.graph.ir import Graph
from jaxvis.models.graph.onnx_ops import nn as onnx_nn
from jaxvis.models.graph.onnx_ops import tensor as onnx_tensor
from jaxvis.models.graph.onnx_ops.context import Ctx

__all__ = ["SUPPORTED_ONNX", "graph_from_onnx"]

_LOWER: dict[str, Callable] = {**onnx_nn.LOWER, **onnx_tensor.LOWER}
SUPPORTED_ONNX = tuple(sorted(_LOWER))


DEFAULT_SIZE = 224  # height and width of an input whose file leaves them symbolic


def _input(model: OnnxModel, input_size):
    if len(model.inputs) != 1:
        raise JaxvisError(f"ONNX model {model.name!r} has {len(model.inputs)} inputs "
                          f"({', '.join(i[0] for i in model.inputs)}); jaxvis needs one image input")
    name, dims, _ = model.inputs[0]
    if len(dims) != 4:
        raise JaxvisError(f"ONNX model input {name!r} must be an image batch (NCHW or NHWC), got shape {dims}")
    small = lambda d: isinstance(d, int) and 1 <= d <= 4  # noqa: E731
    layout = "nhwc" if small(dims[3]) and not small(dims[1]) else "nchw"  # TensorFlow exports take NHWC
    labels = ("batch", "height", "width", "channels") if layout == "nhwc" else ("batch", "channels", "height", "width")
    spatial = (1, 2) if layout == "nhwc" else (2, 3)
    channel_axis = 3 if layout == "nhwc" else 1
    shape = [1, 0, 0, 0]
    if not isinstance(dims[channel_axis], int) or dims[channel_axis] < 1:
        raise JaxvisError(f"ONNX model input {name!r}: its channel dimension is dynamic ({dims[channel_axis]!r})")
    shape[channel_axis] = dims[channel_axis]
    for k, i in enumerate(spatial):
        d = dims[i]
        if isinstance(d, int) and d > 0:
            if input_size is not None and input_size[k] != d:
                raise JaxvisError(f"ONNX model input {name!r} has a fixed {labels[i]} of {d}; it cannot run at "
                                  f"input_size {tuple(input_size)}")
            shape[i] = d
        else:  # a symbolic height / width: the size asked for, else ImageNet's 224 (--input-size changes it)
            shape[i] = int(input_size[k]) if input_size is not None else DEFAULT_SIZE
    return name, tuple(shape), layout


def graph_from_onnx(model: OnnxModel, *, name: str = "model", input_size=None) -> tuple[Graph, dict]:
    """Lower an ONNX model to `(Graph, variables)` (see the module docstring)."""
    builder = GraphBuilder(name, "ONNX")
    input_name, shape, layout = _input(model, input_size)
    builder.set_input(input_name, shape, layout=layout)
    for tensor_name, array in model.initializers.items():
        if array.dtype.kind == "f" and array.size > 1:
            builder.add_param(tensor_name, array.astype(np.float32))
        else:
            builder.add_const(tensor_name, array)
    c = Ctx(builder, model.opsets.get("ai.onnx", 0))
    layers, seen = [], set()
    for node in model.nodes:
        c.node = node
        if node.domain not in ("", "ai.onnx") or node.op_type not in _LOWER:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            raise JaxvisError(f"ONNX op {op!r} (node {c.where!r}) is not supported; supported ops: "
                              f"{', '.join(SUPPORTED_ONNX)}")
        if any(v is None for v in node.attrs.values()):
            raise c.fail("subgraph attributes (If / Loop / Scan bodies) are not supported")
        _LOWER[node.op_type](c)
        out = node.outputs[0] if node.outputs else ""
        if out and out in builder.shapes:
            layer = c.where
            while layer in seen:
                layer += "_"
            seen.add(layer)
            layers.append((layer, out))
    for out in model.outputs:
        if out not in builder.shapes:
            raise JaxvisError(f"ONNX model output {out!r} does not depend on the input image")
    return builder.finish(layers, model.outputs)

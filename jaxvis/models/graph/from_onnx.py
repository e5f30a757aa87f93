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

This module is long (~690 lines) because it is the one table of ONNX ops and their lowerings, each a
few lines; one place keeps the supported set (`SUPPORTED_ONNX`) reviewable.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from jaxvis.convert.onnx_file import OnnxModel, OnnxNode
from jaxvis.errors import JaxvisError
from jaxvis.models.graph.build import GraphBuilder
from jaxvis.models.graph.ir import Graph

__all__ = ["SUPPORTED_ONNX", "graph_from_onnx"]

_INT64_MAX = 2 ** 62


class _Ctx:
    def __init__(self, builder: GraphBuilder, opset: int):
        self.b, self.opset = builder, opset
        self.node: OnnxNode | None = None

    @property
    def where(self) -> str:
        return self.node.name or self.node.outputs[0]

    def fail(self, message: str) -> JaxvisError:
        return JaxvisError(f"ONNX node {self.where!r} ({self.node.op_type}): {message}")

    def input(self, i: int):
        """The i-th input's value name, or None where absent."""
        inputs = self.node.inputs
        return inputs[i] if i < len(inputs) and inputs[i] else None

    def static(self, i: int, what: str):
        name = self.input(i)
        return None if name is None else self.b.static(name, what, self.where)

    def attr(self, key, default=None):
        return self.node.attrs.get(key, default)

    def rank(self, name) -> int:
        return len(self.b.shape(name))

    def add(self, op, inputs, outputs=None, attrs=None):
        outputs = list(self.node.outputs[:1]) if outputs is None else outputs
        return self.b.node(op, inputs, outputs, attrs, name=self.where)

    def tmp(self, suffix: str) -> str:
        return f"{self.node.outputs[0]}__{suffix}"


def _spatial_pads(c: _Ctx, x, kernel, strides, dilations, transposed=False):
    """Explicit ((top, bottom), (left, right)) pads from `pads` / `auto_pad`."""
    auto = c.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", "", None):
        pads = list(c.attr("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            raise c.fail(f"only 2-D ops are supported (pads {pads})")
        return ((pads[0], pads[2]), (pads[1], pads[3]))
    if auto == "VALID":
        return ((0, 0), (0, 0))
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise c.fail(f"auto_pad {auto!r} is not supported")
    sizes = c.b.shape(x)[2:]
    out = []
    for n, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto == "SAME_UPPER" else (big, small))
    return tuple(out)


def _conv(c: _Ctx):
    x, w, b = c.input(0), c.input(1), c.input(2)
    if c.rank(w) != 4:
        raise c.fail(f"only 2-D convolutions are supported (weight of rank {c.rank(w)})")
    kernel = tuple(c.attr("kernel_shape", c.b.shape(w)[2:]))
    strides, dilations = tuple(c.attr("strides", (1, 1))), tuple(c.attr("dilations", (1, 1)))
    groups = int(c.attr("group", 1))
    c.b.mark_weight(w, "conv", groups, c.where)
    c.add("conv", [x, w, b], attrs=dict(stride=strides, dilation=dilations, groups=groups,
                                         padding=_spatial_pads(c, x, kernel, strides, dilations)))


def _conv_transpose(c: _Ctx):
    x, w, b = c.input(0), c.input(1), c.input(2)
    if c.rank(w) != 4:
        raise c.fail(f"only 2-D transposed convolutions are supported (weight of rank {c.rank(w)})")
    kernel = tuple(c.attr("kernel_shape", c.b.shape(w)[2:]))
    strides, dilations = tuple(c.attr("strides", (1, 1))), tuple(c.attr("dilations", (1, 1)))
    output_padding = tuple(c.attr("output_padding", (0, 0)))
    groups = int(c.attr("group", 1))
    auto, output_shape = c.attr("auto_pad", "NOTSET"), c.attr("output_shape")
    sizes = c.b.shape(x)[2:]
    if output_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        if output_shape is None:
            output_shape = [n * s for n, s in zip(sizes, strides)]
        output_shape = list(output_shape)[-2:]
        pads = []
        for n, k, s, d, op, o in zip(sizes, kernel, strides, dilations, output_padding, output_shape):
            total = s * (n - 1) + op + ((k - 1) * d + 1) - o
            if auto == "SAME_UPPER":
                pads.append((total // 2, total - total // 2))
            else:
                pads.append((total - total // 2, total // 2))
        pads = tuple(pads)
    elif auto == "VALID":
        pads = ((0, 0), (0, 0))
    else:
        p = list(c.attr("pads", [0, 0, 0, 0]))
        pads = ((p[0], p[2]), (p[1], p[3]))
    c.b.mark_weight(w, "conv_transpose", groups, c.where)
    c.add("conv", [x, w, b], attrs=dict(stride=strides, dilation=dilations, groups=groups, padding=pads,
                                         transposed=True, output_padding=output_padding))


def _pool(kind):
    def lower(c: _Ctx):
        x = c.input(0)
        if c.rank(x) != 4:
            raise c.fail("only 2-D pooling is supported")
        if len(c.node.outputs) > 1 and c.node.outputs[1]:
            raise c.fail("MaxPool's Indices output is not supported")
        kernel = tuple(c.attr("kernel_shape"))
        strides, dilations = tuple(c.attr("strides", (1, 1))), tuple(c.attr("dilations", (1, 1)))
        pads = _spatial_pads(c, x, kernel, strides, dilations)
        attrs = dict(kernel=kernel, stride=strides, padding=pads, ceil_mode=bool(c.attr("ceil_mode", 0)))
        if kind == "max_pool":
            attrs["dilation"] = dilations
        elif kind == "avg_pool":
            if dilations != (1, 1):
                raise c.fail("a dilated AveragePool is not supported")
            attrs["count_include_pad"] = bool(c.attr("count_include_pad", 0))
        else:
            attrs["p"] = int(c.attr("p", 2))
        c.add(kind, [x], attrs=attrs)
    return lower


def _global(kind):
    def lower(c: _Ctx):
        if c.rank(c.input(0)) != 4:
            raise c.fail("only 2-D global pooling is supported")
        c.add(kind, [c.input(0)], attrs=dict(output_size=(1, 1)))
    return lower


def _batch_norm(c: _Ctx):
    if c.attr("training_mode", 0):
        raise c.fail("training-mode batch norm is not supported; export the model in eval mode")
    c.add("batch_norm", [c.input(0), c.input(1), c.input(2), c.input(3), c.input(4)],
          attrs=dict(eps=float(c.attr("epsilon", 1e-5))))


def _instance_norm(c: _Ctx):
    c.add("instance_norm", [c.input(0), c.input(1), c.input(2)], attrs=dict(eps=float(c.attr("epsilon", 1e-5))))


def _group_norm(c: _Ctx):
    x, scale, bias = c.input(0), c.input(1), c.input(2)
    groups, channels = int(c.attr("num_groups")), c.b.shape(x)[1]
    if c.opset < 21 and c.b.shape(scale) == (groups,) and groups != channels:  # opset 18: per-group affine
        s, bb = c.b.static(scale, "scale", c.where), c.b.static(bias, "bias", c.where)
        c.b.add_const(c.tmp("scale"), np.repeat(s, channels // groups))
        c.b.add_const(c.tmp("bias"), np.repeat(bb, channels // groups))
        scale, bias = c.tmp("scale"), c.tmp("bias")
    c.add("group_norm", [x, scale, bias], attrs=dict(groups=groups, eps=float(c.attr("epsilon", 1e-5))))


def _layer_norm(c: _Ctx):
    x = c.input(0)
    rank = c.rank(x)
    axis = int(c.attr("axis", -1)) % rank
    c.add("layer_norm", [x, c.input(1), c.input(2)], outputs=list(c.node.outputs[:1]),
          attrs=dict(axes=tuple(range(axis, rank)), eps=float(c.attr("epsilon", 1e-5))))


def _lrn(c: _Ctx):
    c.add("lrn", [c.input(0)], attrs=dict(size=int(c.attr("size")), alpha=float(c.attr("alpha", 1e-4)),
                                          beta=float(c.attr("beta", 0.75)), bias=float(c.attr("bias", 1.0))))


def _unary(op, **params):
    def lower(c: _Ctx):
        attrs = {key: c.attr(src, default) for key, (src, default) in params.items()}
        c.add(op, [c.input(0)], attrs=attrs)
    return lower


def _clip(c: _Ctx):
    if c.opset < 11:
        lo, hi = c.attr("min"), c.attr("max")
    else:
        lo, hi = c.static(1, "min"), c.static(2, "max")
    lo = None if lo is None else float(np.asarray(lo).reshape(()))
    hi = None if hi is None else float(np.asarray(hi).reshape(()))
    c.add("clip", [c.input(0)], attrs=dict(min=lo, max=hi))


def _gelu(c: _Ctx):
    c.add("gelu", [c.input(0)], attrs=dict(approximate=c.attr("approximate", "none") == "tanh"))


def _cast(c: _Ctx):
    import onnx

    to = c.attr("to")
    if to is None and c.node.op_type == "CastLike":
        c.add("identity", [c.input(0)])
        return
    kind = {onnx.TensorProto.BOOL: "bool", onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}.get(
        to, "float"
    )
    c.add("cast", [c.input(0)], attrs=dict(dtype=kind))


def _binary(op):
    def lower(c: _Ctx):
        attrs = {"fmod": True} if op == "mod" and c.attr("fmod", 0) else {}
        c.add(op, [c.input(0), c.input(1)], attrs=attrs)
    return lower


def _variadic(op):
    def lower(c: _Ctx):
        inputs = [i for i in c.node.inputs if i]
        value = inputs[0]
        for i, other in enumerate(inputs[1:]):
            last = i == len(inputs) - 2
            value = c.add("add" if op == "mean" else op, [value, other],
                          outputs=None if last and op != "mean" else [c.tmp(f"acc{i}")])[0]
        if op == "mean":
            c.add("div", [value, float(len(inputs))])
        elif len(inputs) == 1:
            c.add("identity", [value])
    return lower


_QRANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
            "uint4": (0, 15), "int4": (-8, 7)}


def _quantize(c: _Ctx):
    import onnx

    if c.attr("block_size", 0):
        raise c.fail("blocked quantization (block_size) is not supported")
    zero = c.input(2)
    if zero is not None:
        kind = str(c.b.known[zero].dtype) if zero in c.b.known else "uint8"
    else:
        to = c.attr("output_dtype", onnx.TensorProto.UINT8) or onnx.TensorProto.UINT8
        kind = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT16: "uint16",
                onnx.TensorProto.INT16: "int16"}.get(to, "uint8")
    if kind not in _QRANGES:
        raise c.fail(f"quantization to {kind} is not supported")
    qmin, qmax = _QRANGES[kind]
    c.add("quantize", [c.input(0), c.input(1), zero], attrs=dict(axis=int(c.attr("axis", 1)), qmin=qmin, qmax=qmax))


def _dequantize(c: _Ctx):
    if c.attr("block_size", 0):
        raise c.fail("blocked quantization (block_size) is not supported")
    c.add("dequantize", [c.input(0), c.input(1), c.input(2)], attrs=dict(axis=int(c.attr("axis", 1))))


def _where(c: _Ctx):
    c.add("where", [c.input(0), c.input(1), c.input(2)])


def _prelu(c: _Ctx):
    c.add("prelu", [c.input(0), c.input(1)], attrs=dict(channel_axis=False))


def _gemm(c: _Ctx):
    c.add("gemm", [c.input(0), c.input(1), c.input(2)], attrs=dict(
        alpha=float(c.attr("alpha", 1.0)), beta=float(c.attr("beta", 1.0)),
        trans_a=bool(c.attr("transA", 0)), trans_b=bool(c.attr("transB", 0))))


def _matmul(c: _Ctx):
    c.add("matmul", [c.input(0), c.input(1)])


def _concat(c: _Ctx):
    c.add("concat", [i for i in c.node.inputs if i], attrs=dict(axis=int(c.attr("axis"))))


def _split(c: _Ctx):
    x = c.input(0)
    axis = int(c.attr("axis", 0))
    n = c.b.shape(x)[axis]
    sizes = c.static(1, "split sizes") if c.opset >= 13 else c.attr("split")
    outputs = list(c.node.outputs)
    if sizes is None:
        count = int(c.attr("num_outputs", len(outputs)))
        size = -(-n // count)
        sizes = [size] * (count - 1) + [n - size * (count - 1)]
    c.add(
        "split", [x], outputs=outputs, attrs=dict(axis=axis, sizes=tuple(int(s) for s in np.asarray(sizes).reshape(-1)))
    )


def _slice(c: _Ctx):
    x = c.input(0)
    starts = c.static(1, "starts")
    ends = c.static(2, "ends")
    rank = c.rank(x)
    axes = c.static(3, "axes")
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    steps = c.static(4, "steps")
    steps = [1] * len(axes) if steps is None else [int(s) for s in np.asarray(steps).reshape(-1)]
    clamp = lambda v: int(max(min(int(v), _INT64_MAX), -_INT64_MAX))  # noqa: E731
    c.add("slice", [x], attrs=dict(axes=tuple(axes), starts=tuple(clamp(s) for s in np.asarray(starts).reshape(-1)),
                                   ends=tuple(clamp(e) for e in np.asarray(ends).reshape(-1)), steps=tuple(steps)))


def _gather(c: _Ctx):
    x, indices = c.input(0), c.input(1)
    axis = int(c.attr("axis", 0))
    if c.b.is_known(indices):
        value = np.asarray(c.b.static(indices, "indices", c.where))
        c.add("gather", [x], attrs=dict(axis=axis, indices=value.tolist()))
    else:
        c.add("gather", [x, indices], attrs=dict(axis=axis))


def _gather_nd(c: _Ctx):
    c.add("gather_nd", [c.input(0), c.input(1)], attrs=dict(batch_dims=int(c.attr("batch_dims", 0))))


def _gather_elements(c: _Ctx):
    c.add("gather_elements", [c.input(0), c.input(1)], attrs=dict(axis=int(c.attr("axis", 0))))


def _flatten(c: _Ctx):
    x = c.input(0)
    rank = c.rank(x)
    axis = int(c.attr("axis", 1)) % (rank + 1) if rank else 0
    if axis == 0:
        flat = c.add("flatten", [x], outputs=[c.tmp("flat")], attrs=dict(start=0, end=-1))[0]
        c.add("unsqueeze", [flat], attrs=dict(axes=(0,)))
    elif axis == rank:
        inner = c.add("flatten", [x], outputs=[c.tmp("flat")], attrs=dict(start=0, end=-1))[0]
        c.add("unsqueeze", [inner], attrs=dict(axes=(1,)))
    else:
        value = x
        if axis < rank - 1:
            value = c.add("flatten", [value], outputs=[c.tmp("inner")], attrs=dict(start=axis, end=-1))[0]
        if axis > 1:
            c.add("flatten", [value], attrs=dict(start=0, end=axis - 1))
        elif value == x:
            c.add("identity", [x])
        else:
            c.add("identity", [value])


def _reshape(c: _Ctx):
    shape = c.static(1, "target shape")
    c.add("reshape", [c.input(0)], attrs=dict(shape=tuple(int(s) for s in np.asarray(shape).reshape(-1)),
                                              allowzero=bool(c.attr("allowzero", 0))))


def _transpose(c: _Ctx):
    rank = c.rank(c.input(0))
    perm = c.attr("perm", list(range(rank))[::-1])
    c.add("permute", [c.input(0)], attrs=dict(perm=tuple(perm)))


def _axes(c: _Ctx, since: int):
    """Axes from the attribute (opset < since) or the second input."""
    if c.opset >= since:
        axes = c.static(1, "axes")
    else:
        axes = c.attr("axes")
    return None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1))


def _squeeze(c: _Ctx):
    c.add("squeeze", [c.input(0)], attrs=dict(axes=_axes(c, 13)))


def _unsqueeze(c: _Ctx):
    c.add("unsqueeze", [c.input(0)], attrs=dict(axes=_axes(c, 13)))


def _expand(c: _Ctx):
    shape = c.static(1, "target shape")
    c.add("expand", [c.input(0)], attrs=dict(shape=tuple(int(s) for s in np.asarray(shape).reshape(-1)), numpy=True))


def _tile(c: _Ctx):
    c.add(
        "tile", [c.input(0)], attrs=dict(repeats=tuple(int(r) for r in np.asarray(c.static(1, "repeats")).reshape(-1)))
    )


def _reduce(kind, since):
    def lower(c: _Ctx):
        axes = _axes(c, since)
        if axes is not None and len(axes) == 0:
            axes = None
        if axes is None and c.attr("noop_with_empty_axes", 0):
            c.add("identity", [c.input(0)])
            return
        c.add("reduce", [c.input(0)], attrs=dict(kind=kind, axes=axes, keepdim=bool(c.attr("keepdims", 1))))
    return lower


def _argmax(minimum):
    def lower(c: _Ctx):
        if c.attr("select_last_index", 0):
            raise c.fail("select_last_index is not supported")
        c.add("argmax", [c.input(0)], attrs=dict(axis=int(c.attr("axis", 0)), keepdim=bool(c.attr("keepdims", 1)),
                                                 min=minimum))
    return lower


def _softmax(op):
    def lower(c: _Ctx):
        x = c.input(0)
        rank = c.rank(x)
        axis = int(c.attr("axis", -1 if c.opset >= 13 else 1)) % rank
        if c.opset >= 13 or axis == rank - 1:
            c.add(op, [x], attrs=dict(axis=axis))
            return
        shape = c.b.shape(x)  # opset < 13: softmax over everything from `axis` on
        flat = c.add("flatten", [x], outputs=[c.tmp("flat")], attrs=dict(start=axis, end=-1))[0]
        soft = c.add(op, [flat], outputs=[c.tmp("soft")], attrs=dict(axis=-1))[0]
        c.add("reshape", [soft], attrs=dict(shape=(-1,) + tuple(shape[1:]) if axis > 0 else tuple(shape)))
    return lower


def _resize(c: _Ctx):
    x = c.input(0)
    shape = c.b.shape(x)
    if len(shape) != 4:
        raise c.fail("only resizing of 4-D tensors is supported")
    scales = c.static(2, "scales")
    sizes = c.static(3, "sizes")
    axes = c.attr("axes")
    if axes is not None:
        axes = [int(a) % 4 for a in axes]
    full_scales, full_sizes = [1.0] * 4, list(shape)
    if sizes is not None and np.asarray(sizes).size:
        sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
        for a, s in zip(axes or range(4), sizes):
            full_sizes[a] = s
        policy = c.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            chosen = [full_sizes[a] / shape[a] for a in (axes or range(4))]
            scale = min(chosen) if policy == "not_larger" else max(chosen)
            for a in axes or range(4):
                full_sizes[a] = int(round(scale * shape[a]))
                full_scales[a] = scale
        else:
            full_scales = [o / n for o, n in zip(full_sizes, shape)]
    elif scales is not None and np.asarray(scales).size:
        for a, s in zip(axes or range(4), np.asarray(scales, np.float64).reshape(-1)):
            full_scales[a] = float(s)
        full_sizes = [int(math.floor(n * s)) for n, s in zip(shape, full_scales)]
    else:
        raise c.fail("Resize needs scales or sizes")
    resizes_batch = full_scales[0] != 1.0 if sizes is None or not np.asarray(sizes).size else False
    if full_sizes[1] != shape[1] or resizes_batch:  # a sizes batch may differ from the traced batch of one
        raise c.fail("resizing the batch or channel axis is not supported")
    mode = c.attr("mode", "nearest")
    coord = c.attr("coordinate_transformation_mode", "half_pixel")
    if coord == "tf_crop_and_resize":
        raise c.fail("coordinate_transformation_mode 'tf_crop_and_resize' is not supported")
    c.add("resize", [x], attrs=dict(
        sizes=tuple(full_sizes[2:]), scales=tuple(full_scales[2:]), mode=mode, coordinate_mode=coord,
        nearest_mode=c.attr("nearest_mode", "round_prefer_floor"), cubic_a=float(c.attr("cubic_coeff_a", -0.75)),
        exclude_outside=bool(c.attr("exclude_outside", 0)), antialias=bool(c.attr("antialias", 0))))


def _pad(c: _Ctx):
    x = c.input(0)
    rank = c.rank(x)
    pads = [int(p) for p in np.asarray(c.static(1, "pads")).reshape(-1)]
    value = c.static(2, "constant value")
    axes = c.static(3, "axes")
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    n = len(axes)
    full = [(0, 0)] * rank
    for i, a in enumerate(axes):
        full[a] = (pads[i], pads[i + n])
    mode = c.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise c.fail(f"pad mode {mode!r} is not supported")
    c.add(
        "pad",
        [x],
        attrs=dict(
            pads=tuple(full),
            mode=mode,
            value=0.0 if value is None or np.asarray(value).size == 0 else float(np.asarray(value).reshape(-1)[0]),
        ),
    )


def _einsum(c: _Ctx):
    c.add("einsum", [i for i in c.node.inputs if i], attrs=dict(equation=c.attr("equation").replace(" ", "")))


def _scatter_nd(c: _Ctx):
    c.add("scatter_nd", [c.input(0), c.input(1), c.input(2)], attrs=dict(reduction=c.attr("reduction", "none")))


def _thresholded_relu(c: _Ctx):
    alpha = float(c.attr("alpha", 1.0))
    mask = c.add("greater", [c.input(0), alpha], outputs=[c.tmp("mask")])[0]
    c.add("where", [mask, c.input(0), 0.0])


def _shrink(c: _Ctx):
    lambd, bias = float(c.attr("lambd", 0.5)), float(c.attr("bias", 0.0))
    x = c.input(0)
    low = c.add("less", [x, -lambd], outputs=[c.tmp("low")])[0]
    high = c.add("greater", [x, lambd], outputs=[c.tmp("high")])[0]
    up = c.add("add", [x, bias], outputs=[c.tmp("up")])[0]
    down = c.add("sub", [x, bias], outputs=[c.tmp("down")])[0]
    inner = c.add("where", [high, down, 0.0], outputs=[c.tmp("inner")])[0]
    c.add("where", [low, up, inner])


def _depth_to_space(c: _Ctx):
    c.add("depth_to_space", [c.input(0)], attrs=dict(blocksize=int(c.attr("blocksize")), mode=c.attr("mode", "DCR")))


def _cumsum(c: _Ctx):
    axis = int(np.asarray(c.static(1, "axis")).reshape(()))
    c.add(
        "cumsum",
        [c.input(0)],
        attrs=dict(axis=axis, exclusive=bool(c.attr("exclusive", 0)), reverse=bool(c.attr("reverse", 0))),
    )


def _identity(c: _Ctx):
    c.add("identity", [c.input(0)])


# Ops evaluated at load time only (their result must be a constant).


def _constant(c: _Ctx):
    attrs = c.node.attrs
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if attrs.get(key) is not None:
            value = np.asarray(attrs[key], np.float32 if "float" in key else (np.int64 if "int" in key else None))
            c.b.add_const(c.node.outputs[0], value)
            return
    raise c.fail("a Constant without a supported value (sparse or string constants are not supported)")


def _shape(c: _Ctx):
    shape = np.asarray(c.b.shape(c.input(0)), np.int64)
    start, end = c.attr("start", 0), c.attr("end")
    c.b.add_const(c.node.outputs[0], shape[start:end])


def _size(c: _Ctx):
    c.b.add_const(c.node.outputs[0], np.asarray(int(np.prod(c.b.shape(c.input(0)))), np.int64))


def _constant_of_shape(c: _Ctx):
    shape = [int(s) for s in np.asarray(c.static(0, "shape")).reshape(-1)]
    value = c.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    c.b.add_const(c.node.outputs[0], np.full(shape, value[0], value.dtype))


def _range(c: _Ctx):
    start, limit, delta = (
        np.asarray(c.static(i, name)).reshape(()) for i, name in enumerate(("start", "limit", "delta"))
    )
    c.b.add_const(c.node.outputs[0], np.arange(start, limit, delta))


def _dropout(c: _Ctx):
    c.add("identity", [c.input(0)])
    if len(c.node.outputs) > 1 and c.node.outputs[1]:
        c.b.add_const(c.node.outputs[1], np.ones(c.b.shape(c.input(0)), np.bool_))


_LOWER: dict[str, Callable] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm, "GroupNormalization": _group_norm, "LayerNormalization": _layer_norm,
    "LRN": _lrn,
    "Relu": _unary("relu"), "LeakyRelu": _unary("leaky_relu", negative_slope=("alpha", 0.01)), "PRelu": _prelu,
    "Elu": _unary("elu", alpha=("alpha", 1.0)), "Selu": _unary("selu", alpha=("alpha", 1.67326319217681884765625),
                                                               scale=("gamma", 1.05070102214813232421875)),
    "Celu": _unary("celu", alpha=("alpha", 1.0)), "Clip": _clip,
    "HardSigmoid": _unary("hardsigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)), "HardSwish": _unary("hardswish"),
    "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"), "Softplus": _unary("softplus", threshold=("__none", 1e30)),
    "Softsign": _unary("softsign"), "Gelu": _gelu, "Mish": _unary("mish"), "Exp": _unary("exp"), "Log": _unary("log"),
    "Sqrt": _unary("sqrt"), "Abs": _unary("abs"), "Neg": _unary("neg"), "Reciprocal": _unary("reciprocal"),
    "Erf": _unary("erf"), "Floor": _unary("floor"), "Ceil": _unary("ceil"), "Round": _unary("round"),
    "Sign": _unary("sign"), "Sin": _unary("sin"), "Cos": _unary("cos"), "Not": _unary("not"),
    "Identity": _identity, "Dropout": _dropout, "Cast": _cast, "CastLike": _cast,
    "Add": _binary("add"), "Sub": _binary("sub"), "Mul": _binary("mul"), "Div": _binary("div"), "Pow": _binary("pow"),
    "Equal": _binary("equal"), "Less": _binary("less"), "Greater": _binary("greater"),
    "LessOrEqual": _binary("less_equal"), "GreaterOrEqual": _binary("greater_equal"), "And": _binary("and"),
    "Or": _binary("or"), "Mod": _binary("mod"), "Where": _where,
    "Max": _variadic("maximum"), "Min": _variadic("minimum"), "Sum": _variadic("add"), "Mean": _variadic("mean"),
    "Gemm": _gemm, "MatMul": _matmul,
    "Concat": _concat, "Split": _split, "Slice": _slice, "Gather": _gather, "GatherND": _gather_nd,
    "GatherElements": _gather_elements,
    "MaxPool": _pool("max_pool"), "AveragePool": _pool("avg_pool"), "LpPool": _pool("lp_pool"),
    "GlobalAveragePool": _global("adaptive_avg_pool"), "GlobalMaxPool": _global("adaptive_max_pool"),
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Expand": _expand, "Tile": _tile,
    "ReduceMean": _reduce("mean", 18), "ReduceSum": _reduce("sum", 13), "ReduceMax": _reduce("max", 18),
    "ReduceMin": _reduce("min", 18), "ReduceProd": _reduce("prod", 18), "ReduceL1": _reduce("l1", 18),
    "ReduceL2": _reduce("l2", 18), "ReduceSumSquare": _reduce("sum_square", 18),
    "ReduceLogSumExp": _reduce("log_sum_exp", 18),
    "ArgMax": _argmax(False), "ArgMin": _argmax(True),
    "Softmax": _softmax("softmax"), "LogSoftmax": _softmax("log_softmax"),
    "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize,
    "Einsum": _einsum, "ScatterND": _scatter_nd, "ThresholdedRelu": _thresholded_relu, "Shrink": _shrink,
    "Resize": _resize, "Pad": _pad, "DepthToSpace": _depth_to_space, "CumSum": _cumsum,
    "Constant": _constant, "Shape": _shape, "Size": _size, "ConstantOfShape": _constant_of_shape, "Range": _range,
}
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
    c = _Ctx(builder, model.opsets.get("ai.onnx", 0))
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

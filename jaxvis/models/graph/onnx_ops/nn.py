"""ONNX lowerings of layers and elementwise functions (the ONNX front-end).

Convolutions, normalizations, pools, activations, resize, pad, identity ops.

Contract: `LOWER` maps each ONNX op type (default domain) to `fn(ctx)` (see
`jaxvis.models.graph.onnx_ops.context`), which adds IR nodes with the op's full attribute semantics
for opsets 11-21.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from jaxvis.models.graph.onnx_ops.context import Ctx

__all__ = ["LOWER"]

def _spatial_pads(c: Ctx, x, kernel, strides, dilations, transposed=False):
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


def _conv(c: Ctx):
    x, w, b = c.input(0), c.input(1), c.input(2)
    if c.rank(w) != 4:
        raise c.fail(f"only 2-D convolutions are supported (weight of rank {c.rank(w)})")
    kernel = tuple(c.attr("kernel_shape", c.b.shape(w)[2:]))
    strides, dilations = tuple(c.attr("strides", (1, 1))), tuple(c.attr("dilations", (1, 1)))
    groups = int(c.attr("group", 1))
    c.b.mark_weight(w, "conv", groups, c.where)
    c.add("conv", [x, w, b], attrs=dict(stride=strides, dilation=dilations, groups=groups,
                                         padding=_spatial_pads(c, x, kernel, strides, dilations)))


def _conv_transpose(c: Ctx):
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
    def lower(c: Ctx):
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
    def lower(c: Ctx):
        if c.rank(c.input(0)) != 4:
            raise c.fail("only 2-D global pooling is supported")
        c.add(kind, [c.input(0)], attrs=dict(output_size=(1, 1)))
    return lower


def _batch_norm(c: Ctx):
    if c.attr("training_mode", 0):
        raise c.fail("training-mode batch norm is not supported; export the model in eval mode")
    c.add("batch_norm", [c.input(0), c.input(1), c.input(2), c.input(3), c.input(4)],
          attrs=dict(eps=float(c.attr("epsilon", 1e-5))))


def _instance_norm(c: Ctx):
    c.add("instance_norm", [c.input(0), c.input(1), c.input(2)], attrs=dict(eps=float(c.attr("epsilon", 1e-5))))


def _group_norm(c: Ctx):
    x, scale, bias = c.input(0), c.input(1), c.input(2)
    groups, channels = int(c.attr("num_groups")), c.b.shape(x)[1]
    if c.opset < 21 and c.b.shape(scale) == (groups,) and groups != channels:  # opset 18: per-group affine
        s, bb = c.b.static(scale, "scale", c.where), c.b.static(bias, "bias", c.where)
        c.b.add_const(c.tmp("scale"), np.repeat(s, channels // groups))
        c.b.add_const(c.tmp("bias"), np.repeat(bb, channels // groups))
        scale, bias = c.tmp("scale"), c.tmp("bias")
    c.add("group_norm", [x, scale, bias], attrs=dict(groups=groups, eps=float(c.attr("epsilon", 1e-5))))


def _layer_norm(c: Ctx):
    x = c.input(0)
    rank = c.rank(x)
    axis = int(c.attr("axis", -1)) % rank
    c.add("layer_norm", [x, c.input(1), c.input(2)], outputs=list(c.node.outputs[:1]),
          attrs=dict(axes=tuple(range(axis, rank)), eps=float(c.attr("epsilon", 1e-5))))


def _lrn(c: Ctx):
    c.add("lrn", [c.input(0)], attrs=dict(size=int(c.attr("size")), alpha=float(c.attr("alpha", 1e-4)),
                                          beta=float(c.attr("beta", 0.75)), bias=float(c.attr("bias", 1.0))))


def _unary(op, **params):
    def lower(c: Ctx):
        attrs = {key: c.attr(src, default) for key, (src, default) in params.items()}
        c.add(op, [c.input(0)], attrs=attrs)
    return lower


def _clip(c: Ctx):
    if c.opset < 11:
        lo, hi = c.attr("min"), c.attr("max")
    else:
        lo, hi = c.static(1, "min"), c.static(2, "max")
    lo = None if lo is None else float(np.asarray(lo).reshape(()))
    hi = None if hi is None else float(np.asarray(hi).reshape(()))
    c.add("clip", [c.input(0)], attrs=dict(min=lo, max=hi))


def _gelu(c: Ctx):
    c.add("gelu", [c.input(0)], attrs=dict(approximate=c.attr("approximate", "none") == "tanh"))


def _prelu(c: Ctx):
    c.add("prelu", [c.input(0), c.input(1)], attrs=dict(channel_axis=False))


def _softmax(op):
    def lower(c: Ctx):
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


def _resize(c: Ctx):
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


def _pad(c: Ctx):
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


def _thresholded_relu(c: Ctx):
    alpha = float(c.attr("alpha", 1.0))
    mask = c.add("greater", [c.input(0), alpha], outputs=[c.tmp("mask")])[0]
    c.add("where", [mask, c.input(0), 0.0])


def _shrink(c: Ctx):
    lambd, bias = float(c.attr("lambd", 0.5)), float(c.attr("bias", 0.0))
    x = c.input(0)
    low = c.add("less", [x, -lambd], outputs=[c.tmp("low")])[0]
    high = c.add("greater", [x, lambd], outputs=[c.tmp("high")])[0]
    up = c.add("add", [x, bias], outputs=[c.tmp("up")])[0]
    down = c.add("sub", [x, bias], outputs=[c.tmp("down")])[0]
    inner = c.add("where", [high, down, 0.0], outputs=[c.tmp("inner")])[0]
    c.add("where", [low, up, inner])


def _depth_to_space(c: Ctx):
    c.add("depth_to_space", [c.input(0)], attrs=dict(blocksize=int(c.attr("blocksize")), mode=c.attr("mode", "DCR")))


def _identity(c: Ctx):
    c.add("identity", [c.input(0)])


def _dropout(c: Ctx):
    c.add("identity", [c.input(0)])
    if len(c.node.outputs) > 1 and c.node.outputs[1]:
        c.b.add_const(c.node.outputs[1], np.ones(c.b.shape(c.input(0)), np.bool_))


LOWER: dict[str, Callable] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "GroupNormalization": _group_norm,
    "LayerNormalization": _layer_norm,
    "LRN": _lrn,
    "Relu": _unary("relu"),
    "LeakyRelu": _unary("leaky_relu", negative_slope=("alpha", 0.01)),
    "PRelu": _prelu,
    "Elu": _unary("elu", alpha=("alpha", 1.0)),
    "Selu": _unary("selu", alpha=("alpha", 1.67326319217681884765625),
                                                               scale=("gamma", 1.05070102214813232421875)),
    "Celu": _unary("celu", alpha=("alpha", 1.0)),
    "Clip": _clip,
    "HardSigmoid": _unary("hardsigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)),
    "HardSwish": _unary("hardswish"),
    "Sigmoid": _unary("sigmoid"),
    "Tanh": _unary("tanh"),
    "Softplus": _unary("softplus", threshold=("__none", 1e30)),
    "Softsign": _unary("softsign"),
    "Gelu": _gelu,
    "Mish": _unary("mish"),
    "Exp": _unary("exp"),
    "Log": _unary("log"),
    "Sqrt": _unary("sqrt"),
    "Abs": _unary("abs"),
    "Neg": _unary("neg"),
    "Reciprocal": _unary("reciprocal"),
    "Erf": _unary("erf"),
    "Floor": _unary("floor"),
    "Ceil": _unary("ceil"),
    "Round": _unary("round"),
    "Sign": _unary("sign"),
    "Sin": _unary("sin"),
    "Cos": _unary("cos"),
    "Not": _unary("not"),
    "Identity": _identity,
    "Dropout": _dropout,
    "MaxPool": _pool("max_pool"),
    "AveragePool": _pool("avg_pool"),
    "LpPool": _pool("lp_pool"),
    "GlobalAveragePool": _global("adaptive_avg_pool"),
    "GlobalMaxPool": _global("adaptive_max_pool"),
    "Softmax": _softmax("softmax"),
    "LogSoftmax": _softmax("log_softmax"),
    "ThresholdedRelu": _thresholded_relu,
    "Shrink": _shrink,
    "Resize": _resize,
    "Pad": _pad,
    "DepthToSpace": _depth_to_space,
}

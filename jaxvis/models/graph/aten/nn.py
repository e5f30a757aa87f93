"""ATen lowerings of layers and elementwise functions (the `torch.export` front-end).

Convolution, normalizations, pools, activations, resize, pad.

Contract: `LOWER` maps each ATen op name (overload stripped) to `fn(L, args, outputs)` (see
`jaxvis.models.graph.aten.lowering`), which adds IR nodes with the op's full argument semantics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from jaxvis.models.graph.aten.lowering import Lowering, Unset

__all__ = ["LOWER"]


def _conv(L: Lowering, a, out, transposed=None):
    x, weight, bias = a["input"], a["weight"], a.get("bias")
    transposed = bool(a.get("transposed", False)) if transposed is None else transposed
    groups = int(a.get("groups", 1))
    if L.rank(weight) != 4:
        raise L.fail(f"only 2-D convolutions are supported (weight of rank {L.rank(weight)})")
    kernel = L.b.shape(weight)[2:]
    stride = L.pair(a.get("stride"), "stride", 1)
    dilation = L.pair(a.get("dilation"), "dilation", 1)
    padding = a.get("padding", 0)
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0), (0, 0))
        elif padding == "same":
            totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
            pads = tuple((t // 2, t - t // 2) for t in totals)
        else:
            raise L.fail(f"conv padding {padding!r} is not supported")
    else:
        pads = tuple((p, p) for p in L.pair(padding, "padding", 0))
    L.b.mark_weight(weight, "conv_transpose" if transposed else "conv", groups, L.where)
    L.node("conv", [x, weight, bias], out, dict(
        stride=stride, padding=pads, dilation=dilation, groups=groups, transposed=transposed,
        output_padding=L.pair(a.get("output_padding"), "output_padding", 0)))


def _batch_norm(L, a, out):
    if a.get("training") and a.get("running_mean") is None:
        raise L.fail("batch norm without running statistics (training mode) is not supported; export model.eval()")
    L.node("batch_norm", [a["input"], a.get("weight"), a.get("bias"), a["running_mean"], a["running_var"]], out[:1],
           dict(eps=float(a.get("eps", 1e-5))))


def _instance_norm(L, a, out):
    if not a.get("use_input_stats", True):
        L.node("batch_norm", [a["input"], a.get("weight"), a.get("bias"), a["running_mean"], a["running_var"]], out[:1],
               dict(eps=float(a.get("eps", 1e-5))))
        return
    L.node("instance_norm", [a["input"], a.get("weight"), a.get("bias")], out[:1], dict(eps=float(a.get("eps", 1e-5))))


def _pool_args(L, a):
    kernel = L.pair(a["kernel_size"], "kernel_size")
    stride = a.get("stride") or kernel
    return kernel, L.pair(stride, "stride"), tuple((p, p) for p in L.pair(a.get("padding"), "padding", 0))


def _max_pool(L, a, out):
    kernel, stride, pads = _pool_args(L, a)
    L.node("max_pool", [a["self"]], out[:1], dict(kernel=kernel, stride=stride, padding=pads,
                                                  dilation=L.pair(a.get("dilation"), "dilation", 1),
                                                  ceil_mode=bool(a.get("ceil_mode", False))))


def _avg_pool(L, a, out):
    kernel, stride, pads = _pool_args(L, a)
    L.node("avg_pool", [a["self"]], out, dict(kernel=kernel, stride=stride, padding=pads,
                                              ceil_mode=bool(a.get("ceil_mode", False)),
                                              count_include_pad=bool(a.get("count_include_pad", True)),
                                              divisor_override=a.get("divisor_override")))


def _adaptive(op):
    def lower(L, a, out):
        size = a["output_size"]
        size = [size] if isinstance(size, int) else list(size)
        size = size * 2 if len(size) == 1 else size
        L.node(op, [a["self"]], out[:1], dict(output_size=tuple(size)))
    return lower


def _unary(op, **fixed):
    def lower(L, a, out):
        L.node(op, [a.get("self", a.get("input"))], out, fixed)
    return lower


def _hardtanh(L, a, out):
    lo, hi = float(a.get("min_val", -1.0)), float(a.get("max_val", 1.0))
    L.node("clip", [a["self"]], out, dict(min=lo, max=hi))


def _clamp(L, a, out, lo=Unset, hi=Unset):
    lo = a.get("min") if lo is Unset else lo
    hi = a.get("max") if hi is Unset else hi
    if isinstance(lo, str) or isinstance(hi, str):
        x = a["self"]
        if lo is not None:
            x = L.node("maximum", [x, lo], [out[0] + "__lo"])[0]
        L.node("minimum" if hi is not None else "identity", [x, hi] if hi is not None else [x], out)
        return
    L.node("clip", [a["self"]], out, dict(min=lo, max=hi))  # ints stay ints: index arithmetic clamps them


def _gelu(L, a, out):
    L.node("gelu", [a["self"]], out, dict(approximate=a.get("approximate", "none") == "tanh"))


def _layer_norm(L, a, out):
    x, shape = a["input"], L.ints(a["normalized_shape"], "normalized_shape")
    rank = L.rank(x)
    L.node("layer_norm", [x, a.get("weight"), a.get("bias")], out[:1],
           dict(axes=tuple(range(rank - len(shape), rank)), eps=float(a.get("eps", 1e-5))))


def _group_norm(L, a, out):
    groups = int(a.get("num_groups", a.get("group", 1)))
    L.node(
        "group_norm",
        [a["input"], a.get("weight"), a.get("bias")],
        out[:1],
        dict(groups=groups, eps=float(a.get("eps", 1e-5))),
    )


def _softmax(op):
    def lower(L, a, out):
        L.node(op, [a["self"]], out, dict(axis=int(a["dim"])))
    return lower


def _resize(mode, coordinate_mode=None, antialias=False, cubic_a=-0.75):
    def lower(L, a, out):
        x = a.get("input", a.get("self"))
        shape = L.b.shape(x)
        if len(shape) != 4:
            raise L.fail(f"only 2-D resizing is supported (input of rank {len(shape)})")
        size, scales = a.get("output_size"), a.get("scale_factors")
        if scales is None and ("scales_h" in a or "scales_w" in a):
            scales = [a.get("scales_h"), a.get("scales_w")]
            scales = None if all(s is None for s in scales) else scales
        if size is not None:
            sizes = L.pair(size, "output_size")
        else:
            if scales is None:
                raise L.fail("an upsample with neither an output size nor scale factors")
            scales = [float(s) for s in (scales if len(scales) == 2 else list(scales) * 2)]
            sizes = tuple(int(math.floor(n * s)) for n, s in zip(shape[2:], scales))
        align = bool(a.get("align_corners", False))
        coord = coordinate_mode or ("align_corners" if align else "half_pixel")
        scale_attr = tuple(float(s) if s else None for s in scales) if scales is not None else None
        L.node("resize", [x], out, dict(sizes=sizes, scales=scale_attr, mode=mode, coordinate_mode=coord,
                                       nearest_mode="floor", cubic_a=cubic_a, antialias=antialias,
                                       exclude_outside=antialias))  # torch's antialiasing drops outside taps
    return lower


def _pad(L, a, out, mode=None):
    x = a.get("self", a.get("input"))
    pad = L.ints(a.get("pad", a.get("padding")), "pad")
    rank = L.rank(x)
    pads = [(0, 0)] * rank
    for i in range(len(pad) // 2):
        pads[rank - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    mode = mode or a.get("mode", "constant")
    mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap", "constant": "constant"}.get(mode)
    if mode is None:
        raise L.fail(f"pad mode {a.get('mode')!r} is not supported")
    value = a.get("value")
    L.node("pad", [x], out, dict(pads=tuple(pads), mode=mode, value=0.0 if value is None else float(value)))


def _prelu(L, a, out):
    L.node("prelu", [a["self"], a["weight"]], out, dict(channel_axis=True))


def _pixel_shuffle(L, a, out):
    L.node("depth_to_space", [a["self"]], out, dict(blocksize=int(a["upscale_factor"]), mode="CRD"))


def _leaky(L, a, out):
    L.node("leaky_relu", [a["self"]], out, dict(negative_slope=float(a.get("negative_slope", 0.01))))


def _elu(L, a, out):
    L.node("elu", [a["self"]], out, dict(alpha=float(a.get("alpha", 1.0)), scale=float(a.get("scale", 1.0)),
                                         input_scale=float(a.get("input_scale", 1.0))))


def _softplus(L, a, out):
    L.node(
        "softplus", [a["self"]], out, dict(beta=float(a.get("beta", 1.0)), threshold=float(a.get("threshold", 20.0)))
    )


def _celu(L, a, out):
    L.node("celu", [a["self"]], out, dict(alpha=float(a.get("alpha", 1.0))))


LOWER: dict[str, Callable] = {
    "conv2d": _conv,
    "convolution": _conv,
    "_convolution": _conv,
    "conv_transpose2d": lambda L, a, out: _conv(L, a, out, transposed=True),
    "batch_norm": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm,
    "native_batch_norm": _batch_norm,
    "_native_batch_norm_legit": _batch_norm,
    "max_pool2d": _max_pool,
    "max_pool2d_with_indices": _max_pool,
    "avg_pool2d": _avg_pool,
    "adaptive_avg_pool2d": _adaptive("adaptive_avg_pool"),
    "_adaptive_avg_pool2d": _adaptive("adaptive_avg_pool"),
    "adaptive_max_pool2d": _adaptive("adaptive_max_pool"),
    "relu": _unary("relu"),
    "relu6": _unary("relu6"),
    "hardtanh": _hardtanh,
    "leaky_relu": _leaky,
    "elu": _elu,
    "gelu": _gelu,
    "silu": _unary("silu"),
    "hardswish": _unary("hardswish"),
    "hardsigmoid": _unary("hardsigmoid", alpha=1 / 6, beta=0.5),
    "sigmoid": _unary("sigmoid"),
    "tanh": _unary("tanh"),
    "softplus": _softplus,
    "mish": _unary("mish"),
    "selu": _unary("selu"),
    "celu": _celu,
    "prelu": _prelu,
    "_prelu_kernel": _prelu,
    "exp": _unary("exp"),
    "log": _unary("log"),
    "sqrt": _unary("sqrt"),
    "rsqrt": _unary("rsqrt"),
    "abs": _unary("abs"),
    "neg": _unary("neg"),
    "reciprocal": _unary("reciprocal"),
    "erf": _unary("erf"),
    "floor": _unary("floor"),
    "ceil": _unary("ceil"),
    "round": _unary("round"),
    "sign": _unary("sign"),
    "sin": _unary("sin"),
    "cos": _unary("cos"),
    "clamp": _clamp,
    "clip": _clamp,
    "clamp_min": lambda L, a, out: _clamp(L, a, out, lo=a["min"], hi=None),
    "clamp_max": lambda L, a, out: _clamp(L, a, out, lo=None, hi=a["max"]),
    "layer_norm": _layer_norm,
    "native_layer_norm": _layer_norm,
    "group_norm": _group_norm,
    "native_group_norm": _group_norm,
    "instance_norm": _instance_norm,
    "softmax": _softmax("softmax"),
    "_softmax": _softmax("softmax"),
    "log_softmax": _softmax("log_softmax"),
    "_log_softmax": _softmax("log_softmax"),
    "upsample_nearest2d": _resize("nearest", "asymmetric"),
    "_upsample_nearest_exact2d": _resize("nearest", "tf_half_pixel_for_nn"),
    "upsample_bilinear2d": _resize("linear"),
    "_upsample_bilinear2d_aa": _resize("linear", antialias=True),
    "upsample_bicubic2d": _resize("cubic"),
    "_upsample_bicubic2d_aa": _resize("cubic", antialias=True, cubic_a=-0.5),
    "pad": _pad,
    "constant_pad_nd": _pad,
    "reflection_pad2d": lambda L, a, out: _pad(L, a, out, "reflect"),
    "replication_pad2d": lambda L, a, out: _pad(L, a, out, "replicate"),
    "pixel_shuffle": _pixel_shuffle,
    "expm1": _unary("expm1"),
    "log1p": _unary("log1p"),
}

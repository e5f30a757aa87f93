"""Spatial ops of the graph executor: convolutions, pools, norms over channels, resizes.

Contract: every handler maps `(attrs, args: list[V], ctx) -> [V]`; it takes a 4-D value as NHWC
(`values.channels_last`, free for `cl` values) and gives a `cl` value. Convolutions use the
formulations of `jaxvis.models.layers` (`ctx.impl`). Padding is explicit `((top, bottom), (left,
right))`, or `"same"`: TensorFlow's rule (`ops.same_padding`) resolved from the input's own size, so
a graph with it runs at any image size. `resize` takes a `None` size for an axis scaled by `scales`.
"""

from __future__ import annotations

from jaxvis.models.graph import ops
from jaxvis.models.graph.values import V, channels_last, optional, plain

__all__ = ["SPATIAL"]


def _pads(attrs, x, kernel, stride=(1, 1), dilation=(1, 1)) -> tuple:
    """The op's explicit padding of NHWC `x` (see the module docstring)."""
    padding = attrs.get("padding", ((0, 0), (0, 0)))
    if padding == "same":
        return tuple(ops.same_padding(n, k, s, d) for n, k, s, d in zip(x.shape[1:3], kernel, stride, dilation))
    return tuple(tuple(p) for p in padding)


def _conv(attrs, args, ctx):
    x = channels_last(args[0])
    kernel = args[1].data
    bias = args[2].data if len(args) > 2 and args[2] is not None else None
    stride, dilation = attrs.get("stride", (1, 1)), attrs.get("dilation", (1, 1))
    common = dict(stride=stride, padding=_pads(attrs, x, kernel.shape[:2], stride, dilation), dilation=dilation,
                  groups=attrs.get("groups", 1))
    if attrs.get("transposed"):
        y = ops.conv_transpose2d(x, kernel, bias, output_padding=attrs.get("output_padding", (0, 0)), **common)
    else:
        y = ops.conv2d(x, kernel, bias, impl=ctx.impl, **common)
    return [V(y, True)]


def _max_pool(attrs, args, ctx):
    x, dilation = channels_last(args[0]), attrs.get("dilation", (1, 1))
    y = ops.max_pool2d(x, kernel=attrs["kernel"], stride=attrs["stride"],
                       padding=_pads(attrs, x, attrs["kernel"], attrs["stride"], dilation), dilation=dilation,
                       ceil_mode=attrs.get("ceil_mode", False))
    return [V(y, True)]


def _avg_pool(attrs, args, ctx):
    x = channels_last(args[0])
    y = ops.avg_pool2d(x, kernel=attrs["kernel"], stride=attrs["stride"],
                       padding=_pads(attrs, x, attrs["kernel"], attrs["stride"]),
                       ceil_mode=attrs.get("ceil_mode", False),
                       count_include_pad=attrs.get("count_include_pad", True),
                       divisor_override=attrs.get("divisor_override"))
    return [V(y, True)]


def _lp_pool(attrs, args, ctx):
    x = channels_last(args[0])
    y = ops.lp_pool2d(x, p=attrs.get("p", 2), kernel=attrs["kernel"], stride=attrs["stride"],
                      padding=_pads(attrs, x, attrs["kernel"], attrs["stride"]),
                      ceil_mode=attrs.get("ceil_mode", False))
    return [V(y, True)]


def _adaptive_size(x, attrs):
    return tuple(n if o is None else o for n, o in zip(x.shape[1:3], attrs["output_size"]))


def _adaptive_avg(attrs, args, ctx):
    x = channels_last(args[0])
    return [V(ops.adaptive_avg_pool2d(x, _adaptive_size(x, attrs)), True)]


def _adaptive_max(attrs, args, ctx):
    x = channels_last(args[0])
    return [V(ops.adaptive_max_pool2d(x, _adaptive_size(x, attrs)), True)]




def _group_norm(attrs, args, ctx):
    x = channels_last(args[0])
    return [V(ops.group_norm(x, optional(args, 1), optional(args, 2), groups=attrs["groups"],
                             eps=attrs.get("eps", 1e-5)), True)]


def _lrn(attrs, args, ctx):
    x = channels_last(args[0])
    return [V(ops.lrn(x, size=attrs["size"], alpha=attrs.get("alpha", 1e-4), beta=attrs.get("beta", 0.75),
                      bias=attrs.get("bias", 1.0)), True)]


def _resize(attrs, args, ctx):
    x = channels_last(args[0])
    sizes, scales = attrs["sizes"], attrs.get("scales") or (None, None)
    for axis, n_out, scale in zip((1, 2), sizes, scales):
        n_in = x.shape[axis]
        n_out = int(n_in * scale) if n_out is None else n_out
        if n_out == n_in and (scale is None or scale == 1.0) and attrs.get("mode") != "cubic":
            continue
        indices, weights = ops.resize_taps(
            n_in, n_out, scale=scale or n_out / n_in, mode=attrs.get("mode", "nearest"),
            coordinate_mode=attrs.get("coordinate_mode", "asymmetric"), nearest_mode=attrs.get("nearest_mode", "floor"),
            cubic_a=attrs.get("cubic_a", -0.75), exclude_outside=attrs.get("exclude_outside", False),
            antialias=attrs.get("antialias", False))
        x = ops.resize_axis(x, axis, indices, weights)
    return [V(x, True)]



def _image_resize(attrs, args, ctx):
    x = channels_last(args[0])
    return [V(ops.image_resize(x, attrs["size"], method=attrs.get("method", "bilinear"),
                               antialias=attrs.get("antialias", False),
                               crop_to_aspect_ratio=attrs.get("crop_to_aspect_ratio", False),
                               pad_to_aspect_ratio=attrs.get("pad_to_aspect_ratio", False),
                               fill_value=attrs.get("fill_value", 0.0)), True)]


def _depth_to_space(attrs, args, ctx):
    x = plain(args[0])
    n, c, h, w = x.shape
    b = attrs["blocksize"]
    if attrs.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [V(y.reshape(n, c // (b * b), h * b, w * b), False)]


SPATIAL = {
    "conv": _conv,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "lp_pool": _lp_pool,
    "adaptive_avg_pool": _adaptive_avg,
    "adaptive_max_pool": _adaptive_max,
    "group_norm": _group_norm,
    "resize": _resize,
    "image_resize": _image_resize,
    "lrn": _lrn,
    "depth_to_space": _depth_to_space,
}

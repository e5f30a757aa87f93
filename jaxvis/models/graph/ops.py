"""The op library of the graph executor: pure JAX functions, spatial ops on NHWC activations.

Contract: every spatial op takes `x[B,H,W,C]` and returns `[B,Ho,Wo,Co]` with PyTorch's / ONNX's
arithmetic (explicit, possibly asymmetric padding `((top, bottom), (left, right))`; `ceil_mode`
windows that would start in the bottom / right padding are dropped, as torch and onnxruntime do).
Weights come in the layouts `jaxvis.models.graph.ir.convert_weight` produces: conv kernels HWIO,
transposed-conv kernels HWIO already flipped, norm scales per channel (the last axis). Window
arithmetic (pool divisors, resize taps, adaptive-pool bins) is computed with NumPy from the static
shapes, so nothing of it runs per step. Non-spatial ops (`pad`, `resize_axis`, `softmax`, ...) act
on the axes they are given, whatever the rank.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxvis.models import layers as conv_layers

__all__ = [
    "adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "batch_norm", "conv2d", "conv_transpose2d", "elu",
    "gelu", "group_norm", "image_resize", "layer_norm", "leaky_relu", "log_softmax", "lp_pool2d", "lrn", "max_pool2d",
    "pad", "pool_output_size", "resize_axis", "resize_taps", "same_padding", "softmax", "softplus",
]

Pads = tuple[tuple[int, int], tuple[int, int]]


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) of one axis: `ceil(size / stride)` outputs, the odd
    pixel of the total after."""
    span = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def conv2d(x, kernel, bias=None, *, stride=(1, 1), padding: Pads = ((0, 0), (0, 0)), dilation=(1, 1),
           groups: int = 1, impl: str = "auto"):
    """torch `conv2d` / ONNX `Conv`; undilated convs use `jaxvis.models.layers.conv2d`'s fast formulations."""
    if tuple(dilation) == (1, 1):
        return conv_layers.conv2d(x, kernel, bias, stride=tuple(stride), padding=padding, groups=groups, impl=impl)
    y = lax.conv_general_dilated(x, kernel, window_strides=tuple(stride), padding=padding, rhs_dilation=tuple(dilation),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return y if bias is None else y + bias


def conv_transpose2d(x, kernel, bias=None, *, stride=(1, 1), padding: Pads = ((0, 0), (0, 0)), dilation=(1, 1),
                     output_padding=(0, 0), groups: int = 1):
    """torch `conv_transpose2d` / ONNX `ConvTranspose`; `kernel` HWIO, spatially flipped (see `ir.convert_weight`).

    Output size per axis: `(n - 1) * s - pad_begin - pad_end + d * (k - 1) + 1 + output_padding`."""
    kh, kw = kernel.shape[:2]
    pads = []
    for k, d, (begin, end), extra in zip((kh, kw), dilation, padding, output_padding):
        span = d * (k - 1)
        pads.append((span - begin, span - end + extra))
    y = lax.conv_general_dilated(x, kernel, window_strides=(1, 1), padding=pads, lhs_dilation=tuple(stride),
                                 rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 feature_group_count=groups)
    return y if bias is None else y + bias


def pool_output_size(n: int, k: int, s: int, begin: int, end: int, d: int = 1, *, ceil_mode: bool = False) -> int:
    """Windows along one axis: torch's rule (a ceil-mode window must start inside input or left padding)."""
    span = d * (k - 1) + 1
    if ceil_mode:
        out = -(-(n + begin + end - span) // s) + 1
        if (out - 1) * s >= n + begin:
            out -= 1
    else:
        out = (n + begin + end - span) // s + 1
    if out < 1:
        raise ValueError(f"a pooling window of {k} (dilation {d}, padding {begin}+{end}) does not fit {n} positions")
    return out


def _window_pads(shape, kernel, stride, padding, dilation, ceil_mode):
    """((top, bottom + ceil extra), (left, right + ceil extra)) and the output size."""
    pads, out = [], []
    for n, k, s, (begin, end), d in zip(shape, kernel, stride, padding, dilation):
        o = pool_output_size(n, k, s, begin, end, d, ceil_mode=ceil_mode)
        needed = (o - 1) * s + d * (k - 1) + 1
        pads.append((begin, max(end, needed - n - begin)))
        out.append(o)
    return pads, out


def max_pool2d(x, *, kernel, stride, padding: Pads = ((0, 0), (0, 0)), dilation=(1, 1), ceil_mode=False):
    """torch `max_pool2d` / ONNX `MaxPool` (padding never wins: it is -inf).

    Undilated windows are the maximum of the window's kh*kw strided slices: on CPU its forward +
    backward is several times faster than `lax.reduce_window`, whose gradient is a select-and-scatter
    (see benchmarks/README.md). Values are identical; at ties the gradient is shared instead of going
    to one input.
    """
    pads, out = _window_pads(x.shape[1:3], kernel, stride, padding, dilation, ceil_mode)
    if tuple(dilation) != (1, 1):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, *kernel, 1), (1, *stride, 1),
                                 ((0, 0), *pads, (0, 0)), window_dilation=(1, *dilation, 1))
    if any(p for pair in pads for p in pair):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out
    result = None
    for i in range(kh):
        for j in range(kw):
            tap = lax.slice(x, (0, i, j, 0), (x.shape[0], i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, x.shape[3]),
                            (1, sh, sw, 1))
            result = tap if result is None else jnp.maximum(result, tap)
    return result


def _avg_counts(n, k, s, begin, end, ceil_mode, include_pad):
    """Per output position along one axis, how many entries torch divides by."""
    out = pool_output_size(n, k, s, begin, end, 1, ceil_mode=ceil_mode)
    counts = []
    for i in range(out):
        start = i * s - begin
        stop = min(start + k, n + end)
        if include_pad:
            counts.append(stop - start)
        else:
            counts.append(min(stop, n) - max(start, 0))
    return np.asarray(counts, np.float32)


def avg_pool2d(x, *, kernel, stride, padding: Pads = ((0, 0), (0, 0)), ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """torch `avg_pool2d` / ONNX `AveragePool`: the divisor counts padding (not the ceil-mode overhang)
    when `count_include_pad`, else only real entries; `divisor_override` replaces it."""
    pads, _ = _window_pads(x.shape[1:3], kernel, stride, padding, (1, 1), ceil_mode)
    total = lax.reduce_window(x, 0.0, lax.add, (1, *kernel, 1), (1, *stride, 1), ((0, 0), *pads, (0, 0)))
    if divisor_override:
        return total / divisor_override
    ch = _avg_counts(x.shape[1], kernel[0], stride[0], *padding[0], ceil_mode, count_include_pad)
    cw = _avg_counts(x.shape[2], kernel[1], stride[1], *padding[1], ceil_mode, count_include_pad)
    return total / jnp.asarray(np.maximum(np.outer(ch, cw), 1.0)[None, :, :, None], x.dtype)


def lp_pool2d(x, *, p, kernel, stride, padding: Pads = ((0, 0), (0, 0)), ceil_mode=False):
    """ONNX `LpPool` / torch `lp_pool2d`: (sum |x|^p)^(1/p) over each window."""
    pads, _ = _window_pads(x.shape[1:3], kernel, stride, padding, (1, 1), ceil_mode)
    total = lax.reduce_window(jnp.abs(x) ** p, 0.0, lax.add, (1, *kernel, 1), (1, *stride, 1), ((0, 0), *pads, (0, 0)))
    return total ** (1.0 / p)


def _adaptive_bins(n: int, out: int) -> list[tuple[int, int]]:
    return [((i * n) // out, -(-((i + 1) * n) // out)) for i in range(out)]


def adaptive_avg_pool2d(x, output_size):
    """torch `adaptive_avg_pool2d`: bin i spans [floor(i*n/out), ceil((i+1)*n/out))."""
    for axis, out in zip((1, 2), output_size):
        n = x.shape[axis]
        if out == n:
            continue
        weights = np.zeros((out, n), np.float32)
        for i, (start, stop) in enumerate(_adaptive_bins(n, out)):
            weights[i, start:stop] = 1.0 / (stop - start)
        x = jnp.moveaxis(jnp.tensordot(x, jnp.asarray(weights, x.dtype), axes=((axis,), (1,))), -1, axis)
    return x


def adaptive_max_pool2d(x, output_size):
    """torch `adaptive_max_pool2d` (same bins as `adaptive_avg_pool2d`)."""
    for axis, out in zip((1, 2), output_size):
        n = x.shape[axis]
        if out == n:
            continue
        parts = [
            jnp.max(lax.slice_in_dim(x, a, b, axis=axis), axis=axis, keepdims=True) for a, b in _adaptive_bins(n, out)
        ]
        x = jnp.concatenate(parts, axis=axis)
    return x


def batch_norm(x, mean, var, scale=None, offset=None, *, eps=1e-5, axis=-1):
    """Inference batch norm over `axis` with running statistics."""
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    inv = lax.rsqrt(var + eps)
    if scale is not None:
        inv = inv * scale
    y = (x - mean.reshape(shape)) * inv.reshape(shape)
    return y if offset is None else y + offset.reshape(shape)


def layer_norm(x, scale=None, offset=None, *, axes, eps=1e-5):
    """Normalize over `axes` (the trailing ones in torch / ONNX); scale and offset broadcast against x."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale
    return y if offset is None else y + offset


def group_norm(x, scale=None, offset=None, *, groups: int, eps=1e-5):
    """torch `group_norm` on NHWC: statistics per item and group of consecutive channels; per-channel affine."""
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=(1, 2, 4), keepdims=True)
    y = ((g - mean) * lax.rsqrt(var + eps)).reshape(b, h, w, c)
    if scale is not None:
        y = y * scale
    return y if offset is None else y + offset


def lrn(x, *, size: int, alpha=1e-4, beta=0.75, bias=1.0):
    """Local response normalization across channels (the last axis): x / (bias + alpha/size * sum x^2)^beta."""
    sq = jnp.square(x)
    total = lax.reduce_window(sq, 0.0, lax.add, (1,) * (x.ndim - 1) + (size,), (1,) * x.ndim,
                              ((0, 0),) * (x.ndim - 1) + (((size - 1) // 2, size // 2),))
    return x / (bias + alpha / size * total) ** beta


def pad(x, pads, *, mode: str = "constant", value=0.0):
    """Pad (negative: crop) each axis by `pads[axis] = (begin, end)`; mode constant / reflect / edge / wrap."""
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(pads))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in pads]
    if mode == "constant":
        return jnp.pad(x, widths, constant_values=jnp.asarray(value, x.dtype))
    return jnp.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


def _cubic_weights(t, a):
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def resize_taps(n_in: int, n_out: int, *, scale: float, mode: str, coordinate_mode: str,
                nearest_mode: str = "floor", cubic_a: float = -0.75, exclude_outside: bool = False,
                antialias: bool = False):
    """Source indices [n_out, taps] and weights [n_out, taps] of a 1-D resize (computed with NumPy).

    `scale` is out/in as the source framework uses it for coordinates (ONNX `scales`, torch's
    `1/scale_factor` when given); coordinate modes are ONNX's (`half_pixel`, `half_pixel_symmetric`,
    `pytorch_half_pixel`, `align_corners`, `asymmetric`, `tf_half_pixel_for_nn`); nearest modes
    `floor`, `ceil`, `round_prefer_floor`, `round_prefer_ceil`. Taps outside the input repeat the
    edge, as ONNX's reference does, unless `exclude_outside` (zero weight, the rest renormalized:
    torch's antialiasing). `antialias` widens linear / cubic filters by 1/scale when downscaling."""
    dst = np.arange(n_out, dtype=np.float64)
    if coordinate_mode == "half_pixel":
        src = (dst + 0.5) / scale - 0.5
    elif coordinate_mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / (scale * n_in))
        src = offset + (dst + 0.5) / scale - 0.5
    elif coordinate_mode == "pytorch_half_pixel":
        src = (dst + 0.5) / scale - 0.5 if n_out > 1 else np.full_like(dst, -0.5)
    elif coordinate_mode == "align_corners":
        src = dst * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(dst)
    elif coordinate_mode == "asymmetric":
        src = dst / scale
    elif coordinate_mode == "tf_half_pixel_for_nn":
        src = (dst + 0.5) / scale
    else:
        raise ValueError(f"resize coordinate mode {coordinate_mode!r} is not supported")
    if mode == "nearest":
        if nearest_mode == "floor":
            idx = np.floor(src)
        elif nearest_mode == "ceil":
            idx = np.ceil(src)
        elif nearest_mode == "round_prefer_floor":
            idx = np.where(src - np.floor(src) == 0.5, np.floor(src), np.round(src))
        elif nearest_mode == "round_prefer_ceil":
            idx = np.floor(src + 0.5)
        else:
            raise ValueError(f"resize nearest mode {nearest_mode!r} is not supported")
        return np.clip(idx, 0, n_in - 1).astype(np.int32)[:, None], np.ones((n_out, 1), np.float32)
    if mode not in ("linear", "cubic"):
        raise ValueError(f"resize mode {mode!r} is not supported")
    support = 1.0 if mode == "linear" else 2.0  # of the filter, in input pixels at scale 1
    stretch = min(scale, 1.0) if antialias else 1.0
    start = int(np.floor(-support / stretch)) + 1
    idx = np.floor(src)[:, None] + np.arange(start, 1 - start + 1)[None]
    t = (idx - src[:, None]) * stretch
    weights = np.maximum(0.0, 1.0 - np.abs(t)) if mode == "linear" else _cubic_weights(t, cubic_a)
    if exclude_outside:
        weights = np.where((idx >= 0) & (idx < n_in), weights, 0.0)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, n_in - 1).astype(np.int32), weights.astype(np.float32)


def resize_axis(x, axis: int, indices, weights):
    """Apply one axis's taps from `resize_taps`: out[..., i, ...] = sum_t w[i, t] * x[..., idx[i, t], ...]."""
    shape = [1] * x.ndim
    shape[axis] = indices.shape[0]
    out = None
    for t in range(indices.shape[1]):
        term = jnp.take(x, jnp.asarray(indices[:, t]), axis=axis)
        if not np.all(weights[:, t] == 1.0):
            term = term * jnp.asarray(weights[:, t], x.dtype).reshape(shape)
        out = term if out is None else out + term
    return out


def image_resize(x, size, *, method: str = "bilinear", antialias: bool = False, crop_to_aspect_ratio: bool = False,
                 pad_to_aspect_ratio: bool = False, fill_value: float = 0.0):
    """`jax.image.resize` of NHWC `x` to `size` (height, width), after an optional centred crop, or
    symmetric constant pad, to the target's aspect ratio (Keras 3's `image.resize` on the JAX backend)."""
    _, h, w, c = x.shape
    height, width = size
    if crop_to_aspect_ratio:
        crop_h = max(min(h, int(float(w * height) / width)), 1)
        crop_w = max(min(w, int(float(h * width) / height)), 1)
        top, left = int(float(h - crop_h) / 2), int(float(w - crop_w) / 2)
        x = x[:, top:top + crop_h, left:left + crop_w, :]
    elif pad_to_aspect_ratio:
        pad_h = max(h, int(float(w * height) / width))
        pad_w = max(w, int(float(h * width) / height))
        top, left = int(float(pad_h - h) / 2), int(float(pad_w - w) / 2)
        if top > 0:  # Keras pads `top` rows on both sides (or `left` columns), not up to pad_h
            x = jnp.pad(x, ((0, 0), (top, top), (0, 0), (0, 0)), constant_values=fill_value)
        elif left > 0:
            x = jnp.pad(x, ((0, 0), (0, 0), (left, left), (0, 0)), constant_values=fill_value)
    return jax.image.resize(x, (x.shape[0], height, width, c), method=method, antialias=antialias)


def softmax(x, axis: int = -1):
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x, axis: int = -1):
    return jax.nn.log_softmax(x, axis=axis)


def gelu(x, *, approximate: bool = False):
    return jax.nn.gelu(x, approximate=approximate)


def softplus(x, beta: float = 1.0, threshold: float = 20.0):
    """torch `softplus` (linear where beta*x > threshold)."""
    bx = beta * x
    return jnp.where(bx > threshold, x, jnp.logaddexp(bx, 0.0) / beta)


def elu(x, alpha: float = 1.0, scale: float = 1.0, input_scale: float = 1.0):
    return scale * jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0) * input_scale))


def leaky_relu(x, negative_slope: float = 0.01):
    return jnp.where(x >= 0, x, negative_slope * x)

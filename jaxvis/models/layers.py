"""Convolutions for the zoo, NHWC, each in the formulation that is fastest on the current backend.

Contract: every conv maps `x[B,H,W,Cin]` and a kernel `[kh,kw,Cin/groups,Cout]` (lax's HWIO layout,
grouped and depthwise included) to `y[B,Ho,Wo,Cout]` with torch's arithmetic: zero padding
`padding` rows/columns on each side, then stride `s`, so `Ho = (H + pad_top + pad_bottom - kh) // s + 1`.
The kernel layout does not depend on the formulation, so a params tree works with all of them, and
all formulations agree to float32 rounding in value and in gradient.

Formulations (`impl`):

* `"lax"`: `lax.conv_general_dilated` (grouped / depthwise through `feature_group_count`): what
  cuDNN is good at, so the choice on GPU.
* `"taps"`: the conv written as its kernel taps, each a slice of the padded input (a stride-s
  input is first split into s*s phases, so every tap is a contiguous slice):
  depthwise: the sum of kh*kw multiply-adds (3x3: nine), with a hand-written backward pass that
  is itself nine multiply-adds (see `_depthwise`);
  1x1: one `einsum` over channels;
  otherwise: im2col (taps concatenated on the channel axis) and one `einsum` per group.
  On CPU, depthwise 3x3 through `feature_group_count` is 15-150x slower than nine shifted
  multiply-adds (forward + input gradient; stride 2 is the worst), see benchmarks/bench_layers.py.
* `"winograd"`: 3x3 stride-1 ungrouped convs as Winograd F(4x4, 3x3) batched matmuls, forward and
  input gradient (see `jaxvis.models.conv_winograd`); any other conv as `"auto"` picks it.
* `"split"`: a grouped (not depthwise) conv as one ungrouped conv per group, each in the
  formulation `"auto"` picks for it, concatenated: XLA CPU's `feature_group_count` conv runs several
  times slower than the same work ungrouped. Ungrouped and depthwise convs as `"auto"` picks them.
* `"onednn"`: the conv as XLA FFI custom calls into oneDNN (the library PyTorch's CPU convs use),
  forward and input gradient (`jaxvis.models.conv_onednn`, `csrc/onednn_ffi.cpp`); CPU only, float32,
  padding >= 0, and only where the extension `jaxvis._onednn` was built and libdnnl.so.3 loads
  (else, and for other dtypes or negative padding, as `"xla"` picks).
* `"xla"`: what `"auto"` picks among the XLA formulations alone (no oneDNN): the choice below
  without its oneDNN rule.
* `"auto"` (default): picked at trace time from `jax.default_backend()`, the kernel shape and the
  stride by `choose_impl`: on CPU `"onednn"` for every conv where it is available (whole renders
  measured faster with it than with any mix that kept 1x1, depthwise or stem convs on the XLA
  formulations, bench_zoo.py); without oneDNN: `"taps"` for 1x1 and depthwise convs, `"taps"` for
  stem convs (kh*kw*Cin/groups <= 32,
  e.g. a 3x3 conv on RGB), `"winograd"` for 3x3 stride-1 ungrouped convs with at least
  `_WINOGRAD_MIN_CHANNELS` input and output channels (XLA's own conv is the faster one below that,
  where the transforms' memory traffic outweighs the saved multiply-adds), `"split"` for grouped
  (not depthwise) convs, `"lax"` for the rest;
  on GPU / TPU always `"lax"` (cuDNN). Measurements: benchmarks/bench_layers.py, bench_zoo.py.

The choice is static: a module carries it as a field (`Conv2d.impl`, `MobileNetV2.conv_impl`), so
forcing a formulation for a test or a benchmark is `module.clone(conv_impl="lax")`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxvis.models import conv_onednn
from jaxvis.models.conv_winograd import winograd_conv3x3

__all__ = [
    "Conv2d", "IMPLS", "Linear", "choose_impl", "conv2d", "conv_lax", "conv_taps", "is_depthwise",
    "normalize_padding",
]

IMPLS = ("auto", "lax", "taps", "winograd", "split", "onednn", "xla")
_STEM_TAPS_MAX = 32  # largest kh*kw*Cin/groups a CPU regular conv still runs as im2col
_WINOGRAD_MIN_CHANNELS = 96  # smallest Cin and Cout a CPU 3x3 stride-1 conv runs as Winograd
_WINOGRAD_TILE = 4  # output tile m of F(m x m, 3 x 3)

Padding = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return value


def normalize_padding(padding: Padding) -> tuple[tuple[int, int], tuple[int, int]]:
    """torch-style padding (p, (ph, pw)) or explicit ((top, bottom), (left, right)) as the explicit form."""
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    padding = tuple(padding)
    if len(padding) == 2 and all(isinstance(p, int) for p in padding):
        return (padding[0], padding[0]), (padding[1], padding[1])
    if len(padding) == 2 and all(len(tuple(p)) == 2 for p in padding):
        return tuple(map(tuple, padding))
    raise ValueError(f"padding must be p, (ph, pw) or ((top, bottom), (left, right)), got {padding!r}")


def is_depthwise(kernel_shape: Sequence[int], groups: int) -> bool:
    """Whether a conv with this HWIO kernel and group count is depthwise (one input channel per group)."""
    return groups > 1 and kernel_shape[2] == 1


def winograd_applies(kernel_shape: Sequence[int], groups: int = 1, stride=1) -> bool:
    """Whether `"winograd"` computes this conv itself (3x3, stride 1, no groups)."""
    return tuple(kernel_shape[:2]) == (3, 3) and groups == 1 and _pair(stride, "stride") == (1, 1)


def choose_impl(kernel_shape: Sequence[int], groups: int = 1, impl: str = "auto", backend: str | None = None,
                *, stride=1, onednn: bool = True) -> str:
    """The formulation ("lax", "taps", "winograd", "split" or "onednn") a conv with this kernel and
    stride uses; `impl` other than "auto" wins, except that "winograd", "split" and "onednn" stand for
    "auto" where they do not apply ("onednn": not built or not loadable), and "xla" is "auto" without
    oneDNN. `onednn=False`: never "onednn" (what `conv2d` falls back to)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown conv formulation {impl!r}; valid: {', '.join(IMPLS)}")
    if impl == "winograd" and winograd_applies(kernel_shape, groups, stride):
        return impl
    if impl == "split" and groups > 1 and not is_depthwise(kernel_shape, groups):
        return impl
    if impl == "onednn" and onednn and conv_onednn.available():
        return impl
    if impl not in ("auto", "winograd", "split", "onednn", "xla"):
        return impl
    if (backend or jax.default_backend()) != "cpu":
        return "lax"
    if impl != "xla" and onednn and conv_onednn.available():
        return "onednn"
    kh, kw, cin_per_group, cout = kernel_shape[:4]
    if (kh, kw) == (1, 1) or is_depthwise(kernel_shape, groups):
        return "taps"
    if groups == 1 and kh * kw * cin_per_group <= _STEM_TAPS_MAX:
        return "taps"
    if groups > 1:
        return "split"
    if winograd_applies(kernel_shape, groups, stride) and min(cin_per_group, cout) >= _WINOGRAD_MIN_CHANNELS:
        return "winograd"
    return "lax"


def conv_lax(x, kernel, *, stride=1, padding: Padding = 0, groups: int = 1):
    """The reference formulation: `lax.conv_general_dilated` in NHWC / HWIO. Mixed dtypes promote as
    the taps' multiply-adds do (float64 images under jax x64 with float32 weights)."""
    dtype = jnp.result_type(x, kernel)
    return lax.conv_general_dilated(
        x.astype(dtype),
        kernel.astype(dtype),
        window_strides=_pair(stride, "stride"),
        padding=normalize_padding(padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _output_size(x, kh: int, kw: int, stride: tuple[int, int], padding) -> tuple[int, int]:
    (top, bottom), (left, right) = padding
    out_h = (x.shape[1] + top + bottom - kh) // stride[0] + 1
    out_w = (x.shape[2] + left + right - kw) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {kh}x{kw} conv with padding {padding} does not fit an input of {x.shape[1]}x{x.shape[2]}")
    return out_h, out_w


def _phase_padded(x, kh: int, kw: int, stride: tuple[int, int], padding):
    """x padded (or cropped: lax.pad takes negative amounts) to exactly the rows / columns the taps
    read, a multiple of the stride in each direction."""
    _, height, width, _ = x.shape
    (top, _), (left, _) = padding
    out_h, out_w = _output_size(x, kh, kw, stride, padding)
    rows, cols = stride[0] * (out_h + (kh - 1) // stride[0]), stride[1] * (out_w + (kw - 1) // stride[1])
    if (top, left) == (0, 0) and (rows, cols) == (height, width):
        return x
    config = ((0, 0, 0), (top, rows - height - top, 0), (left, cols - width - left, 0), (0, 0, 0))
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _taps(x, kh: int, kw: int, stride: tuple[int, int], padding):
    """Output size and the kh*kw slices `x_pad[:, i + s*r, j + s*c, :]` (r < Ho, c < Wo), row-major."""
    (sh, sw), channels = stride, x.shape[3]
    out_h, out_w = _output_size(x, kh, kw, stride, padding)
    padded = _phase_padded(x, kh, kw, stride, padding)
    if (sh, sw) == (1, 1):
        return (out_h, out_w), [padded[:, i:i + out_h, j:j + out_w, :] for i in range(kh) for j in range(kw)]
    # split rows and columns into their stride phases, so every tap is a contiguous slice
    _, rows, cols, _ = padded.shape
    phases = padded.reshape(x.shape[0], rows // sh, sh, cols // sw, sw, channels)
    slices = [
        phases[:, i // sh:i // sh + out_h, i % sh, j // sw:j // sw + out_w, j % sw, :]
        for i in range(kh) for j in range(kw)
    ]
    return (out_h, out_w), slices


def _multiply_add(taps, kernel):
    """sum_t taps[t] * kernel[t // kw, t % kw, 0]: the depthwise conv of its taps, one fused loop."""
    kw, out = kernel.shape[1], None
    for index, tap in enumerate(taps):
        term = tap * kernel[index // kw, index % kw, 0]
        out = term if out is None else out + term
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise(x, kernel, stride, padding):
    """Depthwise conv (multiplier 1) as multiply-adds, with a backward pass of the same shape.

    Autodiff of the slices would give the input gradient as a sum of kh*kw pads of the cotangent,
    which XLA fuses only while the sum has a single consumer; the ReLU6 backward before it reads it
    several times, and then the pads are materialized (~3x slower). Written by hand, the input
    gradient is itself a depthwise correlation: the cotangent, dilated by the stride and padded,
    times the flipped kernel -- one fused loop, like the forward.
    """
    return _multiply_add(_taps(x, kernel.shape[0], kernel.shape[1], stride, padding)[1], kernel)


def _depthwise_fwd(x, kernel, stride, padding):
    return _depthwise(x, kernel, stride, padding), (x, kernel)


def _depthwise_bwd(stride, padding, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    (top, _), (left, _) = padding
    (sh, sw), (_, height, width, _), (_, out_h, out_w, _) = stride, x.shape, g.shape
    # grad_x[h] = sum_i g_dilated[h + top - i] * k[i]: a correlation of the dilated cotangent, padded
    # by kh-1-top in front (negative: cropped) to exactly height + kh - 1 rows, with the flipped kernel.
    low_h, low_w = kh - 1 - top, kw - 1 - left
    high_h = height + kh - 1 - (sh * (out_h - 1) + 1) - low_h
    high_w = width + kw - 1 - (sw * (out_w - 1) + 1) - low_w
    config = ((0, 0, 0), (low_h, high_h, sh - 1), (low_w, high_w, sw - 1), (0, 0, 0))
    padded = lax.pad(g, jnp.zeros((), g.dtype), config)
    taps = [padded[:, i:i + height, j:j + width, :] for i in range(kh) for j in range(kw)]
    grad_x = _multiply_add(taps, kernel[::-1, ::-1])
    _, x_taps = _taps(x, kh, kw, stride, padding)
    grad_kernel = jnp.stack([(tap * g).sum(axis=(0, 1, 2)) for tap in x_taps]).reshape(kernel.shape)
    return grad_x, grad_kernel.astype(kernel.dtype)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def _im2col_conv(x, kernel, stride, padding):
    """A regular conv as one einsum over its taps concatenated on the channel axis (im2col)."""
    kh, kw, cin, cout = kernel.shape
    cols = jnp.concatenate(_taps(x, kh, kw, stride, padding)[1], axis=-1)  # channels ordered (tap, cin)
    return jnp.einsum("bhwk,ko->bhwo", cols, kernel.reshape(kh * kw * cin, cout))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _im2col(x, kernel, stride, padding):
    """`_im2col_conv` with a hand-written input gradient (col2im) that sums, for each stride
    phase of the padded input, only the taps that land on it.

    Autodiff gives col2im as kh*kw zero-pads of the tap gradients summed over the whole phase-split
    input, so every input pixel evaluates all nine taps (3x3), and XLA fuses that sum into each
    consumer of the image gradient (colour mixing reads it three times): ~5 ms per render step for
    the MobileNetV2 stem at 16 x 128 px. Per phase, a pixel sums 2.25 taps on average (stride 2)."""
    return _im2col_conv(x, kernel, stride, padding)


def _im2col_fwd(x, kernel, stride, padding):
    return _im2col_conv(x, kernel, stride, padding), (x, kernel)


def _im2col_bwd(stride, padding, residuals, g):
    x, kernel = residuals
    kh, kw, cin, cout = kernel.shape
    (sh, sw), batch = stride, x.shape[0]
    (out_h, out_w), x_taps = _taps(x, kh, kw, stride, padding)
    grad_kernel = jnp.einsum("bhwk,bhwo->ko", jnp.concatenate(x_taps, axis=-1), g).reshape(kernel.shape)
    grad_cols = jnp.einsum("bhwo,ko->bhwk", g, kernel.reshape(kh * kw * cin, cout))
    grad_taps = grad_cols.reshape(batch, out_h, out_w, kh * kw, cin)
    rows, cols = out_h + (kh - 1) // sh, out_w + (kw - 1) // sw  # the phase grid, as in `_taps`
    phases = []
    for p in range(sh):
        for q in range(sw):
            total = jnp.zeros((batch, rows, cols, cin), g.dtype)
            for i in range(p, kh, sh):
                for j in range(q, kw, sw):
                    config = (
                        (0, 0, 0),
                        (i // sh, rows - out_h - i // sh, 0),
                        (j // sw, cols - out_w - j // sw, 0),
                        (0, 0, 0),
                    )
                    total = total + lax.pad(grad_taps[:, :, :, i * kw + j], jnp.zeros((), g.dtype), config)
            phases.append(total)
    # phases[(p, q)][b, r, c] is padded[b, r*sh + p, c*sw + q]: interleave, then undo `_taps`' pad
    grad_padded = jnp.stack(phases, axis=3).reshape(batch, rows, cols, sh, sw, cin)
    grad_padded = grad_padded.transpose(0, 1, 3, 2, 4, 5).reshape(batch, rows * sh, cols * sw, cin)
    _, unpad = jax.vjp(lambda x: _phase_padded(x, kh, kw, stride, padding), x)
    return unpad(grad_padded)[0], grad_kernel.astype(kernel.dtype)


_im2col.defvjp(_im2col_fwd, _im2col_bwd)


def conv_taps(x, kernel, *, stride=1, padding: Padding = 0, groups: int = 1):
    """The conv as slices of the input: multiply-adds (depthwise) or one einsum (1x1, im2col)."""
    kh, kw, cin_per_group, cout = kernel.shape
    stride, padding = _pair(stride, "stride"), normalize_padding(padding)
    if is_depthwise(kernel.shape, groups) and cout == groups:
        return _depthwise(x, kernel, stride, padding)
    if groups == 1 and kh * kw > 1:
        return _im2col(x, kernel, stride, padding)
    _, taps = _taps(x, kh, kw, stride, padding)
    if is_depthwise(kernel.shape, groups):  # channel multiplier > 1: autodiff of the slices
        return _multiply_add([jnp.repeat(tap, cout // groups, axis=-1) for tap in taps], kernel)
    cols = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)  # channels ordered (tap, cin)
    weights = kernel.reshape(kh * kw * cin_per_group, cout)
    if groups == 1:  # 1x1
        return jnp.einsum("bhwk,ko->bhwo", cols, weights)
    b, h, w, _ = cols.shape
    cols = cols.reshape(b, h, w, kh * kw, groups, cin_per_group).swapaxes(3, 4).reshape(b, h, w, groups, -1)
    weights = kernel.reshape(kh * kw, cin_per_group, groups, cout // groups).transpose(2, 0, 1, 3)
    out = jnp.einsum("bhwgk,gko->bhwgo", cols, weights.reshape(groups, kh * kw * cin_per_group, -1))
    return out.reshape(b, h, w, cout)


def conv2d(x, kernel, bias=None, *, stride=1, padding: Padding = 0, groups: int = 1, impl: str = "auto"):
    """A torch-semantics 2-D conv (see the module docstring) in the formulation `impl` resolves to.

    Args:
      x: inputs [B, H, W, Cin].
      kernel: [kh, kw, Cin // groups, Cout] (HWIO; depthwise: [kh, kw, 1, Cin * multiplier]).
      bias: optional [Cout].
      stride: int or (sh, sw).
      padding: zeros on each side: p, (ph, pw) or ((top, bottom), (left, right)).
      groups: torch's `groups` (lax's `feature_group_count`).
      impl: "auto", "lax", "taps", "winograd", "split", "onednn" or "xla".

    Returns:
      [B, Ho, Wo, Cout].
    """
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(f"conv2d takes x[B,H,W,C] and kernel[kh,kw,I,O], got {x.shape} and {kernel.shape}")
    if x.shape[-1] != kernel.shape[2] * groups or kernel.shape[3] % groups:
        raise ValueError(f"kernel {kernel.shape} with groups={groups} does not fit {x.shape[-1]} input channels")
    formulation = choose_impl(kernel.shape, groups, impl, stride=stride)
    if formulation == "onednn" and not conv_onednn.applies(x, kernel, normalize_padding(padding)):
        formulation = choose_impl(kernel.shape, groups, "xla", stride=stride)
    if formulation == "onednn":
        y = conv_onednn.conv_onednn(x, kernel, stride=_pair(stride, "stride"), padding=normalize_padding(padding),
                                    groups=groups)
    elif formulation == "winograd":
        y = winograd_conv3x3(x, kernel, padding=normalize_padding(padding), m=_WINOGRAD_TILE)
    elif formulation == "split":
        cin, cout = kernel.shape[2], kernel.shape[3] // groups
        y = jnp.concatenate([
            conv2d(x[..., g * cin:(g + 1) * cin], kernel[..., g * cout:(g + 1) * cout], stride=stride, padding=padding,
                   impl="xla" if impl == "xla" else "auto")
            for g in range(groups)], axis=-1)
    else:
        fn = conv_taps if formulation == "taps" else conv_lax
        y = fn(x, kernel, stride=stride, padding=padding, groups=groups)
    return y if bias is None else y + bias


class Conv2d(nn.Module):
    """A torch-style `Conv2d` on NHWC inputs with params `kernel` [kh,kw,Cin/groups,Cout] and `bias`."""

    features: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: Padding = 0
    groups: int = 1
    use_bias: bool = True
    impl: str = "auto"
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        kh, kw = _pair(self.kernel_size, "kernel_size")
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1] // self.groups, self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        return conv2d(x, kernel, bias, stride=self.stride, padding=self.padding, groups=self.groups, impl=self.impl)


class Linear(nn.Module):
    """A torch-style `Linear`: params `weight` [out, in] (torch's own layout) and `bias` [out];
    y = x @ weight.T + bias.

    Why not `nn.Dense` (kernel [in, out]): a torch checkpoint's weight then loads without a
    transpose -- VGG16's first linear weight is 400 MB, and transposing it was most of the load
    time -- and XLA multiplies by the transposed operand at the same speed (measured: 50 ms
    against 48 ms for VGG16's classifier.0, forward + input gradient, batch 16, CPU).
    """

    features: int
    use_bias: bool = True
    weight_init: Callable = nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", self.weight_init, (self.features, x.shape[-1]))
        y = lax.dot_general(x, weight, (((x.ndim - 1,), (1,)), ((), ())))
        return y + self.param("bias", self.bias_init, (self.features,)) if self.use_bias else y

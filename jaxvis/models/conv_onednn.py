"""2-D convolutions on CPU through oneDNN (the library PyTorch's CPU convolutions use), as XLA FFI
custom calls (`csrc/onednn_ffi.cpp`, the extension module `jaxvis._onednn`).

Contract: `conv_onednn(x[B,H,W,Cin], kernel[kh,kw,Cin/groups,Cout], stride, padding=((top, bottom),
(left, right)), groups, dilation)` equals `lax.conv_general_dilated` with the same arguments (NHWC,
HWIO, zero padding >= 0, float32) to float32 rounding, in value and in both gradients: the input
gradient is oneDNN's backward-data convolution, the kernel gradient (unused by renders, where the
weights are constants) goes through lax. `available()` says whether the custom calls are built and
load (libdnnl.so.3 found, CPU backend); `applies(...)` whether a given conv can run here.

The weights are first reordered into the layout oneDNN's chosen algorithm wants, by a custom call
of their own: inside a render's loop the weights do not change, so XLA computes that once, outside
the loop. Leading batch dims (vmap) are folded into the batch by the C++ side.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxvis.native import custom_calls

__all__ = ["applies", "available", "conv_onednn"]

_FORWARD, _BACKWARD_DATA = 0, 1


def available() -> bool:
    """Whether the oneDNN custom calls are built, load and are registered, on the CPU backend
    (`JAXVIS_NATIVE_ONEDNN=0` turns them off)."""
    return jax.default_backend() == "cpu" and custom_calls.cpu_targets("onednn")


def applies(x, kernel, padding) -> bool:
    """Whether `conv_onednn` computes this conv: float32 operands, no negative padding, CPU, built."""
    return (x.dtype == jnp.float32 and kernel.dtype == jnp.float32 and x.ndim == 4
            and all(p >= 0 for side in padding for p in side) and available())


def _output_shape(x_shape, kernel_shape, stride, padding, dilation):
    (top, bottom), (left, right) = padding
    kh, kw, _, cout = kernel_shape
    out_h = (x_shape[1] + top + bottom - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    out_w = (x_shape[2] + left + right - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {kh}x{kw} conv with padding {padding} does not fit an input of {x_shape[1:3]}")
    return (x_shape[0], out_h, out_w, cout)


def _attributes(stride, padding, dilation, groups) -> np.ndarray:
    (top, bottom), (left, right) = padding
    return np.array([*stride, top, bottom, left, right, *dilation, groups], np.int64)


def _weights(kernel, kind: int, x_shape, y_shape, conv: np.ndarray):
    """The kernel in the layout of oneDNN's primitive for this conv (the kernel itself when that is HWIO)."""
    from jaxvis import _onednn

    floats = _onednn.packed_floats(kind, list(x_shape), list(y_shape), list(kernel.shape), conv.tolist())
    if floats == 0:
        return kernel
    return custom_calls.call("onednn", "pack", (floats,), kernel, conv=conv, x_shape=np.array(x_shape, np.int64),
                             y_shape=np.array(y_shape, np.int64), kind=np.int64(kind))


def _forward(x, kernel, stride, padding, dilation, groups):
    conv = _attributes(stride, padding, dilation, groups)
    y_shape = _output_shape(x.shape, kernel.shape, stride, padding, dilation)
    weights = _weights(kernel, _FORWARD, x.shape, y_shape, conv)
    return custom_calls.call("onednn", "forward", y_shape, x, weights, vmap_method="expand_dims", conv=conv,
                             kernel_shape=np.array(kernel.shape, np.int64), packed_batch=np.int64(x.shape[0]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, kernel, stride, padding, dilation, groups):
    return _forward(x, kernel, stride, padding, dilation, groups)


def _conv_fwd(x, kernel, stride, padding, dilation, groups):
    return _forward(x, kernel, stride, padding, dilation, groups), (x, kernel)


def _conv_bwd(stride, padding, dilation, groups, residuals, g):
    x, kernel = residuals
    conv = _attributes(stride, padding, dilation, groups)
    weights = _weights(kernel, _BACKWARD_DATA, x.shape, g.shape, conv)
    grad_x = custom_calls.call("onednn", "backward_data", x.shape, g, weights, vmap_method="expand_dims", conv=conv,
                               kernel_shape=np.array(kernel.shape, np.int64), packed_batch=np.int64(x.shape[0]))
    # the kernel gradient (unused by renders: XLA drops it there) through lax
    _, kernel_vjp = jax.vjp(lambda k: lax.conv_general_dilated(
        x, k, stride, padding, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups), kernel)
    return grad_x, kernel_vjp(g)[0]


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_onednn(x, kernel, *, stride=(1, 1), padding=((0, 0), (0, 0)), groups: int = 1, dilation=(1, 1)):
    """The conv as oneDNN custom calls (see the module docstring); `applies` must hold."""
    if x.ndim != 4 or kernel.ndim != 4 or x.shape[3] != kernel.shape[2] * groups or kernel.shape[3] % groups:
        raise ValueError(f"conv_onednn takes x[B,H,W,C] and kernel[kh,kw,C/groups,O], got {x.shape}, {kernel.shape}")
    stride, dilation = tuple(int(s) for s in stride), tuple(int(d) for d in dilation)
    padding = tuple(tuple(int(p) for p in side) for side in padding)
    return _conv(x, kernel, stride, padding, dilation, int(groups))

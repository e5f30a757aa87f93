"""Winograd convolutions F(m x m, 3 x 3): a stride-1 3x3 conv as a^2 batched matmuls (a = m + 2).

Contract: `winograd_conv3x3(x[B,H,W,Cin], kernel[3,3,Cin,Cout], padding=((top, bottom), (left,
right)), m=2|4)` equals `lax.conv_general_dilated` with stride 1 and that zero padding, to float32
rounding (F(4x4) rounds a few times coarser than F(2x2)), in value and in both gradients.

Why: on CPU XLA runs a large matmul several times faster (per multiply-add) than its own
convolution, and Winograd needs 2.25x (m = 2) or 4x (m = 4) fewer multiply-adds than the direct
conv, so the conv becomes a batch of large dots plus cheap elementwise transforms that XLA fuses.
The input gradient of a stride-1 3x3 conv is itself one (the cotangent, padded by 2 - pad, with
the kernel flipped and its channel axes swapped), so the backward pass is written the same way
instead of through XLA's conv backprop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["TILE_SIZES", "winograd_conv3x3"]

# Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2015): Y = A^T [(G g G^T) . (B^T d B)] A
_MATRICES = {
    2: (
        np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),  # B^T
        np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),  # G
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),  # A^T
    ),
    4: (
        np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64),
    ),
}
TILE_SIZES = tuple(_MATRICES)


def _combine(matrix, items):
    """[sum_j matrix[i, j] * items[j] for i]: a linear map over a Python list, zero terms skipped."""
    out = []
    for row in matrix:
        total = None
        for coefficient, item in zip(row, items):
            if coefficient == 0:
                continue
            term = item if coefficient == 1 else -item if coefficient == -1 else item * float(coefficient)
            total = term if total is None else total + term
        out.append(total)
    return out


def _strided(x, axis: int, start: int, count: int, step: int):
    """x[..., start : start + step*(count-1) + 1 : step, ...] along `axis`."""
    starts, limits, strides = [0] * x.ndim, list(x.shape), [1] * x.ndim
    starts[axis], limits[axis], strides[axis] = start, start + step * (count - 1) + 1, step
    return lax.slice(x, starts, limits, strides)


def _transformed_kernel(kernel, m: int):
    """G g G^T for every (Cin, Cout): [a*a, Cin, Cout], as one [a*a, 9] x [9, Cin*Cout] matmul: with the
    weights a jit argument (as in renders) the einsum or elementwise forms made the layer several times slower."""
    _, g, _ = _MATRICES[m]
    gg = jnp.asarray(np.kron(g, g), kernel.dtype)  # [(p, q), (i, j)] = G[p, i] G[q, j]
    u = lax.dot(gg, kernel.reshape(9, -1), precision=lax.Precision.HIGHEST)
    return u.reshape(-1, *kernel.shape[2:])


def _winograd(x, kernel, padding, m: int):
    """The conv in three steps, each one pass over memory: B^T d B on every tile (rows, then
    columns: two passes with the row pass materialized measured ~1.5-3x faster than one fused pass
    that re-reads every input a times), a*a dots, A^T M A (again rows, then columns)."""
    bt, _, at = _MATRICES[m]
    (top, bottom), (left, right) = padding
    batch, height, width, _ = x.shape
    cout, a = kernel.shape[3], m + 2
    out_h, out_w = height + top + bottom - 2, width + left + right - 2
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a 3x3 conv with padding {padding} does not fit an input of {height}x{width}")
    th, tw = -(-out_h // m), -(-out_w // m)
    rows, cols = m * th + 2, m * tw + 2  # the tiles read x_pad[m*r + i, m*c + j], i, j < a
    config = ((0, 0, 0), (top, rows - height - top, 0), (left, cols - width - left, 0), (0, 0, 0))
    padded = lax.pad(x, jnp.zeros((), x.dtype), config)
    # rows: [a(p), B, th, cols, Cin]; then columns: [a(p), a(q), B, th, tw, Cin]
    by_rows = lax.optimization_barrier(jnp.stack(_combine(bt, [_strided(padded, 1, i, th, m) for i in range(a)])))
    v = jnp.stack(_combine(bt, [_strided(by_rows, 3, j, tw, m) for j in range(a)]), axis=1)
    prod = lax.dot_general(v.reshape(a * a, -1, v.shape[-1]), _transformed_kernel(kernel, m),
                           (((2,), (1,)), ((0,), (0,))))  # [a*a, B*th*tw, Cout]
    prod = prod.reshape(a, a, batch, th, tw, cout)
    # rows: [m(u), a(q), B, th, tw, Cout]; then columns: [m(u), B, th, tw, m(v), Cout]
    by_rows = lax.optimization_barrier(jnp.stack(_combine(at, list(prod))))
    y = jnp.stack(_combine(at, [by_rows[:, q] for q in range(a)]), axis=-2)
    y = y.transpose(1, 2, 0, 3, 4, 5).reshape(batch, th * m, tw * m, cout)  # pixel (m*r + u, m*c + v)
    return y[:, :out_h, :out_w]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, padding, m):
    return _winograd(x, kernel, padding, m)


def _conv_fwd(x, kernel, padding, m):
    return _winograd(x, kernel, padding, m), (x, kernel)


def _conv_bwd(padding, m, residuals, g):
    x, kernel = residuals
    (top, bottom), (left, right) = padding
    # the input gradient of a stride-1 3x3 conv: the cotangent correlated with the flipped kernel,
    # channel axes swapped, padded by 2 - pad on each side (lax.pad crops where that is negative)
    flipped = kernel[::-1, ::-1].swapaxes(2, 3)
    grad_x = _winograd(g, flipped, ((2 - top, 2 - bottom), (2 - left, 2 - right)), m)
    # the weight gradient (unused by renders, where weights are constants) through lax
    _, kernel_vjp = jax.vjp(lambda k: lax.conv_general_dilated(
        x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")), kernel)
    return grad_x, kernel_vjp(g)[0]


_conv.defvjp(_conv_fwd, _conv_bwd)


def winograd_conv3x3(x, kernel, *, padding=((1, 1), (1, 1)), m: int = 2):
    """A stride-1 3x3 conv (NHWC x HWIO, explicit zero padding) as Winograd F(m x m, 3 x 3)."""
    if kernel.shape[:2] != (3, 3) or x.ndim != 4 or x.shape[3] != kernel.shape[2]:
        raise ValueError(f"winograd_conv3x3 takes x[B,H,W,C] and kernel[3,3,C,O], got {x.shape}, {kernel.shape}")
    if m not in _MATRICES:
        raise ValueError(f"tile size m must be one of {TILE_SIZES}, got {m}")
    padding = tuple(tuple(int(p) for p in side) for side in padding)
    return _conv(x, kernel, padding, m)

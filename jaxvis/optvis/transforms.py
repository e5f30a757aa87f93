"""Random image transforms applied before every forward pass (transformation robustness).

Contract: a transform maps `(key, image[H,W,C]) -> image[H',W',C]` for ONE image; it never clips.
`apply_batch(transform, keys[B], images[B,H,W,C])` vmaps it, so every filter of a batch gets its own
random draw. `compose(*ts)` chains transforms, splitting the key. Random transforms are built from
deterministic ones (`shift`, `affine`) with a drawn parameter, dm_pix style. All of them keep the
image size except `pad`, so the network's cost per step stays that of the render size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import ndimage

from jaxvis.native import custom_calls

__all__ = [
    "MAX_WARP_SCALE", "NAMED", "STANDARD", "affine", "apply_batch", "blur", "compose", "gaussian_kernel", "identity",
    "jitter", "native_warp_available", "pad", "random_jitter_scale_rotate",
    "random_scale_rotate", "shift", "warp",
]

Transform = Callable  # (key, image[H,W,C]) -> image



def _check_image(image):
    if image.ndim != 3:
        raise ValueError(f"a transform takes one image [H, W, C], got shape {image.shape}")


# --- deterministic building blocks -------------------------------------------------------------

def shift(image, dy, dx, *, mode: str = "wrap", cval: float = 0.5, bound: int | None = None):
    """out[y, x] = image[y - dy, x - dx]; sources outside the image by `mode` (wrap / reflect
    (numpy's, = OpenCV REFLECT_101) / constant). `dy`, `dx` may be traced; `bound` is a static
    upper bound of |dy|, |dx| (default: the image size - 1), which sets how much is padded."""
    _check_image(image)
    if mode == "wrap":
        return jnp.roll(image, (dy, dx), axis=(0, 1))
    height, width, _ = image.shape
    by = min(bound, height - 1) if bound is not None else height - 1
    bx = min(bound, width - 1) if bound is not None else width - 1
    pad = ((by, by), (bx, bx), (0, 0))
    padded = jnp.pad(image, pad, mode="reflect") if mode == "reflect" else jnp.pad(image, pad, constant_values=cval)
    return jax.lax.dynamic_slice(padded, (by - dy, bx - dx, 0), image.shape)


def affine(image, *, scale=1.0, angle_degrees=0.0, mode: str = "reflect", cval: float = 0.5):
    """Zoom by `scale` and rotate by `angle_degrees` (counter-clockwise) about the centre, keeping
    the size; bilinear sampling. `scale` and `angle_degrees` may be traced."""
    theta = jnp.deg2rad(angle_degrees)
    return _affine(image, jnp.cos(theta) / scale, jnp.sin(theta) / scale, mode=mode, cval=cval)


def _affine(image, cos_over_scale, sin_over_scale, *, mode: str, cval: float):
    """Sample `image` at the inverse-mapped positions of a rotation+zoom about the centre."""
    _check_image(image)
    height, width, _ = image.shape
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    yy, xx = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32) - cy, jnp.arange(width, dtype=jnp.float32) - cx, indexing="ij"
    )
    # Inverse map, output pixel -> source position; positive angles turn counter-clockwise (OpenCV).
    src_y = cos_over_scale * yy + sin_over_scale * xx + cy
    src_x = -sin_over_scale * yy + cos_over_scale * xx + cx
    nd_mode = {"reflect": "mirror", "wrap": "wrap", "constant": "constant"}[mode]
    sample = lambda plane: ndimage.map_coordinates(plane, [src_y, src_x], order=1, mode=nd_mode, cval=cval)
    return jax.vmap(sample, in_axes=2, out_axes=2)(image)


# --- one bilinear resampling for jitter + zoom + rotation (the standard set's hot path) ---------
#
# `jax.scipy.ndimage.map_coordinates` is exact, but its gradient is a scatter-add, which XLA runs
# serially on CPU, at a large part of a MobileNetV2 step. `warp` gathers the four corners of each
# sample (corners outside the image read `cval`, as after lucid's constant padding) and computes the
# exact transposed gradient as a gather too: each image pixel sums the output pixels whose sample
# lands within one pixel of it, found by inverting the affine map. (A reflect-padded variant is far
# slower in the backward pass: XLA CPU compiles the gather-sum followed by the reflect-pad transpose
# badly.)


@jax.custom_batching.custom_vmap
def _gather_rows(table, index):
    """table[index] for table [N, C] and int32 index [K]. Under vmap it flattens the batch into one
    plain gather: XLA's CPU gather with batching dimensions is several times slower per row."""
    return jnp.take(table, index, axis=0)


@_gather_rows.def_vmap
def _gather_rows_vmap(axis_size, in_batched, table, index):
    table_batched, index_batched = in_batched
    if not table_batched:
        return jnp.take(table, index, axis=0), True
    rows = table.shape[1]
    if not index_batched:
        index = jnp.broadcast_to(index, (axis_size,) + index.shape)
    index = index + (jnp.arange(axis_size, dtype=index.dtype) * rows)[:, None]
    flat = table.reshape((axis_size * rows,) + table.shape[2:])
    return jnp.take(flat, index.reshape(-1), axis=0).reshape(index.shape + table.shape[2:]), True


def _source(qy, qx, m, offset):
    """Source position of output pixel (qy, qx): m @ q + offset."""
    return m[0, 0] * qy + m[0, 1] * qx + offset[0], m[1, 0] * qy + m[1, 1] * qx + offset[1]


def _tent(d):
    return jnp.maximum(1.0 - jnp.abs(d), 0.0)


def _grid(height: int, width: int):
    return jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij")


def _inside(y, x, height: int, width: int):
    return (y >= 0) & (y < height) & (x >= 0) & (x < width)


def _flat_index(y, x, width: int, height: int):
    return (jnp.clip(y, 0, height - 1) * width + jnp.clip(x, 0, width - 1)).astype(jnp.int32).reshape(-1)


def native_warp_available() -> bool:
    """Whether the C++ warp (csrc/warp_ffi.cpp, an XLA FFI custom call) is built and registered for CPU.

    On CPU `_warp` runs as that custom call: inside the render step XLA fuses the gathers of the
    pure-JAX version into their consumers (the stem convolution's padding forward, the colour
    mixing's gradient backward) and recomputes them per consumed element, and a custom call is a
    fusion boundary (see benchmarks/bench_native.py's `warp` section for the measured step times).
    The JAX version below stays the definition, the GPU / TPU path and the tests' reference.
    `JAXVIS_NATIVE_WARP=0` selects the JAX version on CPU too."""
    return custom_calls.cpu_targets("warp")


def _use_native_warp(image) -> bool:
    return custom_calls.usable("warp", image)


def _native_warp_call(name: str, like, *args, **attributes):
    return custom_calls.call("warp", name, like.shape, *args, **attributes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _warp(image, m, offset, cval):
    return _warp_primal(image, m, offset, cval)


def _warp_primal(image, m, offset, cval):
    if _use_native_warp(image):
        return _native_warp_call("forward", image, image, m.astype(jnp.float32), offset.astype(jnp.float32),
                                 cval=np.float32(cval))
    return _warp_forward(image, m, offset, cval)


def _warp_forward(image, m, offset, cval):
    height, width, channels = image.shape
    sy, sx = _source(*_grid(height, width), m, offset)
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    flat = image.reshape(height * width, channels)

    def corner(y, x):
        values = _gather_rows(flat, _flat_index(y, x, width, height)).reshape(height, width, channels)
        return jnp.where(_inside(y, x, height, width)[..., None], values, jnp.asarray(cval, image.dtype))

    return ((1 - wy) * ((1 - wx) * corner(y0, x0) + wx * corner(y0, x0 + 1))
            + wy * ((1 - wx) * corner(y0 + 1, x0) + wx * corner(y0 + 1, x0 + 1)))


def _warp_fwd(image, m, offset, cval):
    return _warp_primal(image, m, offset, cval), (m, offset)


def _warp_bwd(cval, residuals, g):
    m, offset = residuals
    if _use_native_warp(g):
        grad = _native_warp_call("backward", g, g, m.astype(jnp.float32), offset.astype(jnp.float32))
        return grad, jnp.zeros_like(m), jnp.zeros_like(offset)
    return _warp_gather_gradient(m, offset, g), jnp.zeros_like(m), jnp.zeros_like(offset)


def _warp_gather_gradient(m, offset, g):
    """The exact transpose of `_warp_forward`, as gathers (no scatter): see the section comment."""
    height, width, channels = g.shape
    py, px = _grid(height, width)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    ry, rx = py - offset[0], px - offset[1]
    q0y = jnp.floor((m[1, 1] * ry - m[0, 1] * rx) / det)  # the output pixel whose sample lands at p
    q0x = jnp.floor((-m[1, 0] * ry + m[0, 0] * rx) / det)
    # Outputs q with |m (q - q0)|_inf < 1 lie within |m^-1| * sqrt(2) of q0; `m^-1`'s scale is at
    # most MAX_WARP_SCALE (checked where the zoom tables are built), so offsets -1..2 cover them.
    flat = g.reshape(height * width, channels)

    # The taps are summed in a loop because a loop is a fusion boundary XLA CPU keeps (an
    # optimization_barrier is removed before fusion): unrolled, the 16 gathers were fused into the
    # colour mixing's gradient, which reads each channel 3 times (render step 4.1x -> 1.43x bare).
    def add_tap(tap, grad):
        qy, qx = q0y + (tap // 4 - 1), q0x + (tap % 4 - 1)
        sy, sx = _source(qy, qx, m, offset)
        weight = jnp.where(_inside(qy, qx, height, width), _tent(sy - py) * _tent(sx - px), 0.0)
        return grad + weight[..., None] * _gather_rows(flat, _flat_index(qy, qx, width, height)).reshape(
            height, width, channels
        )

    return jax.lax.fori_loop(0, 16, add_tap, jnp.zeros((height, width, channels), g.dtype))


_warp.defvjp(_warp_fwd, _warp_bwd)

MAX_WARP_SCALE = 1.4  # zoom factors up to this keep the gradient's 4x4 window exact


def warp(image, cos_over_scale, sin_over_scale, dy=0.0, dx=0.0, *, cval: float = 0.5):
    """Rotate+zoom about the centre (as `affine`), then shift by (dy, dx) pixels, in ONE bilinear
    resampling; samples outside the image read `cval`. Differentiable in `image` only, for zooms
    (1 / |cos_over_scale + i sin_over_scale|) up to MAX_WARP_SCALE."""
    _check_image(image)
    height, width, _ = image.shape
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    m = jnp.stack([jnp.stack([cos_over_scale, sin_over_scale]), jnp.stack([-sin_over_scale, cos_over_scale])]).astype(
        jnp.float32
    )
    # out[q] = rotated[q - d]:  source = m @ (q - d - c) + c = m @ q + offset
    centre_y, centre_x = -dy - cy, -dx - cx
    offset = jnp.stack([m[0, 0] * centre_y + m[0, 1] * centre_x + cy,
                        m[1, 0] * centre_y + m[1, 1] * centre_x + cx]).astype(jnp.float32)
    return _warp(image, m, offset, float(cval))


def _offset_table(cos_table, sin_table, shift: int, height: int, width: int) -> np.ndarray:
    """m @ (-a - c) + c for every table entry and integer shift a in [-shift, shift]^2, float32
    [entries, 2 shift + 1, 2 shift + 1, 2] (host arithmetic in float64)."""
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    a = np.arange(-shift, shift + 1, dtype=np.float64)
    ty = (-a - cy)[None, :, None]
    tx = (-a - cx)[None, None, :]
    c = np.asarray(cos_table, np.float32).astype(np.float64)[:, None, None]
    s = np.asarray(sin_table, np.float32).astype(np.float64)[:, None, None]
    return np.stack([c * ty + s * tx + cy, -s * ty + c * tx + cx], axis=-1).astype(np.float32)


def _random_affine(scales, angles_degrees, mode, jitter_before: int = 0, jitter_after: int = 0):
    """Zoom and rotation drawn from tables whose cos/sin are computed here, on the host, in float64:
    traced trigonometry may round differently from one compiled program to another (e.g. sharded
    or not), and over many Adam steps such 1-ulp differences grow into visibly different images.
    With `mode="constant"`, integer jitters drawn before and after are folded into the same
    resampling (`warp`)."""
    scales = np.asarray(scales, np.float64)
    theta = np.deg2rad(np.asarray(angles_degrees, np.float64))
    # NumPy, not jnp: these are built at import (STANDARD), before a multi-process run may initialize JAX.
    cos_table = (np.cos(theta)[None, :] / scales[:, None]).reshape(-1).astype(np.float32)
    sin_table = (np.sin(theta)[None, :] / scales[:, None]).reshape(-1).astype(np.float32)
    n_scales, n_angles = len(scales), len(theta)
    if mode != "constant" and (jitter_before or jitter_after):
        raise ValueError("jitter folded into the resampling needs mode='constant'")
    if mode == "constant" and scales.max() > MAX_WARP_SCALE:
        raise ValueError(f"zoom factors above {MAX_WARP_SCALE} are not supported, got {scales.max()}")

    def apply(key, image):
        key_scale, key_angle, key_before, key_after = jax.random.split(key, 4)
        index = jax.random.randint(key_scale, (), 0, n_scales) * n_angles + jax.random.randint(
            key_angle, (), 0, n_angles
        )
        cos_s, sin_s = jnp.asarray(cos_table)[index], jnp.asarray(sin_table)[index]
        if mode != "constant":
            return _affine(image, cos_s, sin_s, mode=mode, cval=0.5)
        before = jax.random.randint(key_before, (2,), -jitter_before, jitter_before + 1).astype(jnp.float32)
        after = jax.random.randint(key_after, (2,), -jitter_after, jitter_after + 1)
        # out = J_after(A(J_before(x))):  out[q] = x[m (q - after - c) + c - before], the part that
        # multiplies by the drawn table entry tabulated on the host as well (see above).
        table = _offset_table(cos_table, sin_table, jitter_after, image.shape[0], image.shape[1])
        offset = jnp.asarray(table)[index, after[0] + jitter_after, after[1] + jitter_after] - before
        m = jnp.stack([jnp.stack([cos_s, sin_s]), jnp.stack([-sin_s, cos_s])])
        return _warp(image, m, offset, 0.5)

    return apply


def gaussian_kernel(sigma: float) -> jnp.ndarray:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _separable_filter(image, kernel):
    """Correlate rows and columns with a 1-D kernel, reflect (REFLECT_101) borders."""
    radius = (kernel.shape[0] - 1) // 2
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = jnp.pad(image, pad, mode="reflect")
        size = image.shape[axis]
        image = sum(kernel[i] * jax.lax.slice_in_dim(padded, i, i + size, axis=axis) for i in range(kernel.shape[0]))
    return image


# --- transforms (key, image) -> image ----------------------------------------------------------

def pad(width: int, *, mode: str = "constant", cval: float = 0.5) -> Transform:
    """Pad every side by `width` (lucid pads before jittering to hide the borders)."""

    def apply(key, image):
        _check_image(image)
        spec = ((width, width), (width, width), (0, 0))
        return jnp.pad(image, spec, mode="reflect") if mode == "reflect" else jnp.pad(image, spec, constant_values=cval)

    return apply


def jitter(max_shift: int, *, mode: str = "wrap", cval: float = 0.5) -> Transform:
    """Shift by a random integer in [-max_shift, max_shift] on each axis."""

    def apply(key, image):
        dy, dx = jax.random.randint(key, (2,), -max_shift, max_shift + 1)
        return shift(image, dy, dx, mode=mode, cval=cval, bound=max_shift)

    return apply


def random_scale_rotate(
    scales: Sequence[float], angles_degrees: Sequence[float], *, mode: str = "reflect"
) -> Transform:
    """Zoom and rotate in ONE resampling (one blur instead of two), each drawn uniformly."""
    return _random_affine(scales, angles_degrees, mode)


def random_jitter_scale_rotate(jitter_before: int, scales: Sequence[float], angles_degrees: Sequence[float],
                               jitter_after: int) -> Transform:
    """`compose(jitter(jitter_before), random_scale_rotate(...), jitter(jitter_after))` as ONE bilinear
    resampling whose gradient needs no scatter (see `warp`); samples outside the image read grey
    (0.5), as after lucid's constant padding. Equal to the composition (mode="constant") except
    near the borders, where the stages' roundings to the padded grid differ."""
    return _random_affine(scales, angles_degrees, "constant", jitter_before, jitter_after)


def blur(sigma: float) -> Transform:
    """Gaussian blur (deterministic; the key is ignored)."""
    kernel = gaussian_kernel(sigma)

    def apply(key, image):
        _check_image(image)
        return _separable_filter(image, kernel)

    return apply


def compose(*transforms: Transform) -> Transform:
    """Apply `transforms` in order, each with its own key."""

    def apply(key, image):
        for key_i, transform in zip(jax.random.split(key, max(len(transforms), 1)), transforms):
            image = transform(key_i, image)
        return image

    return apply


def identity() -> Transform:
    return lambda key, image: image


def apply_batch(transform: Transform, keys, images):
    """Apply `transform` to each image of `images[B,H,W,C]` with its own key of `keys[B]`."""
    return jax.vmap(transform)(keys, images)


# lucid's standard_transforms, with two changes: no padding of the network's input (12 px of it would
# make every step cost as much as a 1.4x larger image at 128 px; grey shows only where the jittered,
# rotated image leaves the frame), and jitter, scale, rotation and jitter drawn as lucid draws them
# but applied in one resampling.
STANDARD = random_jitter_scale_rotate(8, [1 + (i - 5) / 50.0 for i in range(11)], list(range(-10, 11)), 4)

NAMED = {"standard": STANDARD, "jitter": jitter(16, mode="reflect"), "none": identity()}

"""Random image transforms applied before every forward pass (transformation robustness).

Contract: a transform maps `(key, image[H,W,C]) -> image[H',W',C]` for ONE image; it never clips.
`apply_batch(transform, keys[B], images[B,H,W,C])` vmaps it, so every filter of a batch gets its own
random draw. `compose(*ts)` chains transforms, splitting the key. Random transforms are built from
deterministic ones (`shift`, `affine`) with a drawn parameter, dm_pix style. All of them keep the
image size except `pad`, so the network's cost per step stays that of the render size.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import ndimage

Transform = Callable  # (key, image[H,W,C]) -> image

_PAD_MODES = {"wrap": "wrap", "reflect": "reflect", "constant": "constant"}


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
    yy, xx = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) - cy, jnp.arange(width, dtype=jnp.float32) - cx, indexing="ij")
    # Inverse map, output pixel -> source position; positive angles turn counter-clockwise (OpenCV).
    src_y = cos_over_scale * yy + sin_over_scale * xx + cy
    src_x = -sin_over_scale * yy + cos_over_scale * xx + cx
    nd_mode = {"reflect": "mirror", "wrap": "wrap", "constant": "constant"}[mode]
    sample = lambda plane: ndimage.map_coordinates(plane, [src_y, src_x], order=1, mode=nd_mode, cval=cval)
    return jax.vmap(sample, in_axes=2, out_axes=2)(image)


def _random_affine(scales, angles_degrees, mode):
    """Zoom and rotation drawn from tables whose cos/sin are computed here, on the host, in float64:
    traced trigonometry may round differently from one compiled program to another (e.g. sharded
    or not), and over many Adam steps such 1-ulp differences grow into visibly different images."""
    scales = np.asarray(scales, np.float64)
    theta = np.deg2rad(np.asarray(angles_degrees, np.float64))
    # NumPy, not jnp: these are built at import (STANDARD), before a multi-process run may initialize JAX.
    cos_table = (np.cos(theta)[None, :] / scales[:, None]).reshape(-1).astype(np.float32)
    sin_table = (np.sin(theta)[None, :] / scales[:, None]).reshape(-1).astype(np.float32)
    n_scales, n_angles = len(scales), len(theta)

    def apply(key, image):
        key_scale, key_angle = jax.random.split(key)
        index = jax.random.randint(key_scale, (), 0, n_scales) * n_angles + jax.random.randint(key_angle, (), 0, n_angles)
        return _affine(image, jnp.asarray(cos_table)[index], jnp.asarray(sin_table)[index], mode=mode, cval=0.5)

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


def random_scale(scales: Sequence[float], *, mode: str = "reflect") -> Transform:
    """Zoom by a scale drawn uniformly from `scales`, keeping the size."""
    return _random_affine(scales, [0.0], mode)


def random_rotate(angles_degrees: Sequence[float], *, mode: str = "reflect") -> Transform:
    """Rotate by an angle drawn uniformly from `angles_degrees`, keeping the size."""
    return _random_affine([1.0], angles_degrees, mode)


def random_scale_rotate(scales: Sequence[float], angles_degrees: Sequence[float], *, mode: str = "reflect") -> Transform:
    """Zoom and rotate in ONE resampling (one blur instead of two), each drawn uniformly."""
    return _random_affine(scales, angles_degrees, mode)


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


# lucid's standard_transforms, with two changes: no constant padding (12 px of it would make every
# step cost as much as a 1.4x larger image at 128 px; reflect-mode borders serve the same purpose),
# and scale and rotation drawn from the same tables but applied in one resampling, not two.
STANDARD = compose(
    jitter(8, mode="reflect"),
    random_scale_rotate([1 + (i - 5) / 50.0 for i in range(11)], list(range(-10, 11))),
    jitter(4, mode="reflect"),
)

NAMED = {"standard": STANDARD, "jitter": jitter(16, mode="reflect"), "none": identity()}

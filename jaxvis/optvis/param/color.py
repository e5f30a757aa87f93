"""Colour parameterization: decorrelated latent channels -> RGB, and the valid-range squashing.

Contract: functions map `[B,H,W,C]` to `[B,H,W,C]`, channel-wise, with exact inverses, so an image
can be turned back into a latent after an octave upscale.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "COLOR_MATRIX", "decorrelated_to_rgb", "offset_range", "offset_range_inverse", "rgb_to_decorrelated",
    "sigmoid_range", "sigmoid_range_inverse",
]

# Square root of ImageNet's RGB colour correlation (lucid's constant), normalized so that its
# largest column has norm 1. Optimizing in this basis decorrelates the colour channels, which keeps
# rendered images from drifting into saturated single-channel noise.
_COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32
)
COLOR_MATRIX = _COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(_COLOR_CORRELATION_SVD_SQRT, axis=0))
_COLOR_MATRIX_INVERSE = np.linalg.inv(COLOR_MATRIX).astype(np.float32)


def _mix(latent, matrix: np.ndarray):
    """latent @ matrix.T over the channel axis, written per output channel as scalar multiply-adds
    of channel slices, then stacked. Why not a 3x3 `dot`: it kept XLA from fusing the FFT's
    transpose, this and the sigmoid (about twice as slow per step on CPU). Why not broadcast
    [3]-vector constants: their gradient is a reduction over the channel axis, which XLA ran as
    three separate reduce passes over materialized constant broadcasts."""
    channels = [latent[..., k] for k in range(matrix.shape[1])]
    mixed = [sum(float(matrix[c, k]) * channels[k] for k in range(matrix.shape[1])) for c in range(matrix.shape[0])]
    return jnp.stack(mixed, axis=-1)


def decorrelated_to_rgb(latent):
    """Latent channels in the decorrelated basis -> RGB latent (3 channels only)."""
    return _mix(latent, COLOR_MATRIX)


def rgb_to_decorrelated(latent):
    """RGB latent -> decorrelated basis (the inverse; used when params are made from an image).

    A `dot`, not `_mix`: it runs once per octave, not per step, and a dot is a fusion boundary.
    Written as `_mix`, XLA fused the valid range's inverse (two logs) into each of the mixed
    channels, recomputing it three times (about four times slower)."""
    return jnp.einsum("...k,ck->...c", latent, jnp.asarray(_COLOR_MATRIX_INVERSE))


_EPS = 1e-4


def sigmoid_range(latent):
    """Latent -> [0, 1] through a sigmoid: the image is always valid, gradients never vanish at a clip."""
    return jax.nn.sigmoid(latent)


def sigmoid_range_inverse(images):
    images = jnp.clip(images, _EPS, 1 - _EPS)
    return jnp.log(images) - jnp.log1p(-images)


def offset_range(latent):
    """Latent + 0.5: unconstrained during optimization, clipped to [0, 1] only when saved (fastai's
    FilterVisualizer)."""
    return latent + 0.5


def offset_range_inverse(images):
    return images - 0.5

"""Image parameterizations: what the optimizer changes, and how it becomes an image.

Contract: an `ImageParam(init, to_image, from_image)` is a triple of pure functions.
`init(key, batch, height, width, channels)` returns params (a pytree; plain arrays);
`to_image(params)` returns `images[B,H,W,C]` in display space (RGB or N-channel, nominally
[0, 1]; exactly in [0, 1] for `valid_range="sigmoid"`); `from_image(images)` returns params that
reproduce `images` (up to the valid range), which is how octave scaling restarts at a new size.

`image_param(spatial="fft", decorrelate=True, valid_range="sigmoid")` is lucid's default;
`image_param("pixel", decorrelate=False, valid_range="offset")` is fastai FilterVisualizer's plain pixels;
`valid_range="none"` is the identity (the image is the latent itself: FilterVisualizer's and
keras-vis's unconstrained tensor).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvis.errors import unknown_name
from jaxvis.optvis.param import color, fused, spatial

SPATIAL = {"fft": spatial.fft, "pixel": spatial.pixel}
VALID_RANGES = {
    "sigmoid": (color.sigmoid_range, color.sigmoid_range_inverse),
    "offset": (color.offset_range, color.offset_range_inverse),
    "none": (lambda latent: latent, lambda images: images),  # unconstrained; clipped only when saved
}


class ImageParam(NamedTuple):
    init: Callable
    to_image: Callable
    from_image: Callable


def image_param(
    spatial_kind: str = "fft",
    *,
    decorrelate: bool = True,
    valid_range: str = "sigmoid",
    init_std: float = 0.01,
    decay_power: float = 1.0,
) -> ImageParam:
    """Compose a spatial parameterization, optional colour decorrelation and a valid range.

    Colour decorrelation applies to 3-channel images only; gray and N-channel images skip it.
    """
    if spatial_kind not in SPATIAL:
        raise unknown_name("parameterization", spatial_kind, SPATIAL)
    if valid_range not in VALID_RANGES:
        raise unknown_name("valid range", valid_range, VALID_RANGES)
    space = SPATIAL[spatial_kind](decay_power) if spatial_kind == "fft" else SPATIAL[spatial_kind]()
    squash, unsquash = VALID_RANGES[valid_range]
    lucid_default = spatial_kind == "fft" and decorrelate and valid_range == "sigmoid"

    def to_image(params):
        if lucid_default and fused.usable(params):  # one C++ custom call on CPU (param/fused.py)
            return fused.to_image(params, decay_power)
        latent = space.to_latent(params)
        if decorrelate and latent.shape[-1] == 3:
            latent = color.decorrelated_to_rgb(latent)
        return squash(latent)

    def from_image(images):
        latent = unsquash(images)
        if decorrelate and latent.shape[-1] == 3:
            latent = color.rgb_to_decorrelated(latent)
        return space.from_latent(latent)

    def init(key, batch, height, width, channels):
        return space.init(key, batch, height, width, channels, init_std)

    return ImageParam(init, to_image, from_image)


def init_uniform(key, batch, height, width, channels, *, param: ImageParam, low: float, high: float):
    """Params of `param` whose image is uniform noise in [low, high] (fastai's FilterVisualizer starts
    from [150, 180] / 255)."""
    images = jax.random.uniform(key, (batch, height, width, channels), jnp.float32, low, high)
    return param.from_image(images)


__all__ = ["ImageParam", "image_param", "init_uniform", "SPATIAL", "VALID_RANGES"]

"""Keras's image preprocessing layers that compute at inference (Resizing, CenterCrop) as graph ops.

Contract: as `jaxvis.models.keras.ops`; inputs are NHWC batches. The arithmetic is Keras 3's JAX
backend's (`keras.src.backend.jax.image.resize`, `image_utils.smart_resize`): an optional centred
crop or symmetric constant pad to the target aspect ratio, then `jax.image.resize`. The random
augmentation layers are the identity at inference and are plain `Identity` ops.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxvis.errors import JaxvisError

__all__ = ["INTERPOLATIONS", "CenterCrop", "Resize", "resize_like_keras"]

INTERPOLATIONS = ("bilinear", "nearest", "lanczos3", "lanczos5", "bicubic")


def _check_image(name, cls, x):
    if x.ndim != 4:
        raise JaxvisError(f"Keras layer {name!r} ({cls}) takes [batch, height, width, channels] inputs, "
                          f"got shape {tuple(x.shape)}")


def resize_like_keras(x, height, width, *, interpolation="bilinear", antialias=False, crop_to_aspect_ratio=False,
                      pad_to_aspect_ratio=False, fill_value=0.0):
    """Keras 3's `backend.jax.image.resize` for NHWC `x` (static shapes)."""
    _, h, w, c = x.shape
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
    return jax.image.resize(x, (x.shape[0], height, width, c), method=interpolation, antialias=antialias)


@dataclasses.dataclass(frozen=True)
class Resize:
    """Resizing: to (height, width) with Keras's interpolation, antialias and aspect-ratio options."""

    height: int
    width: int
    interpolation: str
    antialias: bool
    crop_to_aspect_ratio: bool
    pad_to_aspect_ratio: bool
    fill_value: float

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        _check_image(name, "Resizing", xs[0])
        return resize_like_keras(xs[0], self.height, self.width, interpolation=self.interpolation,
                                 antialias=self.antialias, crop_to_aspect_ratio=self.crop_to_aspect_ratio,
                                 pad_to_aspect_ratio=self.pad_to_aspect_ratio, fill_value=self.fill_value)


@dataclasses.dataclass(frozen=True)
class CenterCrop:
    """CenterCrop: the centred (height, width) window; an input smaller on either side is instead
    cropped to the target aspect ratio and resized bilinearly (Keras's `smart_resize`)."""

    height: int
    width: int

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        _check_image(name, "CenterCrop", x)
        dh, dw = x.shape[1] - self.height, x.shape[2] - self.width
        if dh >= 0 and dw >= 0:
            return x[:, dh // 2:dh // 2 + self.height, dw // 2:dw // 2 + self.width, :]
        return resize_like_keras(x, self.height, self.width, crop_to_aspect_ratio=True)

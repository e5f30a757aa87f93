"""Keras's image preprocessing layers that compute at inference (Resizing, CenterCrop) as graph ops.

Contract: as `jaxvis.models.keras.ops` (frozen dataclasses of the layers' settings). Lowered onto
the IR's `image_resize` (`jaxvis.models.graph.ops.image_resize`: Keras 3's JAX backend's
`image.resize`, an optional centred crop or symmetric constant pad to the target aspect ratio, then
`jax.image.resize`). The random augmentation layers are the identity at inference and are plain
`Identity` ops.
"""

from __future__ import annotations

import dataclasses

__all__ = ["INTERPOLATIONS", "CenterCrop", "Resize"]

INTERPOLATIONS = ("bilinear", "nearest", "lanczos3", "lanczos5", "bicubic")


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


@dataclasses.dataclass(frozen=True)
class CenterCrop:
    """CenterCrop: the centred (height, width) window; an input smaller on either side is instead
    cropped to the target aspect ratio and resized bilinearly (Keras's `smart_resize`)."""

    height: int
    width: int

    weight_names = ()

"""Where the optimizer acts: the tensor gradient ascent changes, and how it maps to display images.

Contract: a space is a pair of pure maps `(to_display, from_display)` between the optimized tensor
`[B,H,W,C]` and display images `[B,H,W,C]` (RGB in [0, 1]); they are exact inverses (up to float
rounding) and act per pixel, so resizes and blurs commute with them up to those maps.

- `"display"`: the tensor is the display image scaled to `display_range`: display values 0 and 1
  are `low` and `high` of the tensor. `(0, 1)` (the default) is the identity: lucid optimizes the
  image itself. keras-vis's `input_range=(0, 255)` is `display_range=(0, 255)`.
- `"input"`: the tensor is the model's input, `spec.preprocess(display)` (ImageNet mean/std for
  torchvision models, BGR minus the mean pixel for Keras "caffe" models): FilterVisualizer
  optimizes `val_tfms(img)`, so its learning rate and weight decay are in these units.
  `display_range` is not used.

Learning rates, weight decay, regularizer weights and the initial noise's spread are in the
tensor's units; `init_range` and every saved image are in display units.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.spec import ModelSpec

SPACES = ("display", "input")
IDENTITY_RANGE = (0.0, 1.0)


def is_identity(space: str, display_range) -> bool:
    """Whether the tensor is the display image itself (no map is composed in: same programs as before)."""
    return space == "display" and tuple(float(v) for v in display_range) == IDENTITY_RANGE


def space_maps(space: str, display_range, spec: ModelSpec | None) -> tuple[Callable, Callable]:
    """`(to_display, from_display)` of a space (module docstring)."""
    if space not in SPACES:
        raise unknown_name("parameter space", space, SPACES)
    if space == "input":
        if spec is None:
            raise JaxvisError("the input space needs the model's preprocessing (a ModelSpec)")
        return spec.preprocess.invert, spec.preprocess
    low, high = (float(v) for v in display_range)
    if not high > low:
        raise JaxvisError(f"display range must have high > low, got {display_range}")
    if (low, high) == IDENTITY_RANGE:
        return (lambda tensor: tensor), (lambda images: images)
    return (lambda tensor: (tensor - low) / (high - low)), (lambda images: low + (high - low) * images)


def to_tensor(images, space: str, display_range, spec: ModelSpec | None):
    """Display images -> the space's tensor."""
    return space_maps(space, display_range, spec)[1](jnp.asarray(images))


__all__ = ["SPACES", "is_identity", "space_maps", "to_tensor"]

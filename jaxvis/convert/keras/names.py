"""Keras's naming rules, which its weight files depend on."""

from __future__ import annotations

import re

__all__ = ["snake_case"]


def snake_case(name: str) -> str:
    """Keras's `to_snake_case` (`DepthwiseConv2D` -> `depthwise_conv2d`, `ReLU` -> `re_lu`)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()

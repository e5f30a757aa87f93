"""The 1000 ImageNet-1k class names in index order, as torchvision names them (`_IMAGENET_CATEGORIES`).

Contract: `imagenet_class_names()[i]` is the name of logit `i` of every ImageNet classifier in the
zoo; the names are unique (torchvision disambiguates e.g. "crane bird" / "crane").
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["N_CLASSES", "imagenet_class_names"]

N_CLASSES = 1000


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The class names, read once from the package data file `jaxvis/models/data/imagenet_classes.txt`."""
    text = resources.files("jaxvis.models").joinpath("data").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != N_CLASSES:
        raise RuntimeError(f"jaxvis/models/data/imagenet_classes.txt holds {len(names)} names, not {N_CLASSES}")
    return names

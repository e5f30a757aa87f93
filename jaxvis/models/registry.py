"""The model zoo's registry: a name -> builder map, and `load_model` that every entry point uses.

A builder takes keyword options (e.g. `weights=path`) and returns a `ModelSpec`. Families register
themselves in their own module with `@register("name")`; `jaxvis.models.__init__` imports them.
"""

from __future__ import annotations

from typing import Callable

from jaxvis.errors import unknown_name
from jaxvis.models.spec import ModelSpec

_BUILDERS: dict[str, Callable[..., ModelSpec]] = {}
_DESCRIPTIONS: dict[str, str] = {}

DEFAULT_MODEL = "mobilenet_v2"


def register(name: str, description: str = ""):
    """Decorator adding a builder to the zoo under `name`."""

    def add(builder):
        _BUILDERS[name] = builder
        _DESCRIPTIONS[name] = description or (builder.__doc__ or "").strip().splitlines()[0]
        return builder

    return add


def model_names() -> tuple[str, ...]:
    return tuple(sorted(_BUILDERS))


def describe_models() -> dict[str, str]:
    return {name: _DESCRIPTIONS[name] for name in model_names()}


def load_model(name: str = DEFAULT_MODEL, **options) -> ModelSpec:
    """The zoo model `name` (unknown names get an error listing the valid ones)."""
    if name not in _BUILDERS:
        raise unknown_name("model", name, model_names())
    return _BUILDERS[name](**options)

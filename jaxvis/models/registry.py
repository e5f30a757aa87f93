"""The model zoo: one `ZooEntry` per name, carrying what it takes to use that model's weights.

Contract: families register their builders in their own module with `@register(name, ...)`
(`jaxvis.models.__init__` imports them all); `entry(name)` returns the `ZooEntry` or raises a
`JaxvisError` listing the valid names; `entry.build(**options)` returns a `ModelSpec`. Callers
ask the entry what they need to know (does it take a weight file, from which framework, what
input and preprocessing) instead of inspecting the builder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jaxvis.errors import unknown_name
from jaxvis.models.spec import UNIT, ModelSpec, Preprocess

__all__ = ["DEFAULT_MODEL", "FRAMEWORKS", "ZooEntry", "describe_models", "entries", "entry", "model_names", "register"]

DEFAULT_MODEL = "mobilenet_v2"
FRAMEWORKS = ("torchvision", "pytorch", "keras", "jaxvis")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """A zoo model: its builder and everything needed to use a set of its weights.

    Attributes:
      name: the zoo name (`jaxvis models` lists them).
      builder: `builder(**options) -> ModelSpec`; `weights=<file>` among the options when
        `takes_weights`.
      description: one line for `jaxvis models`.
      framework: where its weight files come from: "torchvision" / "pytorch" (state_dicts),
        "keras" (Keras files) or "jaxvis" (no weight files).
      module_class: the Flax module class its specs use; a converted `.jaxvis` file of this entry
        rebuilds it from the class and its saved fields.
      takes_weights: whether `weights=<file>` (and `--arch NAME` for a weights-only file) applies.
      default_weights: where the weights come from when none are given (None: random init).
      preprocess: display images in [0, 1] -> the model's input.
      input_shape: the (H, W, C) the weights were trained on.
    """

    name: str
    builder: Callable[..., ModelSpec]
    description: str
    framework: str
    module_class: type
    takes_weights: bool = True
    default_weights: str | None = None
    preprocess: Preprocess = UNIT
    input_shape: tuple[int, int, int] = (224, 224, 3)

    def build(self, **options) -> ModelSpec:
        return self.builder(**options)


_ENTRIES: dict[str, ZooEntry] = {}


def register(name: str, description: str, *, framework: str, module_class: type, takes_weights: bool = True,
             default_weights: str | None = None, preprocess: Preprocess = UNIT,
             input_shape: tuple[int, int, int] = (224, 224, 3)):
    """Decorator adding a builder to the zoo under `name` (see `ZooEntry` for the fields)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r} for zoo model {name}; valid: {', '.join(FRAMEWORKS)}")

    def add(builder):
        _ENTRIES[name] = ZooEntry(name, builder, description, framework, module_class, takes_weights, default_weights,
                                  preprocess, tuple(input_shape))
        return builder

    return add


def entries() -> tuple[ZooEntry, ...]:
    """Every zoo entry, by name."""
    return tuple(_ENTRIES[name] for name in model_names())


def entry(name: str) -> ZooEntry:
    """The zoo entry `name` (unknown names get an error listing the valid ones)."""
    if name not in _ENTRIES:
        raise unknown_name("model", name, model_names())
    return _ENTRIES[name]


def model_names() -> tuple[str, ...]:
    return tuple(sorted(_ENTRIES))


def describe_models() -> dict[str, str]:
    return {item.name: item.description for item in entries()}

"""Nested variables trees as flat `{path: array}` maps, and the key-and-shape check every converter ends with.

Contract: `flatten_tree` / `unflatten_tree` convert between a nested mapping and `{(key, ...): leaf}`;
`check_against_init(converted, reference)` passes a converted tree through unchanged or raises one
`WeightFileError` line naming every mismatched shape, missing and unexpected key (`/`-joined paths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxvis.errors import WeightFileError

__all__ = ["check_against_init", "flatten_tree", "shown", "unflatten_tree"]

SHOWN = 8  # items listed by name in one error line before "... (N in all)"


def shown(items: Sequence[str], limit: int = SHOWN) -> str:
    """Up to `limit` items, comma-separated, then how many there are in all."""
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")




def flatten_tree(tree: Mapping, prefix: tuple = ()) -> dict[tuple[str, ...], Any]:
    """A nested mapping (dict, FrozenDict) as `{(key, key, ...): leaf}`."""
    flat = {}
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, path))
        else:
            flat[path] = value
    return flat


def unflatten_tree(flat: Mapping[tuple[str, ...], Any]) -> dict:
    """`{(key, key, ...): leaf}` as a nested dict."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _path(path: tuple[str, ...]) -> str:
    return "/".join(path)


def check_against_init(converted: Mapping, reference_tree: Mapping, *, what: str = "the weights",
                       origins: Mapping[tuple[str, ...], str] | None = None) -> Mapping:
    """Check that a converted variables tree has exactly the keys and shapes of the model's own.

    Args:
      converted: nested mapping of arrays, e.g. `{"params": {...}}` from a converter.
      reference_tree: the model's tree: `module.init(...)` or, cheaper, `jax.eval_shape(module.init, ...)`
        (leaves need only a `.shape`).
      what: how the error line names the source, e.g. the file name.
      origins: optional `{path: "the source tensors"}` (from `convert_state_dict`), added to a
        mismatch so the user sees the names and shapes of their own framework.

    Returns:
      `converted`, unchanged.

    Raises:
      WeightFileError: one line naming every shape mismatch (key, both shapes), then the keys the
        model has and `converted` lacks ("missing") and the keys it has that the model does not
        ("unexpected"). Keys are written as `/`-joined paths, e.g. `params/features.0/kernel`.
    """
    got, want = flatten_tree(converted), flatten_tree(reference_tree)
    origins = origins or {}
    mismatched = [
        f"{_path(path)} has shape {tuple(np.shape(got[path]))} in {what}"
        + (f" (from {origins[path]})" if path in origins else "") + f" but {tuple(want[path].shape)} in the model"
        for path in want if path in got and tuple(np.shape(got[path])) != tuple(want[path].shape)
    ]
    missing = [_path(path) for path in want if path not in got]
    unexpected = [_path(path) for path in got if path not in want]
    if mismatched or missing or unexpected:
        parts = [shown(mismatched)] if mismatched else []
        if missing:
            parts.append(f"missing: {shown(missing)}")
        if unexpected:
            parts.append(f"unexpected: {shown(unexpected)}")
        raise WeightFileError(f"{what} do not fit the model: " + "; ".join(parts))
    return converted

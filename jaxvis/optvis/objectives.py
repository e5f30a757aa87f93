"""Objectives: what an image should make the network do, as one score per batch item.

Contract: an `Objective` wraps `fn(ctx) -> scores[B]`, where `ctx` is a `Context` holding the
activations of `objective.layers` for the (transformed) batch, the untransformed images and the
per-item unit indices. Rendering maximizes `scores.sum()`. Objectives combine with `+ - *` (with
numbers or each other), and strings become objectives: `"features.10:5"` is `channel` 5 of
`features.10`; `"features.10"` is the channel given per item by the batch's unit indices, which is
how one compiled program renders B different filters: the indices are data, not constants.

Penalties (`l1`, `l2`, `total_variation`, `blur_penalty`) return a positive magnitude per item;
subtract them: `channel("features.10") - 1e-3 * total_variation()`.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxvis.errors import JaxvisError

__all__ = [
    "Context", "Objective", "as_objective", "blur_penalty", "channel", "class_logit", "direction", "diversity", "l1",
    "l2", "layer_mean", "neuron", "total_variation",
]


@dataclasses.dataclass(frozen=True)
class Context:
    """What an objective sees: activations by layer name, images [B,H,W,C], units int[B]."""

    acts: dict
    images: Any
    units: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    fn: Callable[[Context], Any]
    layers: frozenset = frozenset()
    description: str = ""
    # (layer, index) pairs of the units this objective reads: index None means the batch's units.
    # The render loop checks them against the layers' channel counts before compiling anything.
    indexed: tuple = ()

    def __call__(self, ctx: Context):
        return self.fn(ctx)

    def _combine(self, other, op, symbol):
        if isinstance(other, (int, float)):
            return Objective(
                lambda ctx: op(self(ctx), other), self.layers, f"({self.description} {symbol} {other})", self.indexed
            )
        other = as_objective(other)
        return Objective(
            lambda ctx: op(self(ctx), other(ctx)), self.layers | other.layers,
            f"({self.description} {symbol} {other.description})", self.indexed + other.indexed,
        )

    def __add__(self, other):
        return self._combine(other, operator.add, "+")

    def __sub__(self, other):
        return self._combine(other, operator.sub, "-")

    def __mul__(self, other):
        return self._combine(other, operator.mul, "*")

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return (-1.0 * self) + other

    def __neg__(self):
        return -1.0 * self

    def __repr__(self):
        return f"Objective({self.description})"


def _indices(index, ctx: Context):
    """Per-item unit indices: the batch's own (index None) or a constant / per-item array."""
    units = ctx.units if index is None else jnp.broadcast_to(jnp.asarray(index, jnp.int32), ctx.units.shape)
    return units


def _spatial_mean(act):
    """[B, ..., C] -> [B, C]: the mean over every axis between batch and channels."""
    return act.reshape(act.shape[0], -1, act.shape[-1]).mean(axis=1)


def _pick(per_channel, units):
    return jnp.take_along_axis(per_channel, units[:, None], axis=1)[:, 0]


def channel(layer: str, index=None) -> Objective:
    """Mean activation of channel `index` of `layer` (a filter, or a unit of a dense layer).
    `index`: None (the batch's units), an int, or an int array [B]."""
    return Objective(lambda ctx: _pick(_spatial_mean(ctx.acts[layer]), _indices(index, ctx)),
                     frozenset([layer]), f"channel({layer}, {_describe(index)})", ((layer, index),))


def neuron(layer: str, index=None, *, y: int | None = None, x: int | None = None) -> Objective:
    """Activation of channel `index` at one spatial position (default: the centre)."""

    def fn(ctx):
        act = ctx.acts[layer]
        if act.ndim == 4:
            height, width = act.shape[1:3]
            act = act[:, height // 2 if y is None else y, width // 2 if x is None else x, :]
        return _pick(act.reshape(act.shape[0], -1), _indices(index, ctx))

    return Objective(fn, frozenset([layer]), f"neuron({layer}, {_describe(index)})", ((layer, index),))


def class_logit(layer: str, index=None) -> Objective:
    """A class score taken before the softmax (keras-vis swaps softmax for linear for this reason:
    softmax couples the classes, so raising one probability can mean lowering the others)."""
    objective = channel(layer, index)
    return Objective(objective.fn, objective.layers, f"class_logit({layer}, {_describe(index)})", objective.indexed)


def layer_mean(layer: str) -> Objective:
    """Mean activation of the whole layer (DeepDream's loss)."""
    return Objective(lambda ctx: ctx.acts[layer].reshape(ctx.acts[layer].shape[0], -1).mean(axis=1),
                     frozenset([layer]), f"layer_mean({layer})")


def direction(layer: str, vector) -> Objective:
    """Mean over positions of the dot product of the activation vector with `vector` [C]."""
    vector = jnp.asarray(vector, jnp.float32)
    return Objective(lambda ctx: _spatial_mean(ctx.acts[layer]) @ vector, frozenset([layer]), f"direction({layer})")


def diversity(layer: str) -> Objective:
    """lucid's diversity term: minus each item's mean cosine similarity of its Gram matrix with the
    other items' (per item, so it adds to per-item scores). Needs a batch of at least 2."""

    def fn(ctx):
        act = ctx.acts[layer]
        flat = act.reshape(act.shape[0], -1, act.shape[-1])
        gram = jnp.einsum("bpc,bpd->bcd", flat, flat).reshape(act.shape[0], -1)
        gram = gram / (jnp.linalg.norm(gram, axis=1, keepdims=True) + 1e-8)
        similarity = gram @ gram.T
        batch = act.shape[0]
        others = (similarity.sum(axis=1) - jnp.diagonal(similarity)) / max(batch - 1, 1)
        return -others

    return Objective(fn, frozenset([layer]), f"diversity({layer})")


def _per_item_mean(values):
    return values.reshape(values.shape[0], -1).mean(axis=1)


def l1(constant: float = 0.5) -> Objective:
    """Mean |image - constant| per item (a penalty: subtract it)."""
    return Objective(lambda ctx: _per_item_mean(jnp.abs(ctx.images - constant)), frozenset(), f"l1({constant})")


def l2(constant: float = 0.5) -> Objective:
    """Root mean square of image - constant per item (a penalty: subtract it)."""
    return Objective(
        lambda ctx: jnp.sqrt(_per_item_mean((ctx.images - constant) ** 2) + 1e-12), frozenset(), f"l2({constant})"
    )


def total_variation() -> Objective:
    """Mean absolute difference of neighbouring pixels per item (a penalty: subtract it)."""

    def fn(ctx):
        images = ctx.images
        dy = jnp.abs(images[:, 1:] - images[:, :-1])
        dx = jnp.abs(images[:, :, 1:] - images[:, :, :-1])
        return _per_item_mean(dy) + _per_item_mean(dx)

    return Objective(fn, frozenset(), "total_variation()")


def blur_penalty(sigma: float = 0.5) -> Objective:
    """lucid's blur term: squared distance of the image to its own (gradient-stopped) blur, per
    item; subtracting it pulls the image towards a smoother version of itself each step."""
    from jaxvis.optvis.transforms import blur

    blur_one = blur(sigma)

    def fn(ctx):
        blurred = jax.lax.stop_gradient(jax.vmap(lambda image: blur_one(None, image))(ctx.images))
        return _per_item_mean((ctx.images - blurred) ** 2)

    return Objective(fn, frozenset(), f"blur_penalty({sigma})")


@functools.lru_cache(maxsize=256)
def _objective_from_string(value: str) -> Objective:
    layer, sep, index = value.rpartition(":")
    if sep and index.strip().lstrip("-").isdigit():
        return channel(layer, int(index))
    return channel(value)


def _describe(index):
    return "units" if index is None else (str(index) if isinstance(index, int) else "array")


def as_objective(value) -> Objective:
    """An Objective, or a string `"layer"` / `"layer:index"` made into a `channel` objective.

    The same string always gives the same Objective object: the render loop's compiled programs are
    keyed by objective identity, so `render(spec, "features.10", ...)` called again (another chunk
    list, a resumed run) reuses them instead of compiling again."""
    if isinstance(value, Objective):
        return value
    if isinstance(value, str):
        return _objective_from_string(value)
    raise JaxvisError(f"cannot make an objective from {value!r}; give an Objective or a 'layer:index' string")

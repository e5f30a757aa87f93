"""Keras's normalization layers other than BatchNormalization, at inference, as graph ops.

Contract: as `jaxvis.models.keras.ops` (`__call__(name, params, xs, impl)` maps the inputs to the
layer's output; `weight_names` in Keras's `layer.weights` order). Axes are Keras's, counted on the
input with its batch axis. The arithmetic is Keras 3's own (`ops.layer_normalization`, the
GroupNormalization layer, `ops.normalize`, the Normalization layer), so rounding matches too.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from jaxvis.errors import JaxvisError

__all__ = ["GroupNorm", "LayerNorm", "Normalize", "RMSNorm", "UnitNorm"]

_KERAS_EPSILON = 1e-7  # keras.backend.epsilon()


def _axes(name, cls, axes, ndim) -> tuple[int, ...]:
    out = []
    for axis in axes:
        if not -ndim <= axis < ndim or axis % ndim == 0:
            raise JaxvisError(f"Keras layer {name!r} ({cls}) normalizes axis {axis} of a rank-{ndim} input")
        out.append(axis % ndim)
    return tuple(sorted(out))


@dataclasses.dataclass(frozen=True)
class LayerNorm:
    """LayerNormalization: gamma / beta shaped like the normalized axes (in sorted axis order)."""

    axis: tuple[int, ...]
    epsilon: float
    center: bool
    scale: bool
    rms_scaling: bool

    @property
    def weight_names(self):
        return (("gamma",) if self.scale or self.rms_scaling else ()) + \
            (("beta",) if self.center and not self.rms_scaling else ())

    def weight_shapes(self, shape):
        axes = _axes("?", "LayerNormalization", self.axis, len(shape))
        return {name: tuple(shape[a] for a in axes) for name in self.weight_names}

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        axes = _axes(name, "LayerNormalization", self.axis, x.ndim)
        broadcast = [1] * x.ndim
        for a in axes:
            broadcast[a] = x.shape[a]

        def shaped(v):
            if v is not None and v.ndim != x.ndim and axes != (x.ndim - 1,):
                return v.reshape(broadcast)
            return v

        gamma, beta = shaped(params.get("gamma") if params else None), shaped(params.get("beta") if params else None)
        if self.rms_scaling:  # Keras 3 scales by the variance here, not the mean square
            out = x * lax.rsqrt(jnp.var(x, axis=axes, keepdims=True) + self.epsilon)
            return out * gamma if gamma is not None else out
        mean, variance = jnp.mean(x, axes, keepdims=True), jnp.var(x, axis=axes, keepdims=True)
        inv = lax.rsqrt(variance + self.epsilon)
        if gamma is not None:
            inv = inv * gamma
        shift = -mean * inv
        if beta is not None:
            shift = shift + beta
        return x * inv + shift


@dataclasses.dataclass(frozen=True)
class RMSNorm:
    """RMSNormalization: x * rsqrt(mean(x^2) + epsilon) * scale (scale shaped like the normalized axes)."""

    axis: tuple[int, ...]
    epsilon: float

    weight_names = ("scale",)

    def weight_shapes(self, shape):
        return {"scale": tuple(shape[a] for a in _axes("?", "RMSNormalization", self.axis, len(shape)))}

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        axes = _axes(name, "RMSNormalization", self.axis, x.ndim)
        return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + self.epsilon) * params["scale"]


@dataclasses.dataclass(frozen=True)
class GroupNorm:
    """GroupNormalization: `groups` groups along `axis`; gamma / beta [channels]."""

    groups: int
    axis: int
    epsilon: float
    center: bool
    scale: bool

    @property
    def weight_names(self):
        return (("gamma",) if self.scale else ()) + (("beta",) if self.center else ())

    def weight_shapes(self, shape):
        return {name: (shape[self.axis],) for name in self.weight_names}

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        axis = _axes(name, "GroupNormalization", (self.axis,), x.ndim)[0]
        channels = x.shape[axis]
        if channels % self.groups:
            raise JaxvisError(f"Keras layer {name!r} (GroupNormalization) splits {channels} channels into "
                              f"{self.groups} groups")
        group_shape = list(x.shape)
        group_shape[axis] = channels // self.groups
        group_shape.insert(axis, self.groups)
        grouped = x.reshape(group_shape)
        reduce = tuple(a for a in range(1, grouped.ndim) if a != axis)
        broadcast = [1] * x.ndim
        broadcast[axis] = channels // self.groups
        broadcast.insert(axis, self.groups)
        mean, variance = jnp.mean(grouped, reduce, keepdims=True), jnp.var(grouped, axis=reduce, keepdims=True)
        inv = lax.rsqrt(variance + self.epsilon)
        if self.scale:
            inv = inv * params["gamma"].reshape(broadcast)
        shift = -mean * inv
        if self.center:
            shift = shift + params["beta"].reshape(broadcast)
        return (grouped * inv + shift).reshape(x.shape)


@dataclasses.dataclass(frozen=True)
class UnitNorm:
    """UnitNormalization: x / ||x||_2 over `axis` (Keras's `x * min(rsqrt(sum x^2), 1e12)`)."""

    axis: tuple[int, ...]

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        axes = _axes(name, "UnitNormalization", self.axis, x.ndim)
        inv = jnp.minimum(lax.rsqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True)), 1.0 / 1e-12)
        return x * inv


@dataclasses.dataclass(frozen=True)
class Normalize:
    """Normalization (the preprocessing layer): (x - mean) / max(sqrt(variance), 1e-7), or its inverse.

    `mean` / `variance` given in the config are constants (nested tuples); otherwise they are the
    layer's weights `mean`, `variance` (shaped like the kept axes) and `count`.
    """

    axis: tuple[int, ...]
    invert: bool
    mean: float | tuple | None = None
    variance: float | tuple | None = None

    @property
    def weight_names(self):
        return () if self.mean is not None else ("mean", "variance", "count")

    def weight_shapes(self, shape):
        kept = _axes("?", "Normalization", self.axis, len(shape))
        stats = tuple(shape[a] for a in kept)
        return {"mean": stats, "variance": stats, "count": ()}

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        kept = _axes(name, "Normalization", self.axis, x.ndim)
        broadcast = [x.shape[d] if d in kept else 1 for d in range(x.ndim)]
        if self.mean is None:
            mean, variance = params["mean"].reshape(broadcast), params["variance"].reshape(broadcast)
        else:
            mean, variance = (self._constant(name, v, kept, broadcast, x.ndim) for v in (self.mean, self.variance))
        denominator = jnp.maximum(jnp.sqrt(variance), _KERAS_EPSILON)
        if self.invert:
            return mean + x * denominator
        return (x - mean) / denominator

    @staticmethod
    def _constant(name, value, kept, broadcast, ndim):
        value = jnp.asarray(value, jnp.float32)
        if value.ndim:
            if value.ndim > len(kept):
                raise JaxvisError(f"Keras layer {name!r} (Normalization) has a mean/variance of rank {value.ndim} "
                                  f"for {len(kept)} kept axes")
            expanded = [1] * ndim
            for i in range(1, value.ndim + 1):
                expanded[kept[-i]] = value.shape[-i]
            value = value.reshape(expanded)
        return jnp.broadcast_to(value, broadcast)

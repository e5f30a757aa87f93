"""Keras's normalization layers other than BatchNormalization, at inference, as graph ops.

Contract: as `jaxvis.models.keras.ops` (a frozen dataclass of the layer's settings; `weight_names`
in Keras's `layer.weights` order, `weight_shapes(input_shape)`). Axes are Keras's, counted on the
input with its batch axis (`norm_axes`). `jaxvis.models.keras.lower` writes them as IR nodes with
Keras 3's own arithmetic (`ops.layer_normalization`, the GroupNormalization layer, `ops.normalize`,
the Normalization layer).
"""

from __future__ import annotations

import dataclasses

from jaxvis.errors import JaxvisError

__all__ = ["GroupNorm", "LayerNorm", "Normalize", "RMSNorm", "UnitNorm", "norm_axes"]

def norm_axes(name, cls, axes, ndim) -> tuple[int, ...]:
    """Keras axes (counted with the batch axis, negative from the end) as sorted non-negative axes."""
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
        axes = norm_axes("?", "LayerNormalization", self.axis, len(shape))
        return {name: tuple(shape[a] for a in axes) for name in self.weight_names}


@dataclasses.dataclass(frozen=True)
class RMSNorm:
    """RMSNormalization: x * rsqrt(mean(x^2) + epsilon) * scale (scale shaped like the normalized axes)."""

    axis: tuple[int, ...]
    epsilon: float

    weight_names = ("scale",)

    def weight_shapes(self, shape):
        return {"scale": tuple(shape[a] for a in norm_axes("?", "RMSNormalization", self.axis, len(shape)))}


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


@dataclasses.dataclass(frozen=True)
class UnitNorm:
    """UnitNormalization: x / ||x||_2 over `axis` (Keras's `x * min(rsqrt(sum x^2), 1e12)`)."""

    axis: tuple[int, ...]

    weight_names = ()


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
        kept = norm_axes("?", "Normalization", self.axis, len(shape))
        stats = tuple(shape[a] for a in kept)
        return {"mean": stats, "variance": stats, "count": ()}


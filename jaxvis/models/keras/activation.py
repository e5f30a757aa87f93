"""Keras activations (by name, or a ReLU layer's settings) as one frozen dataclass.

Contract: `Activation(...)(x, mode)` applies Keras's activation to `x`; every ReLU / ReLU6 runs
through `jaxvis.models.activations` with `mode` (lucid's redirected gradient), clipped ReLUs as a
rescaled ReLU6 so they keep it; a softmax is recognisable (`is_softmax`) so the graph can capture
its input as the layer's logits.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxvis.models.activations import relu, relu6

__all__ = ["ACTIVATIONS", "Activation"]


@dataclasses.dataclass(frozen=True)
class Activation:
    """A Keras activation (by name) or a ReLU layer's (max_value, negative_slope, threshold)."""

    fn: str = "linear"
    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0
    axis: int = -1

    @property
    def is_softmax(self) -> bool:
        return self.fn == "softmax"

    @property
    def is_identity(self) -> bool:
        return self.fn == "linear"

    def __call__(self, x, mode):
        fn = self.fn
        if fn == "linear":
            return x
        if fn == "relu":
            return _relu_family(x, mode, self.max_value, self.negative_slope, self.threshold)
        if fn == "relu6":
            return relu6(x, mode)
        if fn == "softmax":
            return jax.nn.softmax(x, axis=self.axis)
        if fn == "leaky_relu":
            return jax.nn.leaky_relu(x, self.negative_slope)
        return _SIMPLE_ACTIVATIONS[fn](x)


def _relu_family(x, mode, max_value, negative_slope, threshold):
    """Keras's `relu(x, negative_slope, max_value, threshold)`; the common cases via `activations`."""
    if negative_slope == 0 and threshold == 0:
        if max_value is None:
            return relu(x, mode)
        if max_value == 6:
            return relu6(x, mode)
        if max_value > 0:  # relu clipped at m: relu6 rescaled, so it keeps the redirectable gradient
            return relu6(x * (6.0 / max_value), mode) * (max_value / 6.0)
    positive = jnp.where(x > threshold, x, 0) if threshold != 0 else jnp.maximum(x, 0)
    if max_value is not None:
        positive = jnp.minimum(positive, max_value)
    if negative_slope != 0:
        positive = positive + negative_slope * jnp.minimum(x - threshold, 0)
    return positive


_SIMPLE_ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "exponential": jnp.exp,
    "hard_sigmoid": jax.nn.hard_sigmoid,  # Keras 3: relu6(x + 3) / 6
    "hard_silu": jax.nn.hard_silu,
    "hard_swish": jax.nn.hard_silu,
    "mish": jax.nn.mish,
}
ACTIVATIONS = ("linear", "relu", "relu6", "softmax", "leaky_relu") + tuple(_SIMPLE_ACTIVATIONS)

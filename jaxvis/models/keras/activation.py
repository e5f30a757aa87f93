"""Keras activations (by name, or a ReLU layer's settings) as one frozen dataclass, and their IR nodes.

Contract: `Activation` is plain data; `lower_activation(emitter, layer, activation, x)` adds the IR
nodes that apply Keras's activation to value `x` and returns the result's value name. Every ReLU /
ReLU6 is an IR `relu` / `relu6` (so it runs through `jaxvis.models.activations` with
`relu_redirect`), a ReLU clipped at m a rescaled ReLU6 so it keeps that gradient; a softmax is
recognisable (`is_softmax`) and is one IR `softmax` node, whose input is the layer's logits.
"""

from __future__ import annotations

import dataclasses

__all__ = ["ACTIVATIONS", "Activation", "lower_activation"]


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


# Keras activation names -> the IR op computing them (the same arithmetic, to float32 rounding).
_SIMPLE_ACTIVATIONS = {
    "sigmoid": "sigmoid", "tanh": "tanh", "swish": "silu", "silu": "silu", "elu": "elu", "selu": "selu",
    "gelu": "gelu", "softplus": "softplus", "softsign": "softsign", "exponential": "exp",
    "hard_sigmoid": "hardsigmoid",  # Keras 3: relu6(x + 3) / 6
    "hard_silu": "hardswish", "hard_swish": "hardswish", "mish": "mish",
}
ACTIVATIONS = ("linear", "relu", "relu6", "softmax", "leaky_relu") + tuple(_SIMPLE_ACTIVATIONS)


def lower_activation(e, layer: str, activation: Activation, x: str) -> str:
    """IR nodes (added with `e.op`, a `jaxvis.models.keras.lower.Emitter`) applying `activation` to `x`."""
    fn = activation.fn
    if fn == "linear":
        return x
    if fn == "relu":
        return _relu_family(e, layer, activation, x)
    if fn in ("relu6", "softmax", "leaky_relu"):
        attrs = {"softmax": {"axis": activation.axis}, "leaky_relu": {"negative_slope": activation.negative_slope}}
        return e.op(layer, fn, x, **attrs.get(fn, {}))
    return e.op(layer, _SIMPLE_ACTIVATIONS[fn], x)


def _relu_family(e, layer: str, a: Activation, x: str) -> str:
    """Keras's `relu(x, negative_slope, max_value, threshold)`; the common cases as IR ReLUs."""
    if a.negative_slope == 0 and a.threshold == 0:
        if a.max_value is None:
            return e.op(layer, "relu", x)
        if a.max_value == 6:
            return e.op(layer, "relu6", x)
        if a.max_value > 0:  # relu clipped at m: relu6 rescaled, so it keeps the redirectable gradient
            y = e.op(layer, "relu6", e.op(layer, "mul", x, 6.0 / a.max_value))
            return e.op(layer, "mul", y, a.max_value / 6.0)
    if a.threshold != 0:
        positive = e.op(layer, "where", e.op(layer, "greater", x, a.threshold), x, 0.0)
    else:
        positive = e.op(layer, "maximum", x, 0.0)
    if a.max_value is not None:
        positive = e.op(layer, "minimum", positive, a.max_value)
    if a.negative_slope != 0:
        negative = e.op(layer, "minimum", e.op(layer, "sub", x, a.threshold), 0.0)
        positive = e.op(layer, "add", positive, e.op(layer, "mul", negative, a.negative_slope))
    return positive

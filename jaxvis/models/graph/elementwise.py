"""Elementwise ops of the graph executor: unary activations and math, binary arithmetic, quantization.

Contract: every handler maps `(attrs, args: list[V], ctx) -> [V]` and keeps the layout of its
operands (`values.elementwise`). Every ReLU-family op (relu, relu6, clip at [0, 6] or [0, inf),
hardswish, hardsigmoid) runs through `jaxvis.models.activations` with `ctx.mode` (relu_redirect).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxvis.models.activations import relu, relu6
from jaxvis.models.graph import ops
from jaxvis.models.graph.values import V, axis_index, elementwise

__all__ = ["ELEMENTWISE"]


def _float_unary(fn):
    def handler(attrs, args, ctx):
        return [elementwise(lambda x: fn(x, attrs, ctx), args[0])]
    return handler


def _clip(x, attrs, ctx):
    lo, hi = attrs.get("min"), attrs.get("max")
    if lo == 0 and hi == 6:
        return relu6(x, ctx.mode)
    if lo == 0 and hi is None:
        return relu(x, ctx.mode)
    return jnp.clip(x, lo, hi)


def _hardsigmoid(x, attrs, ctx):
    alpha, beta = attrs.get("alpha", 1 / 6), attrs.get("beta", 0.5)
    return relu6(6.0 * (alpha * x + beta), ctx.mode) / 6.0


def _celu(x, alpha):
    return jnp.maximum(x, 0) + jnp.minimum(0, alpha * jnp.expm1(x / alpha))


_CASTS = {"float": jnp.float32, "float32": jnp.float32, "float16": jnp.float32, "float64": jnp.float32,
          "int": jnp.int32, "int32": jnp.int32, "int64": jnp.int32, "bool": jnp.bool_}

_UNARY: dict[str, Callable] = {
    "relu": lambda x, a, c: relu(x, c.mode),
    "relu6": lambda x, a, c: relu6(x, c.mode),
    "clip": _clip,
    "leaky_relu": lambda x, a, c: ops.leaky_relu(x, a.get("negative_slope", 0.01)),
    "elu": lambda x, a, c: ops.elu(x, a.get("alpha", 1.0), a.get("scale", 1.0), a.get("input_scale", 1.0)),
    "selu": lambda x, a, c: ops.elu(x, a.get("alpha", 1.6732632423543772), a.get("scale", 1.0507009873554805)),
    "celu": lambda x, a, c: _celu(x, a.get("alpha", 1.0)),
    "gelu": lambda x, a, c: ops.gelu(x, approximate=a.get("approximate", False)),
    "silu": lambda x, a, c: jax.nn.silu(x),
    "mish": lambda x, a, c: x * jnp.tanh(ops.softplus(x)),
    "hardswish": lambda x, a, c: x * relu6(x + 3.0, c.mode) / 6.0,
    "hardsigmoid": _hardsigmoid,
    "sigmoid": lambda x, a, c: jax.nn.sigmoid(x),
    "tanh": lambda x, a, c: jnp.tanh(x),
    "softplus": lambda x, a, c: ops.softplus(x, a.get("beta", 1.0), a.get("threshold", 20.0)),
    "softsign": lambda x, a, c: x / (1 + jnp.abs(x)),
    "exp": lambda x, a, c: jnp.exp(x),
    "log": lambda x, a, c: jnp.log(x),
    "sqrt": lambda x, a, c: jnp.sqrt(x),
    "rsqrt": lambda x, a, c: lax.rsqrt(x),
    "abs": lambda x, a, c: jnp.abs(x),
    "neg": lambda x, a, c: -x,
    "reciprocal": lambda x, a, c: 1.0 / x,
    "erf": lambda x, a, c: jax.scipy.special.erf(x),
    "expm1": lambda x, a, c: jnp.expm1(x),
    "log1p": lambda x, a, c: jnp.log1p(x),
    "floor": lambda x, a, c: jnp.floor(x),
    "ceil": lambda x, a, c: jnp.ceil(x),
    "round": lambda x, a, c: jnp.round(x),
    "sign": lambda x, a, c: jnp.sign(x),
    "sin": lambda x, a, c: jnp.sin(x),
    "cos": lambda x, a, c: jnp.cos(x),
    "identity": lambda x, a, c: x,
    "cast": lambda x, a, c: jnp.asarray(x).astype(_CASTS[a.get("dtype", "float")]),
    "not": lambda x, a, c: jnp.logical_not(x),
}


def _div(a, b, rounding):
    if rounding is None and not (jnp.issubdtype(jnp.result_type(a), jnp.integer)
                                 and jnp.issubdtype(jnp.result_type(b), jnp.integer)):
        return a / b
    if rounding == "floor":
        return jnp.floor_divide(a, b)
    q = jnp.asarray(a) / b
    q = jnp.trunc(q)
    return q.astype(jnp.result_type(a, b)) if rounding is None else q


def _prelu(attrs, args, ctx):
    x, slope = args
    if attrs.get("channel_axis") and isinstance(slope, V) and jnp.ndim(slope.data) == 1 and jnp.ndim(x.data) > 1:
        slope = V(jnp.reshape(slope.data, (-1,) + (1,) * (jnp.ndim(x.data) - 2)))
    return [elementwise(lambda x, s: jnp.where(x >= 0, x, s * x), x, slope)]


_BINARY: dict[str, Callable] = {
    "add": lambda a, b, at: a + b * at.get("alpha", 1) if at.get("alpha", 1) != 1 else a + b,
    "sub": lambda a, b, at: a - b * at.get("alpha", 1) if at.get("alpha", 1) != 1 else a - b,
    "mul": lambda a, b, at: a * b,
    "div": lambda a, b, at: _div(a, b, at.get("rounding")),
    "pow": lambda a, b, at: jnp.power(a, b),
    "maximum": lambda a, b, at: jnp.maximum(a, b),
    "minimum": lambda a, b, at: jnp.minimum(a, b),
    "equal": lambda a, b, at: a == b,
    "less": lambda a, b, at: a < b,
    "greater": lambda a, b, at: a > b,
    "less_equal": lambda a, b, at: a <= b,
    "greater_equal": lambda a, b, at: a >= b,
    "and": lambda a, b, at: jnp.logical_and(a, b),
    "or": lambda a, b, at: jnp.logical_or(a, b),
    "mod": lambda a, b, at: jnp.fmod(a, b) if at.get("fmod") else jnp.mod(a, b),
}


def _binary(fn):
    def handler(attrs, args, ctx):
        return [elementwise(lambda a, b: fn(a, b, attrs), args[0], args[1])]
    return handler


def _per_axis(v, attrs, rank):
    """A per-channel quantization scale / zero point [C] placed on `axis` of a rank-`rank` tensor."""
    if not isinstance(v, V) or jnp.ndim(v.data) != 1 or v.data.shape[0] == 1:
        return v
    axis = axis_index(attrs.get("axis", 1), rank)
    return V(jnp.reshape(jnp.asarray(v.data, jnp.float32), (-1,) + (1,) * (rank - axis - 1)))


def _quantize(attrs, args, ctx):
    """ONNX QuantizeLinear as fake quantization: round(x / scale) + zero point, saturated, kept in
    float; rounding passes gradients straight through, so a quantized model can still be visualized."""
    x = args[0]
    rank = jnp.ndim(x.data)
    scale = _per_axis(args[1], attrs, rank)
    zero = _per_axis(args[2], attrs, rank) if len(args) > 2 and args[2] is not None else 0.0

    def fn(x, s, z):
        q = x / s
        q = q + lax.stop_gradient(jnp.round(q) - q)
        return jnp.clip(q + jnp.asarray(z, jnp.float32), attrs["qmin"], attrs["qmax"])
    return [elementwise(fn, x, scale, zero)]


def _dequantize(attrs, args, ctx):
    """ONNX DequantizeLinear: (x - zero point) * scale, per tensor or per `axis`."""
    x = V(jnp.asarray(args[0].data, jnp.float32), args[0].cl)
    rank = jnp.ndim(x.data)
    scale = _per_axis(args[1], attrs, rank)
    zero = _per_axis(args[2], attrs, rank) if len(args) > 2 and args[2] is not None else 0.0
    return [elementwise(lambda x, s, z: (x - jnp.asarray(z, jnp.float32)) * s, x, scale, zero)]


def _where(attrs, args, ctx):
    return [elementwise(jnp.where, *args)]


ELEMENTWISE: dict[str, Callable] = {
    **{op: _float_unary(fn) for op, fn in _UNARY.items()},
    **{op: _binary(fn) for op, fn in _BINARY.items()},
    "where": _where,
    "prelu": _prelu,
    "quantize": _quantize,
    "dequantize": _dequantize,
}

"""Output shapes of the commonest graph nodes by arithmetic, so loading need not trace them.

Contract: `infer(op, attrs, inputs, shapes)` returns the node's output shapes as a list of
`jax.ShapeDtypeStruct` -- exactly what `jax.eval_shape` of the executor's op gives -- or None when
the node is not one of the covered cases, or anything about it is unusual (a dtype other than
float32, a channel count that does not match, an empty output). None means "trace it": the
builder then runs the op itself, which also words the error for a node that does not fit. So a
rule only has to be right on the happy path, and `tests/models/graph/test_shape_rules.py` checks
each against tracing.

Why: tracing one node through `jax.eval_shape` costs about a millisecond (most of it JAX's jit
machinery, not the op), and a CNN's distinct convolutions, normalizations and activations were
most of a 100 MB model's load time. `inputs` are the node's inputs (value names, or literals such
as a Python scalar or None), `shapes` the `ShapeDtypeStruct` of each name (None for literals).
Shapes are the source framework's (NCHW for 4-D tensors), as the executor's results are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from jaxvis.models.graph.ops import same_padding

__all__ = ["infer"]

_F32 = np.dtype(np.float32)

# unary ops whose float32 result has its input's shape and dtype (`elementwise._UNARY`)
_SAME_SHAPE = frozenset({
    "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish", "hardsigmoid",
    "sigmoid", "tanh", "softplus", "softsign", "exp", "log", "sqrt", "rsqrt", "abs", "neg", "reciprocal", "erf",
    "expm1", "log1p", "identity",
})
_BROADCAST = frozenset({"add", "sub", "mul", "div", "maximum", "minimum"})


def _f32(shape) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), _F32)


def _is_f32(shape) -> bool:
    return shape is not None and np.dtype(shape.dtype) == _F32


def _unary(attrs, inputs, shapes):
    if len(inputs) != 1 or not _is_f32(shapes[0]):
        return None
    return [_f32(shapes[0].shape)]


def _broadcast(attrs, inputs, shapes):
    if len(inputs) != 2 or attrs.get("rounding") is not None:
        return None
    tensor_shapes = []
    for value, shape in zip(inputs, shapes):
        if shape is None:  # a literal operand: only a Python number keeps float32
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
        elif not _is_f32(shape):
            return None
        else:
            tensor_shapes.append(shape.shape)
    if not tensor_shapes:
        return None
    try:
        return [_f32(np.broadcast_shapes(*tensor_shapes))]
    except ValueError:
        return None


def _batch_norm(attrs, inputs, shapes):
    x = shapes[0]
    if not _is_f32(x) or len(x.shape) < 2 or len(inputs) != 5:
        return None
    for value, shape in zip(inputs[1:], shapes[1:]):
        if value is None:
            continue
        if not _is_f32(shape) or tuple(shape.shape) != (x.shape[1],):
            return None
    return [_f32(x.shape)]


def _conv_size(size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int]) -> int:
    return (size + pads[0] + pads[1] - dilation * (kernel - 1) - 1) // stride + 1


def _conv(attrs, inputs, shapes):
    if attrs.get("transposed") or len(inputs) not in (2, 3):
        return None
    x, kernel = shapes[0], shapes[1]
    bias = shapes[2] if len(inputs) == 3 else None
    if not (_is_f32(x) and _is_f32(kernel)) or len(x.shape) != 4 or len(kernel.shape) != 4:
        return None
    n, c, h, w = x.shape
    kh, kw, cin_per_group, cout = kernel.shape
    groups = int(attrs.get("groups", 1))
    stride, dilation = tuple(attrs.get("stride", (1, 1))), tuple(attrs.get("dilation", (1, 1)))
    if groups < 1 or c != cin_per_group * groups or cout % groups or min(*stride, *dilation) < 1:
        return None
    if len(inputs) == 3 and inputs[2] is not None and (not _is_f32(bias) or tuple(bias.shape) != (cout,)):
        return None
    padding = attrs.get("padding", ((0, 0), (0, 0)))
    if padding == "same":
        pads = [same_padding(n_, k, s, d) for n_, k, s, d in zip((h, w), (kh, kw), stride, dilation)]
    elif isinstance(padding, str):
        return None
    else:
        try:
            pads = [tuple(int(p) for p in pair) for pair in padding]
        except (TypeError, ValueError):
            return None
        if len(pads) != 2 or any(len(p) != 2 or min(p) < 0 for p in pads):
            return None
    ho, wo = (_conv_size(*args) for args in zip((h, w), (kh, kw), stride, dilation, pads))
    if ho < 1 or wo < 1:
        return None
    return [_f32((n, cout, ho, wo))]


_RULES: dict[str, Callable] = {
    **{op: _unary for op in _SAME_SHAPE},
    **{op: _broadcast for op in _BROADCAST},
    "batch_norm": _batch_norm,
    "conv": _conv,
}


def infer(op: str, attrs: Mapping, inputs: Sequence, shapes: Sequence) -> list[jax.ShapeDtypeStruct] | None:
    """The node's output shapes by arithmetic, or None: trace it (see the module docstring)."""
    rule = _RULES.get(op)
    return None if rule is None else rule(attrs, inputs, shapes)

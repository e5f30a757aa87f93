"""Shape ops of the graph executor: they see the source framework's tensor.

Contract: every handler maps `(attrs, args: list[V], ctx) -> [V]` on `values.plain` tensors, so a
flatten stays in the source's order (C·H·W for NCHW graphs). `permute(0,2,3,1)` of a `cl` value and
`permute(0,3,1,2)` of a plain 4-D value only flip the flag: they cost nothing.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from jaxvis.models.graph import ops
from jaxvis.models.graph.values import V, axis_index, optional, plain

__all__ = ["SHAPE", "target_shape"]


def target_shape(shape, target, *, allowzero=False):
    target = list(target)
    if not allowzero:
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    if target.count(-1) > 1:
        raise ValueError(f"a reshape target {tuple(target)} has more than one -1")
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(shape) // max(known, 1)
    if math.prod(target) != math.prod(shape):
        raise ValueError(f"cannot reshape {tuple(shape)} to {tuple(target)}")
    return tuple(target)


def _reshape(attrs, args, ctx):
    x = plain(args[0])
    return [V(jnp.reshape(x, target_shape(x.shape, attrs["shape"], allowzero=attrs.get("allowzero", False))), False)]


def _flatten(attrs, args, ctx):
    x = plain(args[0])
    rank = jnp.ndim(x)
    if rank == 0:
        return [V(jnp.reshape(x, (1,)), False)]
    start, end = axis_index(attrs.get("start", 0), rank), axis_index(attrs.get("end", -1), rank)
    shape = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
    return [V(jnp.reshape(x, shape), False)]


def _permute(attrs, args, ctx):
    x = args[0]
    rank = jnp.ndim(x.data)
    perm = tuple(axis_index(p, rank) for p in attrs["perm"])
    if x.cl and perm == (0, 2, 3, 1):
        return [V(x.data, False)]
    if not x.cl and rank == 4 and perm == (0, 3, 1, 2):
        return [V(x.data, True)]
    return [V(jnp.transpose(plain(x), perm), False)]


def _squeeze(attrs, args, ctx):
    x = plain(args[0])
    axes = attrs.get("axes")
    if axes is None:
        return [V(jnp.squeeze(x), False)]
    axes = tuple(a for a in (axis_index(a, x.ndim) for a in axes) if x.shape[a] == 1)  # torch: non-1 dims stay
    return [V(jnp.squeeze(x, axis=axes), False)]


def _unsqueeze(attrs, args, ctx):
    x = plain(args[0])
    rank = jnp.ndim(x) + len(attrs["axes"])
    for axis in sorted(axis_index(a, rank) for a in attrs["axes"]):
        x = jnp.expand_dims(x, axis)
    return [V(x, False)]


def _expand(attrs, args, ctx):
    x = plain(args[0])
    shape = list(attrs["shape"])
    rank = max(len(shape), jnp.ndim(x))
    xshape = (1,) * (rank - jnp.ndim(x)) + tuple(jnp.shape(x))
    shape = [1] * (rank - len(shape)) + shape
    target = tuple(xs if (d == -1 or (attrs.get("numpy") and d == 1)) else d for xs, d in zip(xshape, shape))
    return [V(jnp.broadcast_to(jnp.reshape(x, xshape), target), False)]


def _tile(attrs, args, ctx):
    return [V(jnp.tile(plain(args[0]), tuple(attrs["repeats"])), False)]


def _matmul(attrs, args, ctx):
    return [V(jnp.matmul(plain(args[0]), plain(args[1])), False)]


def _gemm(attrs, args, ctx):
    a, b = plain(args[0]), plain(args[1])
    a = a.T if attrs.get("trans_a") else a
    b = b.T if attrs.get("trans_b") else b
    y = a @ b
    if attrs.get("alpha", 1.0) != 1.0:
        y = y * attrs["alpha"]
    if len(args) > 2 and args[2] is not None:
        c = plain(args[2])
        y = y + (c * attrs["beta"] if attrs.get("beta", 1.0) != 1.0 else c)
    return [V(y, False)]


def _linear(attrs, args, ctx):
    x, w = plain(args[0]), args[1].data
    y = lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())))
    b = optional(args, 2)
    return [V(y if b is None else y + b, False)]


def _layer_norm(attrs, args, ctx):
    x = plain(args[0])
    rank = jnp.ndim(x)
    axes = tuple(axis_index(a, rank) for a in attrs["axes"])
    return [V(ops.layer_norm(x, optional(args, 1), optional(args, 2), axes=axes, eps=attrs.get("eps", 1e-5)), False)]


def _stack(attrs, args, ctx):
    datas = [plain(a) for a in args]
    return [V(jnp.stack(datas, axis=axis_index(attrs["axis"], jnp.ndim(datas[0]) + 1)), False)]


def _einsum(attrs, args, ctx):
    return [V(jnp.einsum(attrs["equation"], *[plain(a) for a in args]), False)]


_SCATTER = {"none": lambda ref, u: ref.set(u), "add": lambda ref, u: ref.add(u), "mul": lambda ref, u: ref.multiply(u),
            "max": lambda ref, u: ref.max(u), "min": lambda ref, u: ref.min(u)}


def _scatter_nd(attrs, args, ctx):
    """ONNX ScatterND: `x` with the entries (or slices) at `indices` replaced (or reduced) by `updates`."""
    x, indices, updates = plain(args[0]), jnp.asarray(args[1].data), plain(args[2])
    k = indices.shape[-1]
    indices = jnp.where(indices < 0, indices + jnp.asarray(x.shape[:k]), indices)
    index = tuple(indices[..., i] for i in range(k))
    return [V(_SCATTER[attrs.get("reduction", "none")](x.at[index], updates), False)]


SHAPE = {
    "reshape": _reshape,
    "flatten": _flatten,
    "permute": _permute,
    "squeeze": _squeeze,
    "unsqueeze": _unsqueeze,
    "expand": _expand,
    "tile": _tile,
    "matmul": _matmul,
    "gemm": _gemm,
    "linear": _linear,
    "layer_norm": _layer_norm,
    "stack": _stack,
    "einsum": _einsum,
    "scatter_nd": _scatter_nd,
}

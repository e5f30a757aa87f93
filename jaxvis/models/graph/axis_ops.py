"""Axis ops of the graph executor: they run on either storage, with their source axes remapped.

Contract: every handler maps `(attrs, args: list[V], ctx) -> [V]`; axes in `attrs` are the source
framework's (NCHW for 4-D tensors) and `values.storage_axis` finds them in the storage, so concat,
slice, split, softmax, reductions, pad and batch norm cost no transpose on `cl` values. Indexing
ops (gather, index, scatter, argmax, cumsum) see the source's tensor.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.models.graph import ops
from jaxvis.models.graph.values import SEM_TO_PHYS, V, axis_index, optional, plain, same_storage, storage_axis

__all__ = ["AXIS"]


def _batch_norm(attrs, args, ctx):
    x, scale, offset, mean, var = args
    axis = storage_axis(1, x)
    y = ops.batch_norm(x.data, mean.data, var.data, scale.data if scale is not None else None,
                       offset.data if offset is not None else None, eps=attrs.get("eps", 1e-5), axis=axis)
    return [V(y, x.cl)]


def _instance_norm(attrs, args, ctx):
    """Per item and channel (axis 1) statistics over every other axis, any rank >= 3; per-channel affine."""
    x, scale, offset = args[0], optional(args, 1), optional(args, 2)
    eps = attrs.get("eps", 1e-5)
    if x.cl:
        return [V(ops.group_norm(x.data, scale, offset, groups=x.data.shape[-1], eps=eps), True)]
    data = x.data
    axes = tuple(range(2, data.ndim))
    shape = (-1,) + (1,) * (data.ndim - 2)
    y = ops.layer_norm(data, None, None, axes=axes, eps=eps)
    if scale is not None:
        y = y * jnp.reshape(scale, shape)
    return [V(y if offset is None else y + jnp.reshape(offset, shape), False)]



def _concat(attrs, args, ctx):
    args = [a for a in args if a is not None and 0 not in jnp.shape(a.data)] or args[:1]
    datas, cl = same_storage(args)
    axis = storage_axis(attrs["axis"], V(datas[0], cl))
    return [V(jnp.concatenate(datas, axis=axis), cl)]


def _split(attrs, args, ctx):
    x = args[0]
    axis = storage_axis(attrs["axis"], x)
    bounds = np.cumsum(attrs["sizes"])[:-1].tolist()
    return [V(part, x.cl) for part in jnp.split(x.data, bounds, axis=axis)]


def _slice(attrs, args, ctx):
    x = args[0]
    index = [slice(None)] * jnp.ndim(x.data)
    for axis, start, end, step in zip(attrs["axes"], attrs["starts"], attrs["ends"], attrs["steps"]):
        axis = storage_axis(axis, x)
        start, stop, step = slice(start, end, step).indices(x.data.shape[axis])
        if step < 0 and stop < 0:
            stop = None
        index[axis] = slice(start, stop, step)
    return [V(x.data[tuple(index)], x.cl)]


def _softmax(fn):
    def handler(attrs, args, ctx):
        x = args[0]
        return [V(fn(x.data, axis=storage_axis(attrs.get("axis", -1), x)), x.cl)]
    return handler


_REDUCERS = {"mean": jnp.mean, "sum": jnp.sum, "max": jnp.max, "min": jnp.min, "prod": jnp.prod,
             "sum_square": lambda x, axis, keepdims=False: jnp.sum(x * x, axis=axis, keepdims=keepdims),
             "l2": lambda x, axis, keepdims=False: jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims)),
             "l1": lambda x, axis, keepdims=False: jnp.sum(jnp.abs(x), axis=axis, keepdims=keepdims),
             "log_sum_exp": lambda x, axis, keepdims=False: jax.nn.logsumexp(x, axis=axis, keepdims=keepdims)}


def _reduce(attrs, args, ctx):
    x = args[0]
    rank = jnp.ndim(x.data)
    axes = attrs.get("axes")
    axes = tuple(range(rank)) if axes is None else tuple(sorted(axis_index(a, rank) for a in axes))
    keep = bool(attrs.get("keepdim", False))
    fn = _REDUCERS[attrs["kind"]]
    if not x.cl:
        return [V(fn(x.data, axis=axes, keepdims=keep), False)]
    phys = tuple(SEM_TO_PHYS[a] for a in axes)
    if keep:
        return [V(fn(x.data, axis=phys, keepdims=True), True)]
    kept = [a for a in (0, 2, 3, 1) if a not in axes]  # NCHW axes left, in storage order
    if kept == sorted(kept):  # storage order is the source's order: no transpose needed
        return [V(fn(x.data, axis=phys), False)]
    return [V(fn(plain(x), axis=axes), False)]


def _pad(attrs, args, ctx):
    x = args[0]
    pads = [tuple(p) for p in attrs["pads"]]
    if x.cl:
        pads = [pads[0], pads[2], pads[3], pads[1]]
    return [V(ops.pad(x.data, pads, mode=attrs.get("mode", "constant"), value=attrs.get("value", 0.0)), x.cl)]


def _gather(attrs, args, ctx):
    x = plain(args[0])
    indices = args[1].data if len(args) > 1 and args[1] is not None else np.asarray(attrs["indices"])
    axis = axis_index(attrs.get("axis", 0), jnp.ndim(x))
    indices = jnp.where(jnp.asarray(indices) < 0, jnp.asarray(indices) + x.shape[axis], jnp.asarray(indices))
    return [V(jnp.take(x, indices, axis=axis), False)]


def _gather_nd(attrs, args, ctx):
    """ONNX GatherND: index tuples on the last axis of `indices`, after `batch_dims` shared leading axes."""
    x, indices = plain(args[0]), jnp.asarray(args[1].data)

    def gather(x, idx):
        idx = jnp.where(idx < 0, idx + jnp.asarray(x.shape[: idx.shape[-1]]), idx)
        return x[tuple(idx[..., i] for i in range(idx.shape[-1]))]

    for _ in range(int(attrs.get("batch_dims", 0))):
        gather = jax.vmap(gather)
    return [V(gather(x, indices), False)]


def _index(attrs, args, ctx):
    """torch advanced indexing `x[i0, i1, ...]`: NumPy's rules, None for a full slice."""
    x = plain(args[0])
    index = []
    for a in args[1:]:
        if a is None:
            index.append(slice(None))
        else:
            i = jnp.asarray(a.data)
            if i.dtype == jnp.bool_:
                raise ValueError("boolean-mask indexing is not supported")
            index.append(i)
    return [V(x[tuple(index)], False)]


def _slice_scatter(attrs, args, ctx):
    """torch `slice_scatter`: `x` with `x[start:end:step]` along `axis` replaced by `src`."""
    x, src = plain(args[0]), plain(args[1])
    axis = axis_index(attrs["axis"], jnp.ndim(x))
    if axis != 0 and x.shape[0] == 1 and src.shape[0] != 1:  # a buffer made for the traced batch of one
        x = jnp.broadcast_to(x, (src.shape[0],) + x.shape[1:])
    start, stop, step = slice(attrs.get("start"), attrs.get("end"), attrs.get("step", 1)).indices(x.shape[axis])
    index = [slice(None)] * jnp.ndim(x)
    index[axis] = slice(start, stop, step)
    return [V(x.at[tuple(index)].set(src), False)]


def _gather_elements(attrs, args, ctx):
    x, indices = plain(args[0]), jnp.asarray(args[1].data)
    axis = axis_index(attrs.get("axis", 0), jnp.ndim(x))
    indices = jnp.where(indices < 0, indices + x.shape[axis], indices)
    return [V(jnp.take_along_axis(x, indices, axis=axis), False)]


def _argmax(attrs, args, ctx):
    x = plain(args[0])
    axis = axis_index(attrs.get("axis", 0), jnp.ndim(x))
    fn = jnp.argmin if attrs.get("min") else jnp.argmax
    return [V(fn(x, axis=axis, keepdims=bool(attrs.get("keepdim", False))), False)]


def _cumsum(attrs, args, ctx):
    x = plain(args[0])
    axis = axis_index(attrs.get("axis", 0), jnp.ndim(x))
    if attrs.get("reverse"):
        x = jnp.flip(x, axis)
    y = jnp.cumsum(x, axis=axis)
    if attrs.get("exclusive"):
        y = y - x
    return [V(jnp.flip(y, axis) if attrs.get("reverse") else y, False)]


AXIS = {
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "concat": _concat,
    "split": _split,
    "slice": _slice,
    "softmax": _softmax(ops.softmax),
    "log_softmax": _softmax(ops.log_softmax),
    "reduce": _reduce,
    "pad": _pad,
    "gather": _gather,
    "gather_nd": _gather_nd,
    "gather_elements": _gather_elements,
    "index": _index,
    "slice_scatter": _slice_scatter,
    "argmax": _argmax,
    "cumsum": _cumsum,
}

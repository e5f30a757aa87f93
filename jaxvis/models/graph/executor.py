"""`GraphModule`: a Flax module that runs a graph IR (`ir.Graph`) on NHWC activations.

Contract: `GraphModule(graph).apply(variables, x[B,H,W,C], outputs=names, relu_redirect=r)` returns
`{name: activation}` for exactly `names` (layer names of `graph.layers`), running only the nodes
those layers depend on. A 4-D activation is returned NHWC -- the source framework's NCHW tensor
transposed; in a graph whose input is NHWC (TensorFlow exports) a 4-D tensor the source holds NHWC
is returned as it is -- and any other rank as the source framework has it ([B, N] for logits). Every
ReLU-family op (relu, relu6, hardtanh / clip at [0, 6] or [0, inf), hardswish, hardsigmoid) runs
through `jaxvis.models.activations` with `relu_redirect`; convolutions use the formulations of
`jaxvis.models.layers`. Variables are `{"params": {param_name: array}}` in the layouts
`ir.convert_weight` gives; `init` draws small normal weights of the recorded shapes.

Layouts: the graph has NCHW semantics, the activations are channels-last. Each value carries a
flag: `cl` values are 4-D NCHW tensors stored NHWC; the others are stored as the source framework
has them. Spatial ops (convs, pools, norms over channels, resize) take and give `cl` values;
elementwise ops keep `cl` (a small plain operand such as a [C,1,1] buffer is broadcast into NHWC);
axis ops (concat, slice, split, softmax, reductions, pad, batch norm) remap their axes; shape ops
(reshape, flatten, permute, matmul, ...) see the source's NCHW tensor, so flatten stays C·H·W.
`permute(0,2,3,1)` of a `cl` value and `permute(0,3,1,2)` back cost nothing.

Batch: shapes are traced for one image and the batch rides on axis 0. A graph that moves the batch
off axis 0 (`graph.per_item`, e.g. a decomposed einsum) runs each image as a batch of one under
`jax.vmap`, which is what its fixed shapes describe.

This module is long (~750 lines) because it is the one table from IR op names to their evaluation
(with each value's layout); splitting it would separate ops that share the layout rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.activations import relu, relu6
from jaxvis.models.graph import ops
from jaxvis.models.graph.ir import Graph, Node

__all__ = ["GraphModule", "HANDLERS", "V", "run_node"]

_SEM_TO_PHYS = (0, 3, 1, 2)  # NCHW axis -> its axis in the NHWC storage of a cl value


class V(NamedTuple):
    """A value: `data`, and `cl` when it is a 4-D NCHW tensor stored NHWC."""

    data: Any
    cl: bool = False


class Ctx(NamedTuple):
    mode: Any = 0.0  # relu_redirect
    impl: str = "auto"  # conv formulation


def plain(v: V):
    """The value as the source framework has it."""
    return jnp.transpose(v.data, (0, 3, 1, 2)) if v.cl else v.data


def channels_last(v: V):
    """A 4-D value as NHWC."""
    if v.cl:
        return v.data
    if jnp.ndim(v.data) != 4:
        raise ValueError(f"needs a 4-D NCHW tensor, got shape {tuple(jnp.shape(v.data))}")
    return jnp.transpose(v.data, (0, 2, 3, 1))


def to_output(v: V, channels_first: bool = True):
    """What a layer returns: NHWC for 4-D values of a channels-first graph, the source's tensor otherwise."""
    if v.cl:
        return v.data
    return jnp.transpose(v.data, (0, 2, 3, 1)) if channels_first and jnp.ndim(v.data) == 4 else v.data


def _as_cl_operand(a):
    """An elementwise operand broadcast against NHWC storage (numbers stay numbers)."""
    if not isinstance(a, V):
        return a
    if a.cl:
        return a.data
    x = jnp.asarray(a.data)
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    return jnp.transpose(x, (0, 2, 3, 1))


def _axis(axis: int, rank: int) -> int:
    axis = int(axis)
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _phys(axis: int, v: V) -> int:
    """Storage axis of NCHW axis `axis` of `v`."""
    axis = _axis(axis, jnp.ndim(v.data))
    return _SEM_TO_PHYS[axis] if v.cl else axis


# ---------------------------------------------------------------------------------------------
# Elementwise ops.


def _elementwise(fn: Callable, *args) -> V:
    tensors = [a for a in args if isinstance(a, V)]
    rank = max(jnp.ndim(a.data) for a in tensors)
    if rank == 4 and any(a.cl for a in tensors):
        return V(fn(*[_as_cl_operand(a) for a in args]), True)
    return V(fn(*[plain(a) if isinstance(a, V) else a for a in args]), False)


def _float_unary(fn):
    def handler(attrs, args, ctx):
        return [_elementwise(lambda x: fn(x, attrs, ctx), args[0])]
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
    return [_elementwise(lambda x, s: jnp.where(x >= 0, x, s * x), x, slope)]


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
        return [_elementwise(lambda a, b: fn(a, b, attrs), args[0], args[1])]
    return handler


def _per_axis(v, attrs, rank):
    """A per-channel quantization scale / zero point [C] placed on `axis` of a rank-`rank` tensor."""
    if not isinstance(v, V) or jnp.ndim(v.data) != 1 or v.data.shape[0] == 1:
        return v
    axis = _axis(attrs.get("axis", 1), rank)
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
    return [_elementwise(fn, x, scale, zero)]


def _dequantize(attrs, args, ctx):
    """ONNX DequantizeLinear: (x - zero point) * scale, per tensor or per `axis`."""
    x = V(jnp.asarray(args[0].data, jnp.float32), args[0].cl)
    rank = jnp.ndim(x.data)
    scale = _per_axis(args[1], attrs, rank)
    zero = _per_axis(args[2], attrs, rank) if len(args) > 2 and args[2] is not None else 0.0
    return [_elementwise(lambda x, s, z: (x - jnp.asarray(z, jnp.float32)) * s, x, scale, zero)]


def _where(attrs, args, ctx):
    return [_elementwise(jnp.where, *args)]


# ---------------------------------------------------------------------------------------------
# Spatial ops.


def _pads(attrs) -> tuple:
    return tuple(tuple(p) for p in attrs.get("padding", ((0, 0), (0, 0))))


def _conv(attrs, args, ctx):
    x = channels_last(args[0])
    kernel = args[1].data
    bias = args[2].data if len(args) > 2 and args[2] is not None else None
    common = dict(stride=attrs.get("stride", (1, 1)), padding=_pads(attrs), dilation=attrs.get("dilation", (1, 1)),
                  groups=attrs.get("groups", 1))
    if attrs.get("transposed"):
        y = ops.conv_transpose2d(x, kernel, bias, output_padding=attrs.get("output_padding", (0, 0)), **common)
    else:
        y = ops.conv2d(x, kernel, bias, impl=ctx.impl, **common)
    return [V(y, True)]


def _max_pool(attrs, args, ctx):
    y = ops.max_pool2d(channels_last(args[0]), kernel=attrs["kernel"], stride=attrs["stride"], padding=_pads(attrs),
                       dilation=attrs.get("dilation", (1, 1)), ceil_mode=attrs.get("ceil_mode", False))
    return [V(y, True)]


def _avg_pool(attrs, args, ctx):
    y = ops.avg_pool2d(channels_last(args[0]), kernel=attrs["kernel"], stride=attrs["stride"], padding=_pads(attrs),
                       ceil_mode=attrs.get("ceil_mode", False),
                       count_include_pad=attrs.get("count_include_pad", True),
                       divisor_override=attrs.get("divisor_override"))
    return [V(y, True)]


def _lp_pool(attrs, args, ctx):
    y = ops.lp_pool2d(channels_last(args[0]), p=attrs.get("p", 2), kernel=attrs["kernel"], stride=attrs["stride"],
                      padding=_pads(attrs), ceil_mode=attrs.get("ceil_mode", False))
    return [V(y, True)]


def _adaptive_size(x, attrs):
    return tuple(n if o is None else o for n, o in zip(x.shape[1:3], attrs["output_size"]))


def _adaptive_avg(attrs, args, ctx):
    x = channels_last(args[0])
    return [V(ops.adaptive_avg_pool2d(x, _adaptive_size(x, attrs)), True)]


def _adaptive_max(attrs, args, ctx):
    x = channels_last(args[0])
    return [V(ops.adaptive_max_pool2d(x, _adaptive_size(x, attrs)), True)]


def _optional(args, i):
    return args[i].data if len(args) > i and args[i] is not None else None


def _group_norm(attrs, args, ctx):
    x = channels_last(args[0])
    return [V(ops.group_norm(x, _optional(args, 1), _optional(args, 2), groups=attrs["groups"],
                             eps=attrs.get("eps", 1e-5)), True)]


def _lrn(attrs, args, ctx):
    x = channels_last(args[0])
    return [V(ops.lrn(x, size=attrs["size"], alpha=attrs.get("alpha", 1e-4), beta=attrs.get("beta", 0.75),
                      bias=attrs.get("bias", 1.0)), True)]


def _resize(attrs, args, ctx):
    x = channels_last(args[0])
    sizes, scales = attrs["sizes"], attrs.get("scales") or (None, None)
    for axis, n_out, scale in zip((1, 2), sizes, scales):
        n_in = x.shape[axis]
        if n_out == n_in and (scale is None or scale == 1.0) and attrs.get("mode") != "cubic":
            continue
        indices, weights = ops.resize_taps(
            n_in, n_out, scale=scale or n_out / n_in, mode=attrs.get("mode", "nearest"),
            coordinate_mode=attrs.get("coordinate_mode", "asymmetric"), nearest_mode=attrs.get("nearest_mode", "floor"),
            cubic_a=attrs.get("cubic_a", -0.75), exclude_outside=attrs.get("exclude_outside", False),
            antialias=attrs.get("antialias", False))
        x = ops.resize_axis(x, axis, indices, weights)
    return [V(x, True)]


# ---------------------------------------------------------------------------------------------
# Axis ops: they run on either storage, with their axes remapped.


def _batch_norm(attrs, args, ctx):
    x, scale, offset, mean, var = args
    axis = _phys(1, x)
    y = ops.batch_norm(x.data, mean.data, var.data, scale.data if scale is not None else None,
                       offset.data if offset is not None else None, eps=attrs.get("eps", 1e-5), axis=axis)
    return [V(y, x.cl)]


def _instance_norm(attrs, args, ctx):
    """Per item and channel (axis 1) statistics over every other axis, any rank >= 3; per-channel affine."""
    x, scale, offset = args[0], _optional(args, 1), _optional(args, 2)
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


def _same_storage(args):
    """Tensors in one storage: NHWC if all are 4-D and one is, else the source's."""
    if all(jnp.ndim(a.data) == 4 for a in args) and any(a.cl for a in args):
        return [channels_last(a) for a in args], True
    return [plain(a) for a in args], False


def _concat(attrs, args, ctx):
    args = [a for a in args if a is not None and 0 not in jnp.shape(a.data)] or args[:1]
    datas, cl = _same_storage(args)
    axis = _phys(attrs["axis"], V(datas[0], cl))
    return [V(jnp.concatenate(datas, axis=axis), cl)]


def _split(attrs, args, ctx):
    x = args[0]
    axis = _phys(attrs["axis"], x)
    bounds = np.cumsum(attrs["sizes"])[:-1].tolist()
    return [V(part, x.cl) for part in jnp.split(x.data, bounds, axis=axis)]


def _slice(attrs, args, ctx):
    x = args[0]
    index = [slice(None)] * jnp.ndim(x.data)
    for axis, start, end, step in zip(attrs["axes"], attrs["starts"], attrs["ends"], attrs["steps"]):
        axis = _phys(axis, x)
        start, stop, step = slice(start, end, step).indices(x.data.shape[axis])
        if step < 0 and stop < 0:
            stop = None
        index[axis] = slice(start, stop, step)
    return [V(x.data[tuple(index)], x.cl)]


def _softmax(fn):
    def handler(attrs, args, ctx):
        x = args[0]
        return [V(fn(x.data, axis=_phys(attrs.get("axis", -1), x)), x.cl)]
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
    axes = tuple(range(rank)) if axes is None else tuple(sorted(_axis(a, rank) for a in axes))
    keep = bool(attrs.get("keepdim", False))
    fn = _REDUCERS[attrs["kind"]]
    if not x.cl:
        return [V(fn(x.data, axis=axes, keepdims=keep), False)]
    phys = tuple(_SEM_TO_PHYS[a] for a in axes)
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
    axis = _axis(attrs.get("axis", 0), jnp.ndim(x))
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
    axis = _axis(attrs["axis"], jnp.ndim(x))
    if axis != 0 and x.shape[0] == 1 and src.shape[0] != 1:  # a buffer made for the traced batch of one
        x = jnp.broadcast_to(x, (src.shape[0],) + x.shape[1:])
    start, stop, step = slice(attrs.get("start"), attrs.get("end"), attrs.get("step", 1)).indices(x.shape[axis])
    index = [slice(None)] * jnp.ndim(x)
    index[axis] = slice(start, stop, step)
    return [V(x.at[tuple(index)].set(src), False)]


def _gather_elements(attrs, args, ctx):
    x, indices = plain(args[0]), jnp.asarray(args[1].data)
    axis = _axis(attrs.get("axis", 0), jnp.ndim(x))
    indices = jnp.where(indices < 0, indices + x.shape[axis], indices)
    return [V(jnp.take_along_axis(x, indices, axis=axis), False)]


def _argmax(attrs, args, ctx):
    x = plain(args[0])
    axis = _axis(attrs.get("axis", 0), jnp.ndim(x))
    fn = jnp.argmin if attrs.get("min") else jnp.argmax
    return [V(fn(x, axis=axis, keepdims=bool(attrs.get("keepdim", False))), False)]


def _cumsum(attrs, args, ctx):
    x = plain(args[0])
    axis = _axis(attrs.get("axis", 0), jnp.ndim(x))
    if attrs.get("reverse"):
        x = jnp.flip(x, axis)
    y = jnp.cumsum(x, axis=axis)
    if attrs.get("exclusive"):
        y = y - x
    return [V(jnp.flip(y, axis) if attrs.get("reverse") else y, False)]


# ---------------------------------------------------------------------------------------------
# Shape ops: they see the source framework's tensor.


def _target_shape(shape, target, allowzero=False):
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
    return [V(jnp.reshape(x, _target_shape(x.shape, attrs["shape"], attrs.get("allowzero", False))), False)]


def _flatten(attrs, args, ctx):
    x = plain(args[0])
    rank = jnp.ndim(x)
    if rank == 0:
        return [V(jnp.reshape(x, (1,)), False)]
    start, end = _axis(attrs.get("start", 0), rank), _axis(attrs.get("end", -1), rank)
    shape = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
    return [V(jnp.reshape(x, shape), False)]


def _permute(attrs, args, ctx):
    x = args[0]
    rank = jnp.ndim(x.data)
    perm = tuple(_axis(p, rank) for p in attrs["perm"])
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
    axes = tuple(a for a in (_axis(a, x.ndim) for a in axes) if x.shape[a] == 1)  # torch: non-1 dims stay
    return [V(jnp.squeeze(x, axis=axes), False)]


def _unsqueeze(attrs, args, ctx):
    x = plain(args[0])
    rank = jnp.ndim(x) + len(attrs["axes"])
    for axis in sorted(_axis(a, rank) for a in attrs["axes"]):
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
    b = _optional(args, 2)
    return [V(y if b is None else y + b, False)]


def _layer_norm(attrs, args, ctx):
    x = plain(args[0])
    rank = jnp.ndim(x)
    axes = tuple(_axis(a, rank) for a in attrs["axes"])
    return [V(ops.layer_norm(x, _optional(args, 1), _optional(args, 2), axes=axes, eps=attrs.get("eps", 1e-5)), False)]


def _stack(attrs, args, ctx):
    datas = [plain(a) for a in args]
    return [V(jnp.stack(datas, axis=_axis(attrs["axis"], jnp.ndim(datas[0]) + 1)), False)]


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


def _depth_to_space(attrs, args, ctx):
    x = plain(args[0])
    n, c, h, w = x.shape
    b = attrs["blocksize"]
    if attrs.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [V(y.reshape(n, c // (b * b), h * b, w * b), False)]


HANDLERS: dict[str, Callable] = {
    "conv": _conv,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "lp_pool": _lp_pool,
    "adaptive_avg_pool": _adaptive_avg,
    "adaptive_max_pool": _adaptive_max,
    "group_norm": _group_norm,
    "resize": _resize,
    "lrn": _lrn,
    "depth_to_space": _depth_to_space,
    **{op: _float_unary(fn) for op, fn in _UNARY.items()},
    **{op: _binary(fn) for op, fn in _BINARY.items()},
    "where": _where,
    "prelu": _prelu,
    "quantize": _quantize,
    "dequantize": _dequantize,
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


def run_node(node: Node, args: list, ctx: Ctx) -> list[V]:
    """Run one node on its argument values; a bad shape or attribute is a `JaxvisError` naming the node."""
    try:
        return HANDLERS[node.op](node.attr, args, ctx)
    except (ValueError, TypeError, IndexError, KeyError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise JaxvisError(f"graph op {node.op!r} of {node.name or node.outputs[0]!r} cannot run: {message}") from None


class GraphModule(nn.Module):
    """Runs an `ir.Graph` (see the module docstring for the call contract)."""

    graph: Graph
    conv_impl: str = "auto"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.graph.layer_names

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        graph = self.graph
        outputs = graph.layer_names if outputs is None else tuple(outputs)
        values = graph.layer_values
        for name in outputs:
            if name not in values:
                raise unknown_name(f"layer of model {graph.name}", name, graph.layer_names)
        channels = graph.image_shape[2]
        if x.ndim != 4 or x.shape[-1] != channels:
            raise JaxvisError(f"model {graph.name} takes inputs of shape [batch, height, width, {channels}], "
                              f"got {tuple(x.shape)}")
        nodes = [graph.nodes[i] for i in graph.needed_nodes([values[name] for name in outputs])]
        known: dict = {}  # weights and constants the nodes read, fetched once from the variables
        for node in nodes:
            for a in node.inputs:
                if isinstance(a, str) and a not in known and (a in graph.params or a in graph.constants):
                    known[a] = self._value(a, known)
        ctx = Ctx(relu_redirect, self.conv_impl)
        channels_first = graph.input_layout == "nchw"

        def run(x):
            env = dict(known)
            env[graph.input] = V(x, channels_first)
            for node in nodes:
                args = [env[a] if isinstance(a, str) else a for a in node.inputs]
                env.update(zip(node.outputs, run_node(node, args, ctx)))
            return {name: to_output(env[values[name]], channels_first) for name in outputs}

        if not graph.per_item:
            return run(x)
        # shapes fixed for one image: run each image as a batch of one
        found = jax.vmap(lambda xi: run(xi[None]))(x)
        return {k: v[:, 0] if v.ndim > 1 and v.shape[1] == 1 else v for k, v in found.items()}

    def _value(self, name, env):
        if name is None or not isinstance(name, str):
            return name
        if name in env:
            return env[name]
        if name in self.graph.constants:
            return V(jnp.asarray(self.graph.constants[name]))
        if name in self.graph.params:
            shape = tuple(self.graph.params[name])
            if self.is_initializing():
                value = self.param(name, lambda key: 0.05 * jax.random.normal(key, shape, jnp.float32))
            elif not self.has_variable("params", name):
                raise JaxvisError(f"the variables of model {self.graph.name} have no weight {name!r}")
            else:
                value = self.get_variable("params", name)
            env[name] = V(value)
            return env[name]
        raise JaxvisError(f"internal: value {name!r} of model {self.graph.name} is used before it is computed")



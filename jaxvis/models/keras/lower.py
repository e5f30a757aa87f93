"""A validated Keras layer graph lowered onto the graph IR, so Keras models run on `GraphModule`.

Contract: `lower(graph, input_shape=None)` returns an `ir.Graph` with `input_layout="nhwc"` and
`param_groups` whose layers are the Keras graph's layers (same names, same order), each valued as
Keras 3's inference gives it (softmax included; `GraphModule` serves `<layer>/pre_softmax`), and
whose params are `{param_key(layer)}/{weight}` with Keras's weight names, shapes and layouts, so
`variables["params"][param_key(layer)]` is the layer's weight dict as a Keras file stores it.

How: values are the Keras tensors themselves (NHWC, Keras's axes), so concat axes, Reshape,
Flatten (H·W·C), Dense and the normalization axes map directly; spatial IR ops are wrapped in the
free permutes (`permute(0,3,1,2)` in, `(0,2,3,1)` out). 'same' padding stays TensorFlow's rule,
resolved from the input size when the graph runs; depthwise and separable convs are grouped convs
on a reshaped kernel; a transposed conv's kernel is swapped and flipped by IR nodes; normalizations
are written with Keras 3's own arithmetic (`x * inv + shift`). The graph is lowered by running it
once on abstract values (`jax.eval_shape`): every node is checked as it is added and every weight
shape comes from the shapes Keras's layers see. Only a few preprocessing choices depend on the
input size (CenterCrop, GroupNormalization off the last axis): those are fixed at `input_shape`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.errors import JaxvisError
from jaxvis.models.graph import ir
from jaxvis.models.graph.executor import run_node
from jaxvis.models.graph.values import Ctx, V, plain
from jaxvis.models.keras import ops as k
from jaxvis.models.keras.activation import lower_activation
from jaxvis.models.keras.graph import Graph
from jaxvis.models.keras.normalization import GroupNorm, LayerNorm, Normalize, RMSNorm, UnitNorm, norm_axes
from jaxvis.models.keras.preprocessing import CenterCrop, Resize

__all__ = ["Emitter", "concrete_input_shape", "lower", "param_key"]

_TO_CL, _FROM_CL = (0, 3, 1, 2), (0, 2, 3, 1)


def param_key(layer_name: str) -> str:
    """A layer's key in the params tree: its name, with a nested model's '/' path separators as '|'."""
    return layer_name.replace("/", "|")


def concrete_input_shape(graph: Graph, input_shape=None) -> tuple[int, ...]:
    """The input shape (no batch) the graph is lowered at: `input_shape`, else the model's own with
    224 for an image model's open height / width."""
    shape = tuple(input_shape) if input_shape is not None else graph.input_shape
    if len(shape) == 3:
        shape = tuple(224 if d is None else d for d in shape[:2]) + (shape[2],)
    if any(d is None for d in shape):
        raise JaxvisError(f"Keras model {graph.name} has an input shape {graph.input_shape} with unknown sizes")
    return tuple(int(d) for d in shape)


class Emitter:
    """Adds IR nodes for one layer at a time, running each on abstract values (see the module docstring)."""

    def __init__(self):
        self.nodes: list[ir.Node] = []
        self.env: dict[str, V] = {}
        self.params: dict[str, tuple[int, ...]] = {}
        self.constants: dict[str, np.ndarray] = {}

    def shape(self, value: str) -> tuple[int, ...]:
        return tuple(jnp.shape(plain(self.env[value])))

    def weight(self, layer: str, weight: str, shape) -> str:
        name = f"{param_key(layer)}/{weight}"
        self.params[name] = tuple(int(d) for d in shape)
        self.env[name] = V(jnp.zeros(shape, jnp.float32))
        return name

    def const(self, layer: str, array) -> str:
        name = f"{layer}:const{len(self.constants)}"
        self.constants[name] = np.asarray(array, np.float32)
        self.env[name] = V(jnp.asarray(self.constants[name]))
        return name

    def op(self, layer: str, op: str, *inputs, **attrs) -> str:
        """One IR node on `inputs` (value names, None or numbers); returns its output's name."""
        out = f"{layer}:{len(self.nodes)}"
        node = ir.Node.make(op, inputs, (out,), attrs, layer)
        args = [self.env[a] if isinstance(a, str) else a for a in node.inputs]
        self.env[out] = run_node(node, args, Ctx())[0]
        self.nodes.append(node)
        return out

    def spatial(self, layer: str, x: str, body) -> str:
        """`body(y)` on the channels-last view of NHWC `x`, back to NHWC (both permutes are free)."""
        return self.op(layer, "permute", body(self.op(layer, "permute", x, perm=_TO_CL)), perm=_FROM_CL)


def _image(e: Emitter, node, x: str, rank: int = 4) -> tuple[int, ...]:
    shape = e.shape(x)
    if len(shape) != rank:
        what = "[batch, height, width, channels]" if rank == 4 else "[batch, steps, channels]"
        raise JaxvisError(f"Keras layer {node.name!r} ({node.class_name}) takes {what} inputs, got shape {shape}")
    return shape


def _padding(padding: str):
    return "same" if padding == "same" else ((0, 0), (0, 0))


# ---------------------------------------------------------------------------------------------
# Convolutions and pools.


def _conv(e, node, xs, w):
    op = node.op
    _image(e, node, xs[0])
    return e.spatial(node.name, xs[0], lambda y: e.op(
        node.name, "conv", y, w["kernel"], w.get("bias"), stride=op.strides, padding=_padding(op.padding),
        dilation=op.dilation, groups=op.groups))


def _depthwise_kernel(e, node, kernel: str) -> tuple[str, int]:
    """A [kh, kw, C, m] depthwise kernel as the HWIO kernel [kh, kw, 1, C*m] of a conv with C groups."""
    kh, kw, channels, multiplier = e.shape(kernel)
    return e.op(node.name, "reshape", kernel, shape=(kh, kw, 1, channels * multiplier)), channels


def _depthwise(e, node, xs, w):
    op = node.op
    _image(e, node, xs[0])
    kernel, groups = _depthwise_kernel(e, node, w["kernel"])
    return e.spatial(node.name, xs[0], lambda y: e.op(
        node.name, "conv", y, kernel, w.get("bias"), stride=op.strides, padding=_padding(op.padding),
        dilation=op.dilation, groups=groups))


def _separable(e, node, xs, w):
    op = node.op
    _image(e, node, xs[0])
    kernel, groups = _depthwise_kernel(e, node, w["depthwise_kernel"])

    def body(y):
        y = e.op(node.name, "conv", y, kernel, None, stride=op.strides, padding=_padding(op.padding),
                 dilation=op.dilation, groups=groups)
        return e.op(node.name, "conv", y, w["pointwise_kernel"], w.get("bias"))

    return e.spatial(node.name, xs[0], body)


def _conv_transpose(e, node, xs, w):
    """Keras 3's `lax.conv_transpose(transpose_kernel=True)`: the IR's transposed conv on the kernel
    with its in / out axes swapped and its taps flipped, Keras's padding rewritten as the IR's."""
    op = node.op
    _image(e, node, xs[0])
    kh, kw = op.kernel_size
    kernel = e.op(node.name, "permute", w["kernel"], perm=(0, 1, 3, 2))
    kernel = e.op(node.name, "slice", kernel, axes=(0, 1), starts=(-1, -1), ends=(-kh - 1, -kw - 1), steps=(-1, -1))
    padding, extra = [], []
    for i in range(2):
        span = (op.kernel_size[i] - 1) * op.dilation[i]
        s = op.strides[i]
        out_pad = None if op.output_padding is None else op.output_padding[i]
        if op.padding == "valid":
            out_pad = max(span + 1, s) - span - 1 if out_pad is None else out_pad
            before, after = span, span + out_pad
        else:
            total = s + span - 1 if out_pad is None else span + 1 + (span + 1) % 2 - 2 + out_pad
            before = min(total // 2 + total % 2, span)
            after = total - before
        padding.append((span - before, max(span - after, 0)))
        extra.append(max(after - span, 0))
    return e.spatial(node.name, xs[0], lambda y: e.op(
        node.name, "conv", y, kernel, w.get("bias"), stride=op.strides, padding=tuple(padding),
        dilation=op.dilation, transposed=True, output_padding=tuple(extra)))


def _conv1d(e, node, xs, w):
    """Conv1D as a (k, 1) Conv2D on [batch, steps, 1, channels]."""
    op = node.op
    _image(e, node, xs[0], rank=3)
    k_, cin, filters = e.shape(w["kernel"])
    kernel = e.op(node.name, "reshape", w["kernel"], shape=(k_, 1, cin, filters))
    if op.padding == "causal":
        padding = ((op.dilation * (op.kernel_size - 1), 0), (0, 0))
    else:
        padding = _padding(op.padding)
    y = e.op(node.name, "unsqueeze", xs[0], axes=(2,))
    y = e.spatial(node.name, y, lambda y: e.op(
        node.name, "conv", y, kernel, w.get("bias"), stride=(op.strides, 1), padding=padding,
        dilation=(op.dilation, 1), groups=op.groups))
    return e.op(node.name, "squeeze", y, axes=(2,))


def _pool_body(e, name, kind, size, strides, padding):
    if kind == "max":
        return lambda y: e.op(name, "max_pool", y, kernel=size, stride=strides, padding=_padding(padding))
    return lambda y: e.op(name, "avg_pool", y, kernel=size, stride=strides, padding=_padding(padding),
                          count_include_pad=False)


def _pool(e, node, xs, w):
    op = node.op
    _image(e, node, xs[0])
    return e.spatial(node.name, xs[0], _pool_body(e, node.name, op.kind, op.pool_size, op.strides, op.padding))


def _pool1d(e, node, xs, w):
    op = node.op
    _image(e, node, xs[0], rank=3)
    y = e.op(node.name, "unsqueeze", xs[0], axes=(2,))
    y = e.spatial(node.name, y, _pool_body(e, node.name, op.kind, (op.pool_size, 1), (op.strides, 1), op.padding))
    return e.op(node.name, "squeeze", y, axes=(2,))


def _global_pool(rank, axes):
    def lower(e, node, xs, w):
        _image(e, node, xs[0], rank=rank)
        kind = "mean" if node.op.kind == "avg" else "max"
        return e.op(node.name, "reduce", xs[0], kind=kind, axes=axes, keepdim=node.op.keepdims)
    return lower


def _upsample(e, node, xs, w):
    _image(e, node, xs[0])
    sh, sw = node.op.size
    return e.spatial(node.name, xs[0], lambda y: e.op(
        node.name, "resize", y, sizes=(None, None), scales=(float(sh), float(sw)), mode="nearest",
        coordinate_mode="asymmetric", nearest_mode="floor"))


def _resize(e, node, xs, w):
    op = node.op
    _image(e, node, xs[0])
    return e.spatial(node.name, xs[0], lambda y: e.op(
        node.name, "image_resize", y, size=(op.height, op.width), method=op.interpolation, antialias=op.antialias,
        crop_to_aspect_ratio=op.crop_to_aspect_ratio, pad_to_aspect_ratio=op.pad_to_aspect_ratio,
        fill_value=op.fill_value))


def _center_crop(e, node, xs, w):
    """The centred window; an input smaller on either side is cropped to the aspect ratio and resized
    (Keras's `smart_resize`). Which of the two is decided at the lowering's input size."""
    op = node.op
    _, h, w_, _ = _image(e, node, xs[0])
    dh, dw = h - op.height, w_ - op.width
    if dh >= 0 and dw >= 0:
        return e.op(node.name, "slice", xs[0], axes=(1, 2), starts=(dh // 2, dw // 2),
                    ends=(dh // 2 + op.height, dw // 2 + op.width), steps=(1, 1))
    return e.spatial(node.name, xs[0], lambda y: e.op(
        node.name, "image_resize", y, size=(op.height, op.width), crop_to_aspect_ratio=True))


def _zero_pad(e, node, xs, w):
    _image(e, node, xs[0])
    return e.op(node.name, "pad", xs[0], pads=((0, 0), *node.op.padding, (0, 0)))


def _crop(e, node, xs, w):
    _image(e, node, xs[0])
    (top, bottom), (left, right) = node.op.cropping
    return e.op(node.name, "slice", xs[0], axes=(1, 2), starts=(top, left),
                ends=(-bottom if bottom else None, -right if right else None), steps=(1, 1))


# ---------------------------------------------------------------------------------------------
# Dense, shapes, merges and arithmetic.


def _dense(e, node, xs, w):
    y = e.op(node.name, "matmul", xs[0], w["kernel"])
    return e.op(node.name, "add", y, w["bias"]) if "bias" in w else y


def _reshape(e, node, xs, w):
    target = node.op.target_shape
    if target is None:
        return e.op(node.name, "flatten", xs[0], start=1, end=-1)
    shape = e.shape(xs[0])[1:]
    known = math.prod(d for d in target if d != -1)
    if (-1 in target and (target.count(-1) > 1 or math.prod(shape) % max(known, 1))) or \
            (-1 not in target and known != math.prod(shape)):
        raise JaxvisError(f"Keras layer {node.name!r} cannot reshape {shape} to {target}")
    return e.op(node.name, "reshape", xs[0], shape=(0, *target))


def _identity(e, node, xs, w):
    return xs[0]


def _operand(e, node, value):
    """A Keras constant as an IR operand: a Python number stays one (weakly typed, as in Keras)."""
    return e.const(node.name, value) if isinstance(value, (tuple, list)) else value


def _rescale(e, node, xs, w):
    op = node.op
    y = e.op(node.name, "mul", xs[0], _operand(e, node, op.scale))
    return e.op(node.name, "add", y, _operand(e, node, op.offset))


def _merge(e, node, xs, w):
    shapes = [e.shape(x) for x in xs]
    try:  # Keras 3 merge layers broadcast (a squeeze-excitation's [B,1,1,C] * [B,H,W,C])
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise JaxvisError(f"Keras layer {node.name!r} ({node.op.kind}) gets inputs of shapes {sorted(set(shapes))} "
                          f"that do not broadcast") from None
    kind = node.op.kind
    if kind == "Subtract":
        return e.op(node.name, "sub", xs[0], xs[1])
    y = xs[0]
    for x in xs[1:]:
        y = e.op(node.name, k.MERGES[kind], y, x)
    return e.op(node.name, "div", y, float(len(xs))) if kind == "Average" else y


def _concat(e, node, xs, w):
    rank = len(e.shape(xs[0]))
    if node.op.axis % rank == 0:
        raise JaxvisError(f"Keras layer {node.name!r} (Concatenate) concatenates on the batch axis")
    return e.op(node.name, "concat", *xs, axis=node.op.axis)


def _prelu(e, node, xs, w):
    return e.op(node.name, "prelu", xs[0], w["alpha"])


def _permute(e, node, xs, w):
    dims, rank = node.op.dims, len(e.shape(xs[0]))
    if sorted(dims) != list(range(1, rank)):
        raise JaxvisError(f"Keras layer {node.name!r} (Permute) dims {dims} do not permute a rank-{rank} input")
    if (0, *dims) == _TO_CL:  # two transposes, so the result is a plain tensor (XLA fuses them)
        return e.op(node.name, "permute", e.op(node.name, "permute", xs[0], perm=(0, 2, 1, 3)), perm=(0, 3, 2, 1))
    return e.op(node.name, "permute", xs[0], perm=(0, *dims))


def _scale(e, node, xs, w):
    return e.op(node.name, "mul", xs[0], w["gamma"])


def _arithmetic(e, node, xs, w):
    inputs = iter(xs)
    operands = [next(inputs) if o is None else _operand(e, node, o) for o in node.op.operands]
    kind = node.op.kind
    if kind == "Square":
        return e.op(node.name, "mul", operands[0], operands[0])
    return e.op(node.name, k.ARITHMETIC[kind], *operands)


# ---------------------------------------------------------------------------------------------
# Normalizations, with Keras 3's arithmetic.


def _affine(e, name, x, mean, variance, epsilon, gamma=None, beta=None):
    """`x * inv + shift` with `inv = rsqrt(variance + epsilon) * gamma`, `shift = beta - mean * inv`."""
    inv = e.op(name, "rsqrt", e.op(name, "add", variance, epsilon))
    if gamma is not None:
        inv = e.op(name, "mul", inv, gamma)
    shift = e.op(name, "mul", e.op(name, "neg", mean), inv)
    if beta is not None:
        shift = e.op(name, "add", shift, beta)
    return e.op(name, "add", e.op(name, "mul", x, inv), shift)


def _moments(e, name, x, axes):
    mean = e.op(name, "reduce", x, kind="mean", axes=axes, keepdim=True)
    centered = e.op(name, "sub", x, mean)
    return mean, e.op(name, "reduce", e.op(name, "mul", centered, centered), kind="mean", axes=axes, keepdim=True)


def _batch_norm(e, node, xs, w):
    op, rank = node.op, len(e.shape(xs[0]))
    if op.axis >= 0 and op.axis != rank - 1:
        raise JaxvisError(f"Keras layer {node.name!r} (BatchNormalization) normalizes axis {op.axis} of a rank-{rank} "
                          f"input; only the last (channel) axis is supported")
    return _affine(e, node.name, xs[0], w["moving_mean"], w["moving_variance"], op.epsilon, w.get("gamma"),
                   w.get("beta"))


def _layer_norm(e, node, xs, w):
    op, shape = node.op, e.shape(xs[0])
    axes = norm_axes(node.name, "LayerNormalization", op.axis, len(shape))
    target = tuple(shape[a] if a in axes else 1 for a in range(len(shape)))
    last = axes == (len(shape) - 1,)
    gamma, beta = (p if p is None or last else e.op(node.name, "reshape", p, shape=target)
                   for p in (w.get("gamma"), w.get("beta")))
    mean, variance = _moments(e, node.name, xs[0], axes)
    if op.rms_scaling:  # Keras 3 scales by the variance here, not the mean square
        y = e.op(node.name, "mul", xs[0], e.op(node.name, "rsqrt", e.op(node.name, "add", variance, op.epsilon)))
        return y if gamma is None else e.op(node.name, "mul", y, gamma)
    return _affine(e, node.name, xs[0], mean, variance, op.epsilon, gamma, beta)


def _rms_norm(e, node, xs, w):
    op, x = node.op, xs[0]
    axes = norm_axes(node.name, "RMSNormalization", op.axis, len(e.shape(x)))
    square = e.op(node.name, "reduce", e.op(node.name, "mul", x, x), kind="mean", axes=axes, keepdim=True)
    y = e.op(node.name, "mul", x, e.op(node.name, "rsqrt", e.op(node.name, "add", square, op.epsilon)))
    return e.op(node.name, "mul", y, w["scale"])


def _group_norm(e, node, xs, w):
    op, shape = node.op, e.shape(xs[0])
    axis = norm_axes(node.name, "GroupNormalization", (op.axis,), len(shape))[0]
    channels = shape[axis]
    if channels % op.groups:
        raise JaxvisError(f"Keras layer {node.name!r} (GroupNormalization) splits {channels} channels into "
                          f"{op.groups} groups")
    # leading axes copied (0), so a norm over the last axis holds at any image size
    grouped = (0,) * axis + (op.groups, channels // op.groups) + tuple(shape[axis + 1:])
    x = e.op(node.name, "reshape", xs[0], shape=grouped)
    broadcast = [1] * len(shape)
    broadcast[axis] = channels // op.groups
    broadcast.insert(axis, op.groups)
    gamma, beta = (None if p is None else e.op(node.name, "reshape", p, shape=tuple(broadcast))
                   for p in (w.get("gamma"), w.get("beta")))
    reduce = tuple(a for a in range(1, len(shape) + 1) if a != axis)
    mean, variance = _moments(e, node.name, x, reduce)
    y = _affine(e, node.name, x, mean, variance, op.epsilon, gamma, beta)
    return e.op(node.name, "reshape", y, shape=(0,) * axis + (channels,) + tuple(shape[axis + 1:]))


def _unit_norm(e, node, xs, w):
    x = xs[0]
    axes = norm_axes(node.name, "UnitNormalization", node.op.axis, len(e.shape(x)))
    inv = e.op(node.name, "rsqrt", e.op(node.name, "reduce", x, kind="sum_square", axes=axes, keepdim=True))
    return e.op(node.name, "mul", x, e.op(node.name, "minimum", inv, 1.0 / 1e-12))


def _normalize(e, node, xs, w):
    op, shape = node.op, e.shape(xs[0])
    kept = norm_axes(node.name, "Normalization", op.axis, len(shape))
    broadcast = tuple(shape[d] if d in kept else 1 for d in range(len(shape)))
    if op.mean is None:
        mean, variance = (e.op(node.name, "reshape", w[n], shape=broadcast) for n in ("mean", "variance"))
    else:
        mean, variance = (e.const(node.name, _stats(node, v, kept, broadcast)) for v in (op.mean, op.variance))
    denominator = e.op(node.name, "maximum", e.op(node.name, "sqrt", variance), 1e-7)  # keras.backend.epsilon()
    if op.invert:
        return e.op(node.name, "add", mean, e.op(node.name, "mul", xs[0], denominator))
    return e.op(node.name, "div", e.op(node.name, "sub", xs[0], mean), denominator)


def _stats(node, value, kept, broadcast) -> np.ndarray:
    """A Normalization's config mean / variance on the kept axes, broadcast to `broadcast`."""
    value = np.asarray(value, np.float32)
    if value.ndim:
        if value.ndim > len(kept):
            raise JaxvisError(f"Keras layer {node.name!r} (Normalization) has a mean/variance of rank {value.ndim} "
                              f"for {len(kept)} kept axes")
        expanded = [1] * len(broadcast)
        for i in range(1, value.ndim + 1):
            expanded[kept[-i]] = value.shape[-i]
        value = value.reshape(expanded)
    return np.broadcast_to(value, broadcast)


_LOWER = {
    k.Conv: _conv, k.DepthwiseConv: _depthwise, k.SeparableConv: _separable, k.ConvTranspose: _conv_transpose,
    k.Conv1D: _conv1d, k.Dense: _dense, k.BatchNorm: _batch_norm, k.Pool: _pool, k.Pool1D: _pool1d,
    k.GlobalPool: _global_pool(4, (1, 2)), k.GlobalPool1D: _global_pool(3, (1,)), k.ZeroPad: _zero_pad,
    k.Crop: _crop, k.UpSample: _upsample, k.Reshape: _reshape, k.Identity: _identity, k.Rescale: _rescale,
    k.Merge: _merge, k.Concat: _concat, k.PReLU: _prelu, k.Permute: _permute, k.Scale: _scale,
    k.Arithmetic: _arithmetic, LayerNorm: _layer_norm, RMSNorm: _rms_norm, GroupNorm: _group_norm,
    UnitNorm: _unit_norm, Normalize: _normalize, Resize: _resize, CenterCrop: _center_crop,
}


@functools.lru_cache(maxsize=32)
def lower(graph: Graph, input_shape: tuple | None = None) -> ir.Graph:
    """The IR graph of a Keras layer graph (see the module docstring), lowered at `input_shape` (no
    batch; default `concrete_input_shape`). Cached: one lowering per graph and size."""
    shape = concrete_input_shape(graph, input_shape)
    e = Emitter()
    layers = []

    def trace(x):
        e.env[graph.input.name] = V(x)
        value_of = {graph.input.name: graph.input.name}  # Keras layer -> the IR value holding its output
        for node in graph.nodes[1:]:
            xs = [value_of[name] for name in node.inputs]
            weights = {}
            if node.op.weight_names:
                shapes = node.op.weight_shapes(e.shape(xs[0]))
                weights = {name: e.weight(node.name, name, shapes[name]) for name in node.op.weight_names}
            value = lower_activation(e, node.name, node.activation, _LOWER[type(node.op)](e, node, xs, weights))
            value_of[node.name] = value
            layers.append((node.name, value))
        return x

    jax.eval_shape(trace, jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    values = dict(layers)
    return ir.Graph(
        name=graph.name, input=graph.input.name, input_shape=(None, *shape), nodes=tuple(e.nodes),
        params=e.params, constants=e.constants, layers=tuple(layers),
        outputs=tuple(values[name] for name in graph.outputs), source_format="keras", input_layout="nhwc",
        param_groups=True)

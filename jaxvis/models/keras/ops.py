"""The ops of a Keras layer graph, as frozen dataclasses that run on JAX arrays.

Contract: an op's `__call__(name, params, xs, impl)` maps its input arrays `xs` (and its layer's
params, with Keras's weight names and layouts) to the layer's output *before* its activation;
`Node.activation` (an `Activation`) is applied by the graph module. `weight_names` lists the
layer's weights in Keras's `layer.weights` order and `weight_shapes(input_shape)` their shapes.

Layouts and arithmetic follow Keras/TensorFlow exactly: `padding="same"` pads
`total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)` with `total // 2` before (convs and
pools alike); `AveragePooling2D(padding="same")` divides by the number of real (unpadded) inputs;
`Flatten` flattens NHWC in H, W, C order; BatchNormalization uses Keras 3's own arithmetic, so
rounding matches too. Depthwise and 1x1 convs use the fastest formulation of `jaxvis.models.layers`
(`impl`); dilated convs use `lax` directly. Long: the one catalogue of the Keras ops, each small.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
from jax import lax

from jaxvis.errors import JaxvisError
from jaxvis.models import layers as conv_layers

__all__ = [
    "ARITHMETIC", "Arithmetic", "BatchNorm", "Concat", "Conv", "Conv1D", "ConvTranspose", "Crop", "Dense",
    "DepthwiseConv", "GlobalPool", "GlobalPool1D", "Identity", "Input", "MERGES", "Merge", "PReLU", "Permute", "Pool",
    "Pool1D", "Rescale", "Reshape", "Scale", "SeparableConv", "UpSample", "ZeroPad", "pool2d",
]


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) of one spatial axis."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _spatial_padding(shape, padding: str, kernel, strides, dilation=(1, 1)):
    if padding == "valid":
        return (0, 0), (0, 0)
    return tuple(_same_padding(shape[1 + i], kernel[i], strides[i], dilation[i]) for i in range(2))


def _check_image(name: str, x) -> None:
    if x.ndim != 4:
        raise JaxvisError(
            f"Keras layer {name!r} takes [batch, height, width, channels] inputs, got shape {tuple(x.shape)}"
        )


@dataclasses.dataclass(frozen=True)
class Input:
    shape: tuple[int | None, ...]  # without the batch axis

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class Conv:
    """Conv2D: params kernel [kh, kw, Cin/groups, filters], bias [filters]."""

    filters: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str
    dilation: tuple[int, int]
    groups: int
    use_bias: bool

    @property
    def weight_names(self):
        return ("kernel", "bias") if self.use_bias else ("kernel",)

    def weight_shapes(self, shape):
        if shape[-1] % self.groups:
            raise JaxvisError(f"a Conv2D with groups={self.groups} does not fit {shape[-1]} input channels")
        shapes = {"kernel": (*self.kernel_size, shape[-1] // self.groups, self.filters)}
        return {**shapes, "bias": (self.filters,)} if self.use_bias else shapes

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        _check_image(name, x)
        pads = _spatial_padding(x.shape, self.padding, self.kernel_size, self.strides, self.dilation)
        y = _conv(x, params["kernel"], self.strides, pads, self.dilation, self.groups, impl)
        return y + params["bias"] if self.use_bias else y


def _conv(x, kernel, strides, pads, dilation, groups, impl):
    if dilation != (1, 1):
        return lax.conv_general_dilated(
            x, kernel, window_strides=strides, padding=pads, rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
        )
    return conv_layers.conv2d(x, kernel, stride=strides, padding=pads, groups=groups, impl=impl)


@dataclasses.dataclass(frozen=True)
class DepthwiseConv:
    """DepthwiseConv2D: params kernel [kh, kw, C, multiplier] (Keras layout), bias [C * multiplier]."""

    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str
    dilation: tuple[int, int]
    multiplier: int
    use_bias: bool

    @property
    def weight_names(self):
        return ("kernel", "bias") if self.use_bias else ("kernel",)

    def weight_shapes(self, shape):
        shapes = {"kernel": (*self.kernel_size, shape[-1], self.multiplier)}
        return {**shapes, "bias": (shape[-1] * self.multiplier,)} if self.use_bias else shapes

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        _check_image(name, x)
        y = _depthwise(x, params["kernel"], self.strides, self.padding, self.dilation, impl)
        return y + params["bias"] if self.use_bias else y


def _depthwise(x, kernel, strides, padding, dilation, impl):
    kh, kw, channels, multiplier = kernel.shape
    pads = _spatial_padding(x.shape, padding, (kh, kw), strides, dilation)
    return _conv(x, kernel.reshape(kh, kw, 1, channels * multiplier), strides, pads, dilation, channels, impl)


@dataclasses.dataclass(frozen=True)
class SeparableConv:
    """SeparableConv2D: depthwise_kernel [kh, kw, C, m], pointwise_kernel [1, 1, C*m, filters], bias."""

    filters: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str
    dilation: tuple[int, int]
    multiplier: int
    use_bias: bool

    @property
    def weight_names(self):
        names = ("depthwise_kernel", "pointwise_kernel")
        return names + ("bias",) if self.use_bias else names

    def weight_shapes(self, shape):
        shapes = {"depthwise_kernel": (*self.kernel_size, shape[-1], self.multiplier),
                  "pointwise_kernel": (1, 1, shape[-1] * self.multiplier, self.filters)}
        return {**shapes, "bias": (self.filters,)} if self.use_bias else shapes

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        _check_image(name, x)
        y = _depthwise(x, params["depthwise_kernel"], self.strides, self.padding, self.dilation, impl)
        y = conv_layers.conv2d(y, params["pointwise_kernel"], impl=impl)
        return y + params["bias"] if self.use_bias else y


@dataclasses.dataclass(frozen=True)
class Dense:
    """Dense on the last axis: kernel [in, units], bias [units]."""

    units: int
    use_bias: bool

    @property
    def weight_names(self):
        return ("kernel", "bias") if self.use_bias else ("kernel",)

    def weight_shapes(self, shape):
        shapes = {"kernel": (shape[-1], self.units)}
        return {**shapes, "bias": (self.units,)} if self.use_bias else shapes

    def __call__(self, name, params, xs, impl):
        x, kernel = xs[0], params["kernel"]
        if x.shape[-1] != kernel.shape[0]:
            raise JaxvisError(
                f"Keras layer {name!r} (Dense) takes {kernel.shape[0]} inputs but gets {x.shape[-1]}: "
                f"the model needs the input size it was built for")
        y = jnp.matmul(x, kernel)
        return y + params["bias"] if self.use_bias else y


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    """BatchNormalization at inference: (x - moving_mean) / sqrt(moving_variance + eps) * gamma + beta."""

    epsilon: float
    center: bool
    scale: bool
    axis: int = -1

    @property
    def weight_names(self):
        return (
            (("gamma",) if self.scale else ()) + (("beta",) if self.center else ()) + ("moving_mean", "moving_variance")
        )

    def weight_shapes(self, shape):
        return {name: (shape[-1],) for name in self.weight_names}

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        if self.axis >= 0 and self.axis != x.ndim - 1:
            raise JaxvisError(
                f"Keras layer {name!r} (BatchNormalization) normalizes axis {self.axis} of a rank-{x.ndim} "
                f"input; only the last (channel) axis is supported"
            )
        if x.shape[-1] != params["moving_mean"].shape[0]:
            raise JaxvisError(f"Keras layer {name!r} (BatchNormalization) normalizes "
                              f"{params['moving_mean'].shape[0]} channels but gets {x.shape[-1]}")
        # Keras 3's arithmetic (backend.jax.nn.batch_normalization), so rounding matches too.
        inv = lax.rsqrt(params["moving_variance"] + self.epsilon)
        if self.scale:
            inv = inv * params["gamma"]
        shift = -params["moving_mean"] * inv
        if self.center:
            shift = shift + params["beta"]
        return x * inv + shift


@dataclasses.dataclass(frozen=True)
class Pool:
    """MaxPooling2D / AveragePooling2D with TensorFlow's 'same' / 'valid' semantics."""

    kind: str  # "max" or "avg"
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        _check_image(name, x)
        pads = _spatial_padding(x.shape, self.padding, self.pool_size, self.strides)
        return pool2d(x, self.kind, self.pool_size, self.strides, pads)


def pool2d(x, kind: str, window: tuple[int, int], strides: tuple[int, int], pads):
    """Max / average pooling of NHWC `x`; 'same'-style padding never counts in a max or an average.

    Max pooling is the maximum of the window's kh*kw strided slices: on CPU its forward + backward is
    several times faster than `lax.reduce_window` (whose gradient is a select-and-scatter; see
    benchmarks/README.md). Values are identical; at ties the gradient is shared instead of going to
    one input. Average pooling stays a `reduce_window` sum, which was the faster of the two there.
    """
    dims, steps = (1, *window, 1), (1, *strides, 1)
    padding = ((0, 0), *pads, (0, 0))
    if kind == "max":
        return _max_pool_slices(x, window, strides, pads)
    total = lax.reduce_window(x, 0.0, lax.add, dims, steps, padding)
    if all(p == (0, 0) for p in pads):
        return total / (window[0] * window[1])
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    counts = lax.reduce_window(ones, 0.0, lax.add, dims, steps, padding)
    return total / counts


def _max_pool_slices(x, window, strides, pads):
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-jnp.inf)
    batch, height, width, channels = x.shape
    (kh, kw), (sh, sw) = window, strides
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    if out_h < 1 or out_w < 1:
        raise JaxvisError(f"a {kh}x{kw} max pooling does not fit an input of {height}x{width}")
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = lax.slice(x, (0, i, j, 0), (batch, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, channels),
                            (1, sh, sw, 1))
            out = tap if out is None else jnp.maximum(out, tap)
    return out


@dataclasses.dataclass(frozen=True)
class GlobalPool:
    kind: str
    keepdims: bool

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        _check_image(name, x)
        reduce = jnp.mean if self.kind == "avg" else jnp.max
        return reduce(x, axis=(1, 2), keepdims=self.keepdims)


@dataclasses.dataclass(frozen=True)
class Pool1D:
    """MaxPooling1D / AveragePooling1D on [batch, steps, channels], TensorFlow's 'same' / 'valid'."""

    kind: str
    pool_size: int
    strides: int
    padding: str

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        if x.ndim != 3:
            raise JaxvisError(f"Keras layer {name!r} takes [batch, steps, channels] inputs, got shape {tuple(x.shape)}")
        image = x[:, :, None, :]
        pads = _spatial_padding(image.shape, self.padding, (self.pool_size, 1), (self.strides, 1))
        return pool2d(image, self.kind, (self.pool_size, 1), (self.strides, 1), pads)[:, :, 0, :]


@dataclasses.dataclass(frozen=True)
class GlobalPool1D:
    """GlobalAveragePooling1D / GlobalMaxPooling1D over the steps of [batch, steps, channels]."""

    kind: str
    keepdims: bool

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        if x.ndim != 3:
            raise JaxvisError(f"Keras layer {name!r} takes [batch, steps, channels] inputs, got shape {tuple(x.shape)}")
        reduce = jnp.mean if self.kind == "avg" else jnp.max
        return reduce(x, axis=1, keepdims=self.keepdims)


@dataclasses.dataclass(frozen=True)
class ZeroPad:
    padding: tuple[tuple[int, int], tuple[int, int]]

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        _check_image(name, xs[0])
        return jnp.pad(xs[0], ((0, 0), *self.padding, (0, 0)))


@dataclasses.dataclass(frozen=True)
class Crop:
    cropping: tuple[tuple[int, int], tuple[int, int]]

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        _check_image(name, x)
        (top, bottom), (left, right) = self.cropping
        return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right, :]


@dataclasses.dataclass(frozen=True)
class UpSample:
    size: tuple[int, int]

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        _check_image(name, xs[0])
        return jnp.repeat(jnp.repeat(xs[0], self.size[0], axis=1), self.size[1], axis=2)


@dataclasses.dataclass(frozen=True)
class Reshape:
    target_shape: tuple[int, ...] | None  # None: Flatten

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        target = (-1,) if self.target_shape is None else self.target_shape
        try:
            return x.reshape((x.shape[0], *target))
        except (TypeError, ValueError):
            raise JaxvisError(f"Keras layer {name!r} cannot reshape {tuple(x.shape[1:])} to {target}") from None


@dataclasses.dataclass(frozen=True)
class Identity:
    """Dropout and friends: the identity at inference (Activation layers are an Identity + activation)."""

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        return xs[0]


@dataclasses.dataclass(frozen=True)
class Rescale:
    scale: float | tuple[float, ...]
    offset: float | tuple[float, ...]

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        return x * jnp.asarray(self.scale, x.dtype) + jnp.asarray(self.offset, x.dtype)


MERGES = {
    "Add": lambda xs: functools.reduce(jnp.add, xs),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": lambda xs: functools.reduce(jnp.multiply, xs),
    "Average": lambda xs: functools.reduce(jnp.add, xs) / len(xs),
    "Maximum": lambda xs: functools.reduce(jnp.maximum, xs),
    "Minimum": lambda xs: functools.reduce(jnp.minimum, xs),
}


@dataclasses.dataclass(frozen=True)
class Merge:
    kind: str  # a key of MERGES

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        try:  # Keras 3 merge layers broadcast (a squeeze-excitation's [B,1,1,C] * [B,H,W,C])
            jnp.broadcast_shapes(*(tuple(x.shape) for x in xs))
        except ValueError:
            shapes = sorted({tuple(x.shape) for x in xs})
            raise JaxvisError(f"Keras layer {name!r} ({self.kind}) gets inputs of shapes {shapes} that do not "
                              f"broadcast") from None
        return MERGES[self.kind](xs)


@dataclasses.dataclass(frozen=True)
class Concat:
    axis: int

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        rank = xs[0].ndim
        if self.axis % rank == 0:
            raise JaxvisError(f"Keras layer {name!r} (Concatenate) concatenates on the batch axis")
        return jnp.concatenate(xs, axis=self.axis)


@dataclasses.dataclass(frozen=True)
class Conv1D:
    """Conv1D on [batch, steps, channels]: kernel [k, Cin/groups, filters], bias [filters]; padding
    'valid', 'same' (TensorFlow's) or 'causal' (dilation * (k - 1) zeros before)."""

    filters: int
    kernel_size: int
    strides: int
    padding: str
    dilation: int
    groups: int
    use_bias: bool

    @property
    def weight_names(self):
        return ("kernel", "bias") if self.use_bias else ("kernel",)

    def weight_shapes(self, shape):
        if shape[-1] % self.groups:
            raise JaxvisError(f"a Conv1D with groups={self.groups} does not fit {shape[-1]} input channels")
        shapes = {"kernel": (self.kernel_size, shape[-1] // self.groups, self.filters)}
        return {**shapes, "bias": (self.filters,)} if self.use_bias else shapes

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        if x.ndim != 3:
            raise JaxvisError(f"Keras layer {name!r} (Conv1D) takes [batch, steps, channels] inputs, got shape "
                              f"{tuple(x.shape)}")
        if self.padding == "causal":
            pads = [(self.dilation * (self.kernel_size - 1), 0)]
        elif self.padding == "same":
            pads = [_same_padding(x.shape[1], self.kernel_size, self.strides, self.dilation)]
        else:
            pads = [(0, 0)]
        y = lax.conv_general_dilated(x, params["kernel"], window_strides=(self.strides,), padding=pads,
                                     rhs_dilation=(self.dilation,), dimension_numbers=("NHC", "HIO", "NHC"),
                                     feature_group_count=self.groups)
        return y + params["bias"] if self.use_bias else y


@dataclasses.dataclass(frozen=True)
class ConvTranspose:
    """Conv2DTranspose: kernel [kh, kw, filters, Cin] (Keras layout), bias [filters].

    Keras 3's JAX arithmetic: `lax.conv_transpose(transpose_kernel=True)` with the padding of
    `backend_utils._convert_conv_transpose_padding_args_from_keras_to_jax`.
    """

    filters: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str
    output_padding: tuple[int, int] | None
    dilation: tuple[int, int]
    use_bias: bool

    @property
    def weight_names(self):
        return ("kernel", "bias") if self.use_bias else ("kernel",)

    def weight_shapes(self, shape):
        shapes = {"kernel": (*self.kernel_size, self.filters, shape[-1])}
        return {**shapes, "bias": (self.filters,)} if self.use_bias else shapes

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        _check_image(name, x)
        pads = []
        for i in range(2):
            k = (self.kernel_size[i] - 1) * self.dilation[i] + 1
            s = self.strides[i]
            out_pad = None if self.output_padding is None else self.output_padding[i]
            if self.padding == "valid":
                out_pad = max(k, s) - k if out_pad is None else out_pad
                pads.append((k - 1, k - 1 + out_pad))
            else:
                total = s + k - 2 if out_pad is None else k + k % 2 - 2 + out_pad
                left = min(total // 2 + total % 2, k - 1)
                pads.append((left, total - left))
        y = lax.conv_transpose(x, params["kernel"], self.strides, pads, rhs_dilation=self.dilation,
                               dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
        return y + params["bias"] if self.use_bias else y


@dataclasses.dataclass(frozen=True)
class PReLU:
    """PReLU: relu(x) - alpha * relu(-x); alpha shaped like the input without its batch axis, with
    size 1 on the `shared_axes`."""

    shared_axes: tuple[int, ...]

    weight_names = ("alpha",)

    def weight_shapes(self, shape):
        return {"alpha": tuple(1 if i + 1 in self.shared_axes else d for i, d in enumerate(shape[1:]))}

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        return jnp.maximum(x, 0) + (-params["alpha"]) * jnp.maximum(-x, 0)


@dataclasses.dataclass(frozen=True)
class Permute:
    """Permute: `dims` index the input's axes after the batch axis, from 1."""

    dims: tuple[int, ...]

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        if sorted(self.dims) != list(range(1, x.ndim)):
            raise JaxvisError(f"Keras layer {name!r} (Permute) dims {self.dims} do not permute a rank-{x.ndim} input")
        return jnp.transpose(x, (0, *self.dims))


@dataclasses.dataclass(frozen=True)
class Scale:
    """ConvNeXt's LayerScale: x * gamma [projection_dim]."""

    dim: int

    weight_names = ("gamma",)

    def weight_shapes(self, shape):
        return {"gamma": (self.dim,)}

    def __call__(self, name, params, xs, impl):
        return xs[0] * params["gamma"]


ARITHMETIC = {
    "Add": jnp.add, "Subtract": jnp.subtract, "Multiply": jnp.multiply, "Divide": jnp.true_divide,
    "TrueDivide": jnp.true_divide, "Maximum": jnp.maximum, "Minimum": jnp.minimum, "Power": jnp.power,
    "Negative": jnp.negative, "Abs": jnp.abs, "Absolute": jnp.abs, "Square": jnp.square, "Sqrt": jnp.sqrt,
    "Exp": jnp.exp, "Log": jnp.log, "Reciprocal": jnp.reciprocal,
}
_UNARY = ("Negative", "Abs", "Absolute", "Square", "Sqrt", "Exp", "Log", "Reciprocal")


@dataclasses.dataclass(frozen=True)
class Arithmetic:
    """A Keras 3 functional-API operation node on tensors (`x + 3.0`, `x * y`, `ops.sqrt(x)`, saved with
    module `keras.src.ops.numpy`): `operands` lists, in call order, None for each graph input (in
    `Node.inputs` order) and a constant (a float or nested tuples) for each literal operand."""

    kind: str  # a key of ARITHMETIC
    operands: tuple

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        inputs = iter(xs)
        values = [next(inputs) if o is None else jnp.asarray(o, xs[0].dtype) if isinstance(o, tuple) else o
                  for o in self.operands]  # Python numbers stay weakly typed, as in Keras
        return ARITHMETIC[self.kind](*values)

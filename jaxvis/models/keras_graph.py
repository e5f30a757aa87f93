"""A Flax module that runs a Keras layer graph, described by plain Python data, by Keras layer names.

Contract: `KerasGraph(graph).apply(variables, x, outputs=names, relu_redirect=r)` takes `x` shaped
like the graph's input (`[B, H, W, C]` for image models, channels last) and returns
`{name: activation}` for exactly `names`, computing only the layers those outputs depend on. A
layer with a softmax activation (`Dense(activation="softmax")`, `Activation("softmax")`,
`Softmax`) is captured *before* its softmax (so `predictions` gives logits); the layers after it
still get the probabilities. Every ReLU / ReLU6 runs through `jaxvis.models.activations` with
`relu_redirect`. Results equal Keras 3's inference (`training=False`) to float32 rounding.

The graph is data, never code:

* `LayerConfig(class_name, name, config, inputs)`: one Keras layer as its class name, its name,
  its Keras `get_config()` dict (Keras 2 or Keras 3 spelling) and the names of the layers feeding
  it. `build_graph(layers)` validates every layer (an unsupported class is a `JaxvisError` naming
  its class and name; a `Lambda` is refused because it would run code from the file) and returns
  a hashable `Graph` of parsed ops in topological order.
* `graph_from_keras_config(model_config)` reads the `config` of a Keras `Sequential` or
  `Functional` model as a `.keras` archive's `config.json` or a legacy `.h5` file's
  `model_config` hold it: Keras 3 `inbound_nodes` (`args` / `kwargs` with `keras_history`) and the
  Keras 2 list form (`[[["conv1", 0, 0, {}]]]`), Sequential configs with or without an
  `InputLayer`, and the Keras 2.0-2.2 list-only Sequential config.

Variables: `{"params": {layer_name: {weight_name: array}}}` with Keras's own weight names and
layouts, in `layer.weights` order (`LAYER_WEIGHTS`): `kernel` [kh, kw, Cin/groups, Cout] (Conv2D),
`kernel` [kh, kw, C, multiplier] (DepthwiseConv2D), `depthwise_kernel` and `pointwise_kernel`
(SeparableConv2D), `kernel` [in, out] (Dense), `bias`, and `gamma`, `beta`, `moving_mean`,
`moving_variance` (BatchNormalization, inference only, all in `params`). So a converter copies a
Keras file's arrays as they are, and weight statistics read like Keras's.

Layouts and arithmetic follow Keras/TensorFlow exactly: `padding="same"` pads
`total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)` with `total // 2` before (convs and
pools alike); `AveragePooling2D(padding="same")` divides by the number of real (unpadded) inputs;
`Flatten` flattens NHWC in H, W, C order. Depthwise and 1x1 convs use the fastest formulation of
`jaxvis.models.layers` (`conv_impl`, "auto" by default); dilated convs use `lax` directly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models import layers as conv_layers
from jaxvis.models.activations import relu, relu6

__all__ = [
    "Graph", "KerasGraph", "LayerConfig", "Node", "build_graph", "graph_from_keras_config",
    "init_shapes", "logits_layer", "random_variables", "snake_case", "SUPPORTED_LAYERS",
]


class LayerConfig(NamedTuple):
    """One Keras layer as plain data: class name, layer name, Keras config dict, input layer names."""

    class_name: str
    name: str
    config: Mapping[str, Any]
    inputs: tuple[str, ...] = ()


def snake_case(name: str) -> str:
    """Keras's `to_snake_case` (`DepthwiseConv2D` -> `depthwise_conv2d`, `ReLU` -> `re_lu`)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ---------------------------------------------------------------------------------------------
# Config reading helpers.


def _fail(layer: LayerConfig, message: str) -> JaxvisError:
    return JaxvisError(f"Keras layer {layer.name!r} ({layer.class_name}): {message}")


def _pair(layer: LayerConfig, key: str, default=None) -> tuple[int, int]:
    value = layer.config.get(key, default)
    if value is None:
        value = default
    if isinstance(value, (int, float)):
        return int(value), int(value)
    value = tuple(value)
    if len(value) == 1:
        return int(value[0]), int(value[0])
    if len(value) != 2:
        raise _fail(layer, f"{key} must be an int or a pair, got {value!r}")
    return int(value[0]), int(value[1])


def _padding(layer: LayerConfig) -> str:
    padding = str(layer.config.get("padding", "valid")).lower()
    if padding not in ("same", "valid"):
        raise _fail(layer, f"padding {padding!r} is not supported (only 'same' and 'valid')")
    return padding


def _channels_last(layer: LayerConfig) -> None:
    data_format = layer.config.get("data_format")
    if data_format not in (None, "channels_last"):
        raise _fail(layer, f"data_format {data_format!r} is not supported (only channels_last)")


def _float_or_tuple(value):
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    return float(value)


# ---------------------------------------------------------------------------------------------
# Activations.


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
}
ACTIVATIONS = ("linear", "relu", "relu6", "softmax", "leaky_relu") + tuple(_SIMPLE_ACTIVATIONS)


def _activation(layer: LayerConfig, value) -> Activation:
    """A Keras `activation` config entry (None, a name, or a serialized function dict)."""
    if isinstance(value, Mapping):  # Keras 3: {"module": "keras.activations", "class_name": "function", "config": "relu"}
        value = value.get("config", value.get("class_name"))
        if isinstance(value, Mapping):
            value = value.get("name")
    if value is None:
        return Activation("linear")
    if not isinstance(value, str):
        raise _fail(layer, f"activation {value!r} is not supported")
    name = value.rsplit(">", 1)[-1].lower()
    if name in ("linear", "none", ""):
        return Activation("linear")
    if name == "leaky_relu":
        return Activation("leaky_relu", negative_slope=0.2)  # Keras 3's default slope
    if name not in ACTIVATIONS:
        raise _fail(layer, f"activation {value!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    return Activation(name)


# ---------------------------------------------------------------------------------------------
# Ops. Each maps its input arrays (and its layer's params) to the layer's output *before* its
# activation; `Node.activation` is applied by the graph runner.


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
        raise JaxvisError(f"Keras layer {name!r} takes [batch, height, width, channels] inputs, got shape {tuple(x.shape)}")


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
        return (("gamma",) if self.scale else ()) + (("beta",) if self.center else ()) + ("moving_mean", "moving_variance")

    def weight_shapes(self, shape):
        return {name: (shape[-1],) for name in self.weight_names}

    def __call__(self, name, params, xs, impl):
        x = xs[0]
        if self.axis >= 0 and self.axis != x.ndim - 1:
            raise JaxvisError(f"Keras layer {name!r} (BatchNormalization) normalizes axis {self.axis} of a rank-{x.ndim} "
                              f"input; only the last (channel) axis is supported")
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
    2-20x faster than `lax.reduce_window` (whose gradient is a select-and-scatter): 2x2/2 on
    8x64x64x128 6.7 ms vs 149 ms, 3x3/2 on 8x35x35x288 47 ms vs 115 ms. Values are identical; at
    ties the gradient is shared instead of going to one input. Average pooling stays a
    `reduce_window` sum, which was the faster of the two there (25 ms vs 47 ms).
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


_MERGES = {
    "Add": lambda xs: functools.reduce(jnp.add, xs),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": lambda xs: functools.reduce(jnp.multiply, xs),
    "Average": lambda xs: functools.reduce(jnp.add, xs) / len(xs),
    "Maximum": lambda xs: functools.reduce(jnp.maximum, xs),
    "Minimum": lambda xs: functools.reduce(jnp.minimum, xs),
}


@dataclasses.dataclass(frozen=True)
class Merge:
    kind: str  # a key of _MERGES

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) != 1:
            raise JaxvisError(f"Keras layer {name!r} ({self.kind}) gets inputs of different shapes {sorted(shapes)}")
        return _MERGES[self.kind](xs)


@dataclasses.dataclass(frozen=True)
class Concat:
    axis: int

    weight_names = ()

    def __call__(self, name, params, xs, impl):
        rank = xs[0].ndim
        if self.axis % rank == 0:
            raise JaxvisError(f"Keras layer {name!r} (Concatenate) concatenates on the batch axis")
        return jnp.concatenate(xs, axis=self.axis)


# ---------------------------------------------------------------------------------------------
# Parsing layer configs into ops.


def _parse_conv(layer):
    c = layer.config
    _channels_last(layer)
    dilation = _pair(layer, "dilation_rate", 1)
    return Conv(int(c["filters"]), _pair(layer, "kernel_size"), _pair(layer, "strides", 1), _padding(layer),
                dilation, int(c.get("groups", 1) or 1), bool(c.get("use_bias", True))), _activation(layer, c.get("activation"))


def _parse_depthwise(layer):
    c = layer.config
    _channels_last(layer)
    return DepthwiseConv(_pair(layer, "kernel_size"), _pair(layer, "strides", 1), _padding(layer),
                         _pair(layer, "dilation_rate", 1), int(c.get("depth_multiplier", 1)),
                         bool(c.get("use_bias", True))), _activation(layer, c.get("activation"))


def _parse_separable(layer):
    c = layer.config
    _channels_last(layer)
    return SeparableConv(int(c["filters"]), _pair(layer, "kernel_size"), _pair(layer, "strides", 1), _padding(layer),
                         _pair(layer, "dilation_rate", 1), int(c.get("depth_multiplier", 1)),
                         bool(c.get("use_bias", True))), _activation(layer, c.get("activation"))


def _parse_dense(layer):
    c = layer.config
    return Dense(int(c["units"]), bool(c.get("use_bias", True))), _activation(layer, c.get("activation"))


def _parse_pool(kind):
    def parse(layer):
        _channels_last(layer)
        size = _pair(layer, "pool_size", 2)
        strides = _pair(layer, "strides", None) if layer.config.get("strides") is not None else size
        return Pool(kind, size, strides, _padding(layer)), Activation()

    return parse


def _parse_global_pool(kind):
    def parse(layer):
        _channels_last(layer)
        return GlobalPool(kind, bool(layer.config.get("keepdims", False))), Activation()

    return parse


def _parse_batchnorm(layer):
    c = layer.config
    axis = c.get("axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if len(axes) != 1 or axes[0] not in (-1, 1, 2, 3):
        raise _fail(layer, f"axis {axis!r} is not supported (only the channel axis, last)")
    # renorm only changes training; inference uses the moving statistics either way.
    return BatchNorm(float(c.get("epsilon", 1e-3)), bool(c.get("center", True)), bool(c.get("scale", True)),
                     int(axes[0])), Activation()


def _parse_activation_layer(layer):
    return Identity(), _activation(layer, layer.config.get("activation"))


def _parse_relu_layer(layer):
    c = layer.config
    max_value = c.get("max_value")
    return Identity(), Activation(
        "relu", None if max_value is None else float(max_value), float(c.get("negative_slope", 0.0) or 0.0),
        float(c.get("threshold", 0.0) or 0.0))


def _parse_leaky_relu(layer):
    c = layer.config
    slope = c.get("negative_slope", c.get("alpha", 0.3))
    return Identity(), Activation("leaky_relu", negative_slope=float(slope))


def _parse_elu(layer):
    alpha = float(layer.config.get("alpha", 1.0))
    if alpha != 1.0:
        raise _fail(layer, f"alpha={alpha} is not supported (only 1.0)")
    return Identity(), Activation("elu")


def _parse_softmax(layer):
    axis = layer.config.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise _fail(layer, f"axis {axis!r} is not supported")
        axis = axis[0]
    return Identity(), Activation("softmax", axis=int(axis))


def _padding_pairs(layer, key):
    value = layer.config.get(key, 1)
    if isinstance(value, int):
        return (value, value), (value, value)
    value = tuple(value)
    if len(value) == 2 and all(isinstance(v, int) for v in value):
        return (value[0], value[0]), (value[1], value[1])
    if len(value) == 2 and all(len(v) == 2 for v in value):
        return tuple((int(a), int(b)) for a, b in value)
    raise _fail(layer, f"{key} {value!r} is not supported")


def _parse_zero_pad(layer):
    _channels_last(layer)
    return ZeroPad(_padding_pairs(layer, "padding")), Activation()


def _parse_crop(layer):
    _channels_last(layer)
    return Crop(_padding_pairs(layer, "cropping")), Activation()


def _parse_upsample(layer):
    _channels_last(layer)
    if layer.config.get("interpolation", "nearest") != "nearest":
        raise _fail(layer, f"interpolation {layer.config['interpolation']!r} is not supported (only nearest)")
    return UpSample(_pair(layer, "size", 2)), Activation()


def _parse_flatten(layer):
    _channels_last(layer)
    return Reshape(None), Activation()


def _parse_reshape(layer):
    return Reshape(tuple(int(v) for v in layer.config["target_shape"])), Activation()


def _parse_rescaling(layer):
    c = layer.config
    return Rescale(_float_or_tuple(c.get("scale", 1.0)), _float_or_tuple(c.get("offset", 0.0))), Activation()


def _parse_concat(layer):
    return Concat(int(layer.config.get("axis", -1))), Activation()


def _parse_identity(layer):
    return Identity(), Activation()


_PARSERS = {
    "Conv2D": _parse_conv,
    "DepthwiseConv2D": _parse_depthwise,
    "SeparableConv2D": _parse_separable,
    "Dense": _parse_dense,
    "MaxPooling2D": _parse_pool("max"),
    "AveragePooling2D": _parse_pool("avg"),
    "GlobalAveragePooling2D": _parse_global_pool("avg"),
    "GlobalMaxPooling2D": _parse_global_pool("max"),
    "BatchNormalization": _parse_batchnorm,
    "Activation": _parse_activation_layer,
    "ReLU": _parse_relu_layer,
    "LeakyReLU": _parse_leaky_relu,
    "ELU": _parse_elu,
    "Softmax": _parse_softmax,
    "ZeroPadding2D": _parse_zero_pad,
    "Cropping2D": _parse_crop,
    "UpSampling2D": _parse_upsample,
    "Flatten": _parse_flatten,
    "Reshape": _parse_reshape,
    "Rescaling": _parse_rescaling,
    "Concatenate": _parse_concat,
    **{name: (lambda kind: lambda layer: (Merge(kind), Activation()))(name) for name in _MERGES},
    **{name: _parse_identity for name in (
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization")},
}
# Older spellings of the same layers in Keras 2 files.
_ALIASES = {
    "Convolution2D": "Conv2D", "MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D",
    "GlobalAvgPool2D": "GlobalAveragePooling2D", "GlobalMaxPool2D": "GlobalMaxPooling2D",
    "SeparableConvolution2D": "SeparableConv2D", "BatchNormalizationV1": "BatchNormalization",
    "BatchNormalizationV2": "BatchNormalization", "SyncBatchNormalization": "BatchNormalization",
}
SUPPORTED_LAYERS = ("InputLayer",) + tuple(sorted(_PARSERS))
_MODEL_CLASSES = ("Sequential", "Functional", "Model")
_CODE_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")

# Every weight-carrying class, with its Keras weight names in `layer.weights` order (all present).
LAYER_WEIGHTS = {
    "Conv2D": ("kernel", "bias"), "DepthwiseConv2D": ("kernel", "bias"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel", "bias"), "Dense": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}


@dataclasses.dataclass(frozen=True)
class Node:
    """One parsed layer: its op, its activation, and the names of the layers feeding it."""

    name: str
    class_name: str
    inputs: tuple[str, ...]
    op: Any
    activation: Activation = Activation()


def parse_layer(layer: LayerConfig) -> Node:
    """A `LayerConfig` as a `Node`; unsupported classes raise a `JaxvisError` naming class and layer."""
    class_name = _ALIASES.get(layer.class_name, layer.class_name)
    layer = layer._replace(class_name=class_name, config=dict(layer.config or {}))
    if class_name == "InputLayer":
        shape = layer.config.get("batch_shape", layer.config.get("batch_input_shape"))
        if shape is None:
            raise _fail(layer, "has no batch_shape / batch_input_shape")
        return Node(layer.name, class_name, (), Input(tuple(None if d is None else int(d) for d in shape[1:])))
    if class_name in _CODE_LAYERS:
        raise JaxvisError(
            f"Keras layer {layer.name!r} is a {class_name}, which runs Python code stored in the file; "
            f"jaxvis never executes code from a weight file (rebuild the model without {class_name} layers)")
    if class_name in _MODEL_CLASSES:
        raise JaxvisError(
            f"Keras layer {layer.name!r} is a nested model ({class_name}); nested models are not supported "
            f"(save the inner model's layers in one flat model)")
    if class_name not in _PARSERS:
        raise JaxvisError(
            f"unsupported Keras layer {layer.name!r} of class {class_name}; supported: {', '.join(SUPPORTED_LAYERS)}")
    try:
        op, activation = _PARSERS[class_name](layer)
    except (KeyError, TypeError, ValueError) as err:
        raise _fail(layer, f"unreadable config ({type(err).__name__}: {err})") from None
    return Node(layer.name, class_name, tuple(layer.inputs), op, activation)


# ---------------------------------------------------------------------------------------------
# Graphs.


@dataclasses.dataclass(frozen=True)
class Graph:
    """A validated Keras layer graph: nodes in execution order, the first one the input."""

    name: str
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    sequential: bool = False  # Keras 3 `model.layers` of a Sequential model leave the InputLayer out

    @property
    def input(self) -> Node:
        return self.nodes[0]

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return self.nodes[0].op.shape

    @functools.cached_property
    def layer_names(self) -> tuple[str, ...]:
        """Every addressable layer but the input, in execution order."""
        return tuple(node.name for node in self.nodes[1:])

    @functools.cached_property
    def by_name(self) -> dict[str, Node]:
        return {node.name: node for node in self.nodes}

    @functools.cached_property
    def weighted(self) -> tuple[Node, ...]:
        """The nodes that carry weights, in execution order (Keras's `load_weights` order)."""
        return tuple(node for node in self.nodes if node.op.weight_names)

    def keras_layers(self) -> tuple[Node, ...]:
        """The nodes in Keras 3's `model.layers` order (what `.weights.h5` paths are counted over)."""
        return self.nodes[1:] if self.sequential else self.nodes

    def ancestors(self, names: Sequence[str]) -> set[str]:
        """`names` and every layer they depend on."""
        needed, stack = set(), list(names)
        while stack:
            name = stack.pop()
            if name not in needed:
                needed.add(name)
                stack.extend(self.by_name[name].inputs)
        return needed


def build_graph(layers: Sequence[LayerConfig], *, name: str = "model", outputs: Sequence[str] | None = None,
                sequential: bool = False) -> Graph:
    """Validate `layers` (one InputLayer, unique names, known inputs) and order them topologically.

    The order is Keras's where it is already topological (a stable topological sort), so that
    weights stored in layer order line up. `outputs` defaults to the layers nothing consumes.
    """
    nodes = [parse_layer(layer) for layer in layers]
    names = [node.name for node in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise JaxvisError(f"Keras model {name!r} has several layers named {', '.join(map(repr, duplicates))}")
    inputs = [node for node in nodes if isinstance(node.op, Input)]
    if len(inputs) != 1:
        raise JaxvisError(f"Keras model {name!r} has {len(inputs)} inputs; jaxvis supports models with one image input")
    known = set(names)
    for node in nodes:
        missing = [i for i in node.inputs if i not in known]
        if missing:
            raise JaxvisError(f"Keras layer {node.name!r} takes the output of unknown layer(s) {', '.join(missing)}")
        if not node.inputs and not isinstance(node.op, Input):
            raise JaxvisError(f"Keras layer {node.name!r} ({node.class_name}) has no inputs")
        if len(node.inputs) > 1 and not isinstance(node.op, (Merge, Concat)):
            raise JaxvisError(f"Keras layer {node.name!r} ({node.class_name}) takes {len(node.inputs)} inputs; expected one")
    # Stable topological sort (Kahn's, always taking the earliest ready node).
    order, done, pending = [], set(), list(nodes)
    while pending:
        ready = next((n for n in pending if all(i in done for i in n.inputs)), None)
        if ready is None:
            raise JaxvisError(f"Keras model {name!r} has a cycle through {', '.join(n.name for n in pending[:5])}")
        pending.remove(ready)
        order.append(ready)
        done.add(ready.name)
    if order[0] is not inputs[0]:  # unreachable: the input is the only node without inputs
        order.remove(inputs[0])
        order.insert(0, inputs[0])
    if outputs is None:
        consumed = {i for node in nodes for i in node.inputs}
        outputs = [node.name for node in order if node.name not in consumed]
    for output in outputs:
        if output not in known:
            raise JaxvisError(f"Keras model {name!r} names unknown output layer {output!r}")
    return Graph(name, tuple(order), tuple(outputs), sequential)


def keras_order(layers: Sequence[LayerConfig], outputs: Sequence[str]) -> list[LayerConfig]:
    """`layers` in the order Keras gives a Functional model's `model.layers` (and its saved config).

    Keras sorts layers by decreasing depth (the longest path to an output), ties broken by the
    order of a depth-first walk from the outputs (`keras.src.ops.function.map_graph`). Weight files
    are laid out in this order, so generated architectures must follow it.
    """
    by_name = {layer.name: layer for layer in layers}
    first_seen: dict[str, int] = {}
    post_order: list[str] = []
    finished: set[str] = set()
    for output in outputs:
        stack = [(output, False)]
        while stack:
            name, expanded = stack.pop()
            if name in finished:
                continue
            if expanded:
                finished.add(name)
                post_order.append(name)
                continue
            first_seen.setdefault(name, len(first_seen))
            stack.append((name, True))
            stack.extend((source, False) for source in reversed(by_name[name].inputs))
    depth: dict[str, int] = {}
    for name in reversed(post_order):
        d = depth.setdefault(name, 0)
        for source in by_name[name].inputs:
            depth[source] = max(d + 1, depth.get(source, 0))
    ordered = sorted(post_order, key=lambda name: (-depth[name], first_seen[name]))
    return [by_name[name] for name in ordered]


# ---------------------------------------------------------------------------------------------
# Keras model JSON (config.json of a .keras archive, model_config of a legacy .h5 file).


def _history_refs(value) -> list[tuple[str, int, int]]:
    """Every `keras_history` [layer, node_index, tensor_index] in a Keras 3 node's args / kwargs."""
    refs = []
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            history = value.get("config", {}).get("keras_history")
            if history is not None:
                refs.append((str(history[0]), int(history[1]), int(history[2])))
            return refs
        for item in value.values():
            refs.extend(_history_refs(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            refs.extend(_history_refs(item))
    return refs


def _inbound(layer_json: Mapping, name: str) -> tuple[str, ...]:
    """The input layer names of one Functional layer entry (Keras 2 list or Keras 3 dict nodes)."""
    nodes = layer_json.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise JaxvisError(f"Keras layer {name!r} is called {len(nodes)} times (shared layers are not supported)")
    if not nodes:
        return ()
    node = nodes[0]
    if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
        refs = _history_refs(node.get("args", [])) + _history_refs(node.get("kwargs", {}))
    else:  # Keras 2: [["conv1", 0, 0, {}], ...]
        refs = []
        for entry in node:
            if isinstance(entry, Mapping):
                refs.extend(_history_refs(entry))
            else:
                refs.append((str(entry[0]), int(entry[1]) if len(entry) > 1 else 0, int(entry[2]) if len(entry) > 2 else 0))
    for source, node_index, tensor_index in refs:
        if node_index != 0 or tensor_index != 0:
            raise JaxvisError(f"Keras layer {name!r} takes output {tensor_index} of call {node_index} of layer "
                              f"{source!r}: shared or multi-output layers are not supported")
    return tuple(source for source, _, _ in refs)


def _layer_name(layer_json: Mapping) -> str:
    name = layer_json.get("name") or (layer_json.get("config") or {}).get("name")
    if not name:
        raise JaxvisError(f"a Keras layer of class {layer_json.get('class_name')} has no name")
    return str(name)


def _sequential_layers(config) -> tuple[str, list[LayerConfig]]:
    if isinstance(config, list):  # Keras 2.0-2.2: the config is the list of layers
        model_name, entries, build_shape = "sequential", config, None
    else:
        model_name, entries = str(config.get("name", "sequential")), config.get("layers", [])
        build_shape = config.get("build_input_shape")
    if not entries:
        raise JaxvisError(f"Keras Sequential model {model_name!r} has no layers")
    layers: list[LayerConfig] = []
    previous = None
    for entry in entries:
        class_name, layer_config = entry.get("class_name"), dict(entry.get("config") or {})
        name = _layer_name(entry)
        if previous is None and class_name != "InputLayer":
            shape = layer_config.get("batch_input_shape", layer_config.get("batch_shape", build_shape))
            if shape is None:
                raise JaxvisError(f"Keras Sequential model {model_name!r} does not record its input shape")
            previous = f"{name}_input"
            layers.append(LayerConfig("InputLayer", previous, {"batch_shape": list(shape)}))
        layers.append(LayerConfig(str(class_name), name, layer_config, (previous,) if previous else ()))
        previous = name
    return model_name, layers


def graph_from_keras_config(model_config: Mapping) -> Graph:
    """A `Graph` from a Keras model's serialized config (`{"class_name": ..., "config": ...}`)."""
    if not isinstance(model_config, Mapping) or "class_name" not in model_config:
        raise JaxvisError("the Keras model config has no class_name: not a Keras model")
    class_name, config = model_config["class_name"], model_config.get("config")
    if class_name == "Sequential":
        name, layers = _sequential_layers(config)
        return build_graph(layers, name=name, sequential=True)
    if class_name not in ("Functional", "Model"):
        raise JaxvisError(
            f"Keras model class {class_name!r} is not supported (only Sequential and Functional models; a "
            f"subclassed model stores no layer graph: save its weights and load them onto a zoo architecture)")
    name = str(config.get("name", "model"))
    layers = []
    for entry in config.get("layers", []):
        layer_name = _layer_name(entry)
        layers.append(LayerConfig(str(entry.get("class_name")), layer_name, dict(entry.get("config") or {}),
                                  _inbound(entry, layer_name)))
    outputs = config.get("output_layers")
    if outputs is not None:
        refs = _history_refs(outputs) if isinstance(outputs, Mapping) else None
        if refs is None:
            outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs
            refs = [(str(o[0]), 0, 0) for o in outputs]
        outputs = [r[0] for r in refs]
    return build_graph(layers, name=name, outputs=outputs)


# ---------------------------------------------------------------------------------------------
# The module.


class KerasGraph(nn.Module):
    """Runs a `Graph` (see the module docstring for the call contract)."""

    graph: Graph
    conv_impl: str = "auto"  # jaxvis.models.layers formulation: "auto", "lax" or "taps"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.graph.layer_names

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        graph = self.graph
        outputs = graph.layer_names if outputs is None else tuple(outputs)
        for name in outputs:
            if name not in graph.by_name:
                raise unknown_name(f"layer of Keras model {graph.name}", name, graph.layer_names)
        expected = graph.input_shape
        if x.ndim != len(expected) + 1 or any(e is not None and e != d for e, d in zip(expected[-1:], x.shape[-1:])):
            raise JaxvisError(f"Keras model {graph.name} takes inputs of shape {('batch', *expected)} "
                              f"(None: any size), got {tuple(x.shape)}")
        needed = graph.ancestors(outputs)
        wanted = set(outputs)
        values, found = {graph.input.name: x}, {}
        if graph.input.name in wanted:
            found[graph.input.name] = x
        for node in graph.nodes[1:]:
            if node.name not in needed:
                continue
            xs = [values[name] for name in node.inputs]
            params = self._weights(node, xs[0].shape) if node.op.weight_names else None
            pre = node.op(node.name, params, xs, self.conv_impl)
            post = node.activation(pre, relu_redirect)
            values[node.name] = post
            if node.name in wanted:
                found[node.name] = pre if node.activation.is_softmax else post
        return found

    def _weights(self, node: Node, shape) -> dict:
        if self.is_initializing():
            shapes = node.op.weight_shapes(shape)
            return self.param(node.name, lambda key: _init_weights(key, shapes))
        if not self.has_variable("params", node.name):
            raise JaxvisError(f"the variables have no weights for Keras layer {node.name!r}")
        return self.get_variable("params", node.name)


def _init_weights(key, shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """Keras's default initializers: glorot_uniform kernels, zero biases / beta / mean, unit gamma / variance."""
    out = {}
    for i, (name, shape) in enumerate(shapes.items()):
        if name.endswith("kernel"):
            out[name] = nn.initializers.glorot_uniform()(jax.random.fold_in(key, i), shape, jnp.float32)
        elif name in ("gamma", "moving_variance"):
            out[name] = jnp.ones(shape, jnp.float32)
        else:
            out[name] = jnp.zeros(shape, jnp.float32)
    return out


def _concrete_input_shape(graph: Graph, input_shape=None) -> tuple[int, ...]:
    shape = tuple(input_shape) if input_shape is not None else graph.input_shape
    if len(shape) == 3:
        shape = tuple(224 if d is None else d for d in shape[:2]) + (shape[2],)
    if any(d is None for d in shape):
        raise JaxvisError(f"Keras model {graph.name} has an input shape {graph.input_shape} with unknown sizes")
    return tuple(int(d) for d in shape)


def init_shapes(graph: Graph, input_shape=None) -> dict:
    """`{"params": {layer: {weight: ShapeDtypeStruct}}}` of `KerasGraph(graph)` (no compute)."""
    shape = _concrete_input_shape(graph, input_shape)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    return jax.eval_shape(KerasGraph(graph).init, jax.random.PRNGKey(0), x)


def random_variables(graph: Graph, *, seed: int = 0, input_shape=None) -> dict:
    """Variables with Keras's default initializers, drawn with NumPy (fast for VGG-sized models)."""
    rng = np.random.default_rng(seed)
    tree = init_shapes(graph, input_shape).get("params", {})
    params = {}
    for layer, weights in tree.items():
        params[layer] = {}
        for name, leaf in weights.items():
            shape = tuple(leaf.shape)
            if name.endswith("kernel"):
                receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
                limit = math.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
                value = rng.uniform(-limit, limit, shape).astype(np.float32)
            elif name in ("gamma", "moving_variance"):
                value = np.ones(shape, np.float32)
            else:
                value = np.zeros(shape, np.float32)
            params[layer][name] = jnp.asarray(value)
    return {"params": params}


def logits_layer(graph: Graph) -> str | None:
    """The single output layer if it holds class scores (a softmax or linear multi-unit output)."""
    if len(graph.outputs) != 1:
        return None
    node = graph.by_name[graph.outputs[0]]
    if node.activation.is_softmax:
        return node.name
    if isinstance(node.op, Dense) and node.activation.is_identity and node.op.units > 1:
        return node.name
    return None

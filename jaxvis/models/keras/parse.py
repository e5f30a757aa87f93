"""Keras layer configs as graph nodes: one Keras layer (class name, name, `get_config()` dict,
input layer names) becomes a `Node` holding its op and its activation.

The graph is data, never code: `parse_layer` validates every layer (an unsupported class is a
`JaxvisError` naming its class and name; a `Lambda` is refused because it would run code from the
file; a nested model reaching this point unflattened is refused with its name). Both Keras 2 and
Keras 3 spellings of a config are read.

This module is longer than most (~550 lines): it is the one table from Keras class names to parsers,
each a few lines that read one layer's config; one place keeps the supported set reviewable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from jaxvis.convert.keras.names import snake_case
from jaxvis.errors import JaxvisError
from jaxvis.models.keras.activation import ACTIVATIONS, Activation
from jaxvis.models.keras.normalization import GroupNorm, LayerNorm, Normalize, RMSNorm, UnitNorm
from jaxvis.models.keras.ops import (
    ARITHMETIC,
    MERGES,
    UNARY_ARITHMETIC,
    Arithmetic,
    BatchNorm,
    Concat,
    Conv,
    Conv1D,
    ConvTranspose,
    Crop,
    Dense,
    DepthwiseConv,
    GlobalPool,
    GlobalPool1D,
    Identity,
    Input,
    Merge,
    Permute,
    Pool,
    Pool1D,
    PReLU,
    Rescale,
    Reshape,
    Scale,
    SeparableConv,
    UpSample,
    ZeroPad,
)
from jaxvis.models.keras.preprocessing import INTERPOLATIONS, CenterCrop, Resize

__all__ = ["LAYER_WEIGHTS", "SUPPORTED_LAYERS", "SUPPORTED_OPERATIONS", "LayerConfig", "Node", "parse_layer",
           "parse_operation", "snake_case"]


class LayerConfig(NamedTuple):
    """One Keras layer as plain data: class name, layer name, Keras config dict, input layer names."""

    class_name: str
    name: str
    config: Mapping[str, Any]
    inputs: tuple[str, ...] = ()
    module: str = ""  # Keras 3's `module` entry: `keras.src.ops.*` marks an operation node, not a layer
    operands: tuple = ()  # an operation node's call arguments: None for a tensor, else the constant


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


def _activation(layer: LayerConfig, value) -> Activation:
    """A Keras `activation` config entry (None, a name, or a serialized function dict)."""
    if isinstance(
        value, Mapping
    ):  # Keras 3: {"module": "keras.activations", "class_name": "function", "config": "relu"}
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


def _parse_conv(layer):
    c = layer.config
    _channels_last(layer)
    dilation = _pair(layer, "dilation_rate", 1)
    return Conv(
        int(c["filters"]),
        _pair(layer, "kernel_size"),
        _pair(layer, "strides", 1),
        _padding(layer),
        dilation,
        int(c.get("groups", 1) or 1),
        bool(c.get("use_bias", True)),
    ), _activation(layer, c.get("activation"))


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


def _single(layer, key, default=None) -> int:
    value = layer.config.get(key, default)
    value = default if value is None else value
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise _fail(layer, f"{key} must be an int, got {value!r}")
        value = value[0]
    return int(value)


def _parse_conv1d(layer):
    c = layer.config
    _channels_last(layer)
    padding = str(c.get("padding", "valid")).lower()
    if padding not in ("same", "valid", "causal"):
        raise _fail(layer, f"padding {padding!r} is not supported (only 'same', 'valid' and 'causal')")
    return Conv1D(int(c["filters"]), _single(layer, "kernel_size"), _single(layer, "strides", 1), padding,
                  _single(layer, "dilation_rate", 1), int(c.get("groups", 1) or 1), bool(c.get("use_bias", True))), \
        _activation(layer, c.get("activation"))


def _parse_pool1d(kind):
    def parse(layer):
        _channels_last(layer)
        size = _single(layer, "pool_size", 2)
        return Pool1D(kind, size, _single(layer, "strides", size), _padding(layer)), Activation()

    return parse


def _parse_global_pool1d(kind):
    def parse(layer):
        _channels_last(layer)
        return GlobalPool1D(kind, bool(layer.config.get("keepdims", False))), Activation()

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


def _axis_tuple(layer, default=-1) -> tuple[int, ...]:
    axis = layer.config.get("axis", default)
    if axis is None:
        return ()
    return tuple(int(a) for a in axis) if isinstance(axis, (list, tuple)) else (int(axis),)


def _nested_floats(value):
    if isinstance(value, (list, tuple)):
        return tuple(_nested_floats(v) for v in value)
    return float(value)


def _parse_normalization(layer):
    c = layer.config
    mean, variance = c.get("mean"), c.get("variance")
    if (mean is None) != (variance is None):
        raise _fail(layer, "has a mean without a variance (or the reverse)")
    return Normalize(_axis_tuple(layer), bool(c.get("invert", False)),
                     None if mean is None else _nested_floats(mean),
                     None if variance is None else _nested_floats(variance)), Activation()


def _parse_layer_norm(layer):
    c = layer.config
    return LayerNorm(_axis_tuple(layer), float(c.get("epsilon", 1e-3)), bool(c.get("center", True)),
                     bool(c.get("scale", True)), bool(c.get("rms_scaling", False))), Activation()


def _parse_rms_norm(layer):
    return RMSNorm(_axis_tuple(layer), float(layer.config.get("epsilon", 1e-6))), Activation()


def _parse_group_norm(layer):
    c = layer.config
    return GroupNorm(int(c.get("groups", 32)), int(c.get("axis", -1)), float(c.get("epsilon", 1e-3)),
                     bool(c.get("center", True)), bool(c.get("scale", True))), Activation()


def _parse_unit_norm(layer):
    return UnitNorm(_axis_tuple(layer)), Activation()


def _parse_resizing(layer):
    c = layer.config
    _channels_last(layer)
    interpolation = str(c.get("interpolation", "bilinear"))
    if interpolation not in INTERPOLATIONS:
        raise _fail(layer, f"interpolation {interpolation!r} is not supported; supported: {', '.join(INTERPOLATIONS)}")
    if c.get("fill_mode", "constant") != "constant":
        raise _fail(layer, f"fill_mode {c['fill_mode']!r} is not supported (only 'constant', as in Keras)")
    crop, pad = bool(c.get("crop_to_aspect_ratio", False)), bool(c.get("pad_to_aspect_ratio", False))
    if crop and pad:
        raise _fail(layer, "crop_to_aspect_ratio and pad_to_aspect_ratio are both set")
    return Resize(int(c["height"]), int(c["width"]), interpolation, bool(c.get("antialias", False)), crop, pad,
                  float(c.get("fill_value", 0.0) or 0.0)), Activation()


def _parse_center_crop(layer):
    _channels_last(layer)
    return CenterCrop(int(layer.config["height"]), int(layer.config["width"])), Activation()


def _parse_augmentation(layer):
    """A random augmentation layer: the identity at inference (Keras 3 `training=False`; RandomCrop
    included: at inference Keras 3 returns its input unchanged)."""
    _channels_last(layer)
    return Identity(), Activation()


def _parse_conv_transpose(layer):
    c = layer.config
    _channels_last(layer)
    output_padding = c.get("output_padding")
    return ConvTranspose(int(c["filters"]), _pair(layer, "kernel_size"), _pair(layer, "strides", 1), _padding(layer),
                         None if output_padding is None else _pair(layer, "output_padding"),
                         _pair(layer, "dilation_rate", 1), bool(c.get("use_bias", True))), \
        _activation(layer, c.get("activation"))


def _parse_prelu(layer):
    shared = layer.config.get("shared_axes")
    shared = [] if shared is None else shared if isinstance(shared, (list, tuple)) else [shared]
    shared = tuple(int(a) for a in shared)
    if any(a < 1 for a in shared):
        raise _fail(layer, f"shared_axes {shared} must count from 1 (the axis after the batch)")
    return PReLU(shared), Activation()


def _parse_permute(layer):
    return Permute(tuple(int(d) for d in layer.config["dims"])), Activation()


def _parse_layer_scale(layer):
    return Scale(int(layer.config["projection_dim"])), Activation()


def _parse_stochastic_depth(layer):
    return Identity(), Activation()  # drops paths only in training


# Keras 3 operation nodes (module keras.src.ops.*) that are activations: routed through `Activation`.
_OP_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Silu": "silu",
                   "Swish": "silu", "HardSigmoid": "hard_sigmoid", "HardSilu": "hard_silu", "HardSwish": "hard_silu",
                   "Softplus": "softplus", "Elu": "elu", "Selu": "selu"}
SUPPORTED_OPERATIONS = tuple(sorted(ARITHMETIC)) + tuple(sorted(_OP_ACTIVATIONS))


def parse_operation(layer: LayerConfig) -> tuple[Any, Activation]:
    """A Keras 3 operation node (`x + 3.0` in a functional model): elementwise arithmetic on the graph's
    tensors and constant numbers, or an activation. Anything else is refused by name."""
    kind, operands = layer.class_name, layer.operands
    if kind in _OP_ACTIVATIONS:
        if operands != (None,):
            raise _fail(layer, f"operation {kind} with arguments {operands!r} is not supported (one tensor only)")
        return Identity(), Activation(_OP_ACTIVATIONS[kind])
    if kind not in ARITHMETIC:
        raise _fail(layer, f"the Keras operation {layer.module}.{kind} is not supported; supported operations: "
                           f"{', '.join(SUPPORTED_OPERATIONS)}")
    def constant(value):
        if isinstance(value, tuple):
            return all(constant(v) for v in value)
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    arity = 1 if kind in UNARY_ARITHMETIC else 2
    if (len(operands) != arity or all(o is not None for o in operands)
            or not all(o is None or constant(o) for o in operands)):
        raise _fail(layer, f"operation {kind} takes {arity} operand(s), at least one a tensor; got {operands!r}")
    return Arithmetic(kind, operands), Activation()


_PARSERS = {
    "Conv2D": _parse_conv,
    "DepthwiseConv2D": _parse_depthwise,
    "SeparableConv2D": _parse_separable,
    "Dense": _parse_dense,
    "MaxPooling2D": _parse_pool("max"),
    "AveragePooling2D": _parse_pool("avg"),
    "GlobalAveragePooling2D": _parse_global_pool("avg"),
    "GlobalMaxPooling2D": _parse_global_pool("max"),
    "Conv1D": _parse_conv1d,
    "MaxPooling1D": _parse_pool1d("max"),
    "AveragePooling1D": _parse_pool1d("avg"),
    "GlobalAveragePooling1D": _parse_global_pool1d("avg"),
    "GlobalMaxPooling1D": _parse_global_pool1d("max"),
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
    "Normalization": _parse_normalization,
    "LayerNormalization": _parse_layer_norm,
    "GroupNormalization": _parse_group_norm,
    "RMSNormalization": _parse_rms_norm,
    "UnitNormalization": _parse_unit_norm,
    "Resizing": _parse_resizing,
    "CenterCrop": _parse_center_crop,
    "Conv2DTranspose": _parse_conv_transpose,
    "PReLU": _parse_prelu,
    "Permute": _parse_permute,
    "LayerScale": _parse_layer_scale,
    "StochasticDepth": _parse_stochastic_depth,
    **{name: _parse_augmentation for name in (
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
        "RandomCrop", "RandomHeight", "RandomWidth")},
    # a nested model's input and output, flattened into the outer graph (see `config.py`)
    "NestedModelInput": _parse_identity,
    "NestedModelOutput": _parse_identity,
    **{name: (lambda kind: lambda layer: (Merge(kind), Activation()))(name) for name in MERGES},
    **{name: _parse_identity for name in (
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization")},
}
# Older spellings of the same layers in Keras 2 files.
_ALIASES = {
    "Convolution2D": "Conv2D", "MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D",
    "GlobalAvgPool2D": "GlobalAveragePooling2D", "GlobalMaxPool2D": "GlobalMaxPooling2D",
    "Convolution1D": "Conv1D", "MaxPool1D": "MaxPooling1D", "AvgPool1D": "AveragePooling1D",
    "GlobalAvgPool1D": "GlobalAveragePooling1D", "GlobalMaxPool1D": "GlobalMaxPooling1D",
    "SeparableConvolution2D": "SeparableConv2D", "BatchNormalizationV1": "BatchNormalization",
    "BatchNormalizationV2": "BatchNormalization", "SyncBatchNormalization": "BatchNormalization",
    "Convolution2DTranspose": "Conv2DTranspose", "Deconvolution2D": "Conv2DTranspose", "Deconv2D": "Conv2DTranspose",
}
SUPPORTED_LAYERS = ("InputLayer",) + tuple(sorted(_PARSERS))
_MODEL_CLASSES = ("Sequential", "Functional", "Model")
_CODE_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")

# Every weight-carrying class, with its Keras weight names in `layer.weights` order (all present).
LAYER_WEIGHTS = {
    "Conv2D": ("kernel", "bias"), "DepthwiseConv2D": ("kernel", "bias"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel", "bias"), "Dense": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "Conv2DTranspose": ("kernel", "bias"), "Conv1D": ("kernel", "bias"),
    "LayerNormalization": ("gamma", "beta"),
    "GroupNormalization": ("gamma", "beta"), "PReLU": ("alpha",), "LayerScale": ("gamma",),
    "RMSNormalization": ("scale",),
    "Normalization": ("mean", "variance", "count"),
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
    if layer.module.startswith(("keras.src.ops", "keras.ops")):
        op, activation = parse_operation(layer)
        return Node(layer.name, class_name, tuple(layer.inputs), op, activation)
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

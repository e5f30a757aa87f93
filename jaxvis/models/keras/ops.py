"""The ops of a Keras layer graph, as frozen dataclasses of each layer's settings.

Contract: an op is plain, hashable data read from a layer's config; `weight_names` lists the
layer's weights in Keras's `layer.weights` order and `weight_shapes(input_shape)` their shapes in
Keras's layouts (kernel HWIO, depthwise [kh, kw, C, m], Dense [in, out], ...). What each op
computes is `jaxvis.models.keras.lower`'s IR nodes, with Keras/TensorFlow's layouts and arithmetic:
`padding="same"` pads `total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)` with
`total // 2` before (convs and pools alike); `AveragePooling2D(padding="same")` divides by the
number of real (unpadded) inputs; `Flatten` flattens NHWC in H, W, C order.
"""

from __future__ import annotations

import dataclasses

from jaxvis.errors import JaxvisError

__all__ = [
    "ARITHMETIC", "Arithmetic", "BatchNorm", "Concat", "Conv", "Conv1D", "ConvTranspose", "Crop", "Dense",
    "DepthwiseConv", "GlobalPool", "GlobalPool1D", "Identity", "Input", "MERGES", "Merge", "PReLU", "Permute", "Pool",
    "Pool1D", "Rescale", "Reshape", "Scale", "SeparableConv", "UNARY_ARITHMETIC", "UpSample", "ZeroPad",
]


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


@dataclasses.dataclass(frozen=True)
class Pool:
    """MaxPooling2D / AveragePooling2D with TensorFlow's 'same' / 'valid' semantics."""

    kind: str  # "max" or "avg"
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class GlobalPool:
    kind: str
    keepdims: bool

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class Pool1D:
    """MaxPooling1D / AveragePooling1D on [batch, steps, channels], TensorFlow's 'same' / 'valid'."""

    kind: str
    pool_size: int
    strides: int
    padding: str

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class GlobalPool1D:
    """GlobalAveragePooling1D / GlobalMaxPooling1D over the steps of [batch, steps, channels]."""

    kind: str
    keepdims: bool

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class ZeroPad:
    padding: tuple[tuple[int, int], tuple[int, int]]

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class Crop:
    cropping: tuple[tuple[int, int], tuple[int, int]]

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class UpSample:
    size: tuple[int, int]

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class Reshape:
    target_shape: tuple[int, ...] | None  # None: Flatten

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class Identity:
    """Dropout and friends: the identity at inference (Activation layers are an Identity + activation)."""

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class Rescale:
    scale: float | tuple[float, ...]
    offset: float | tuple[float, ...]

    weight_names = ()


# Merge layers -> the IR op folding their inputs left to right (Average: a sum, then / n).
MERGES = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Average": "add", "Maximum": "maximum",
          "Minimum": "minimum"}


@dataclasses.dataclass(frozen=True)
class Merge:
    kind: str  # a key of MERGES

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class Concat:
    axis: int

    weight_names = ()


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


@dataclasses.dataclass(frozen=True)
class PReLU:
    """PReLU: relu(x) - alpha * relu(-x); alpha shaped like the input without its batch axis, with
    size 1 on the `shared_axes`."""

    shared_axes: tuple[int, ...]

    weight_names = ("alpha",)

    def weight_shapes(self, shape):
        return {"alpha": tuple(1 if i + 1 in self.shared_axes else d for i, d in enumerate(shape[1:]))}


@dataclasses.dataclass(frozen=True)
class Permute:
    """Permute: `dims` index the input's axes after the batch axis, from 1."""

    dims: tuple[int, ...]

    weight_names = ()


@dataclasses.dataclass(frozen=True)
class Scale:
    """ConvNeXt's LayerScale: x * gamma [projection_dim]."""

    dim: int

    weight_names = ("gamma",)

    def weight_shapes(self, shape):
        return {"gamma": (self.dim,)}


# Keras 3 operation nodes -> the IR op computing them (Square is x * x).
ARITHMETIC = {
    "Add": "add", "Subtract": "sub", "Multiply": "mul", "Divide": "div", "TrueDivide": "div", "Maximum": "maximum",
    "Minimum": "minimum", "Power": "pow", "Negative": "neg", "Abs": "abs", "Absolute": "abs", "Square": "mul",
    "Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Reciprocal": "reciprocal",
}
UNARY_ARITHMETIC = ("Negative", "Abs", "Absolute", "Square", "Sqrt", "Exp", "Log", "Reciprocal")


@dataclasses.dataclass(frozen=True)
class Arithmetic:
    """A Keras 3 functional-API operation node on tensors (`x + 3.0`, `x * y`, `ops.sqrt(x)`, saved with
    module `keras.src.ops.numpy`): `operands` lists, in call order, None for each graph input (in
    `Node.inputs` order) and a constant (a float or nested tuples) for each literal operand."""

    kind: str  # a key of ARITHMETIC
    operands: tuple

    weight_names = ()


"""The Keras Applications networks as Keras layer configs, transcribed from keras/src/applications/*.py (Keras 3).

Contract: each `*_layers(...)` function returns the `LayerConfig`s of the network
`keras.applications.<Name>(weights=None, ...)` builds with the same arguments -- the same layer
names (auto-generated ones as a fresh Keras session names them: InceptionV3's `conv2d_5`,
`batch_normalization_5`, `activation_5`), the same configs, in Keras's `model.layers` order -- so
a Keras weight file lines up with it by name or by position.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxvis.convert.keras.names import snake_case
from jaxvis.errors import JaxvisError
from jaxvis.models.keras.graph import keras_order
from jaxvis.models.keras.parse import LayerConfig
from jaxvis.models.torchvision.common import make_divisible

__all__ = ["inception_v3_layers", "mobilenet_v2_layers", "resnet50_layers", "vgg_layers"]


class _Net:
    """Collects `LayerConfig`s while naming unnamed layers the way Keras 3 does (`conv2d`, `conv2d_1`)."""

    def __init__(self):
        self.layers: list[LayerConfig] = []
        self._uids: dict[str, int] = {}

    def add(self, class_name: str, inputs, name: str | None = None, **config) -> str:
        if name is None:
            prefix = snake_case(class_name)
            count = self._uids.get(prefix, 0)
            self._uids[prefix] = count + 1
            name = prefix if count == 0 else f"{prefix}_{count}"
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        self.layers.append(LayerConfig(class_name, name, {"name": name, **config}, inputs))
        return name

    def input(self, shape) -> str:
        return self.add("InputLayer", (), "input_layer", batch_shape=[None, *shape])

    def ordered(self, output: str) -> list[LayerConfig]:
        return keras_order(self.layers, [output])


def _input_shape(input_shape, include_top: bool, default: int, minimum: int) -> tuple:
    """Keras's `obtain_input_shape` for weights=None, channels last."""
    if input_shape is None:
        return (default, default, 3) if include_top else (None, None, 3)
    shape = tuple(None if d is None else int(d) for d in input_shape)
    if len(shape) != 3:
        raise JaxvisError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    if include_top and None in shape:
        raise JaxvisError(f"with include_top=True the input shape must be fully known, got {input_shape!r}")
    if any(d is not None and d < minimum for d in shape[:2]):
        raise JaxvisError(f"input size must be at least {minimum}x{minimum}, got {input_shape!r}")
    return shape


def _top(net: _Net, x: str, include_top: bool, pooling: str | None, classes: int, *, gap_name=None,
         pool_names=(None, None)) -> str:
    if include_top:
        x = net.add("GlobalAveragePooling2D", x, gap_name)
        return net.add("Dense", x, "predictions", units=classes, activation="softmax")
    if pooling == "avg":
        return net.add("GlobalAveragePooling2D", x, pool_names[0])
    if pooling == "max":
        return net.add("GlobalMaxPooling2D", x, pool_names[1])
    if pooling is not None:
        raise JaxvisError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    return x


def vgg_layers(depths: Sequence[int] = (2, 2, 3, 3, 3), *, include_top=True, input_shape=None, classes=1000,
               pooling=None) -> list[LayerConfig]:
    """VGG16 (depths 2, 2, 3, 3, 3) or VGG19 (2, 2, 4, 4, 4): `block{b}_conv{i}`, `block{b}_pool`, `fc1`, `fc2`,
    `predictions`."""
    net = _Net()
    x = net.input(_input_shape(input_shape, include_top, 224, 32))
    for block, (depth, filters) in enumerate(zip(depths, (64, 128, 256, 512, 512)), 1):
        for i in range(1, depth + 1):
            x = net.add("Conv2D", x, f"block{block}_conv{i}", filters=filters, kernel_size=[3, 3], padding="same",
                        activation="relu")
        x = net.add("MaxPooling2D", x, f"block{block}_pool", pool_size=[2, 2], strides=[2, 2])
    if include_top:
        x = net.add("Flatten", x, "flatten")
        x = net.add("Dense", x, "fc1", units=4096, activation="relu")
        x = net.add("Dense", x, "fc2", units=4096, activation="relu")
        x = net.add("Dense", x, "predictions", units=classes, activation="softmax")
    else:
        x = _top(net, x, False, pooling, classes)
    return net.ordered(x)


def resnet50_layers(*, include_top=True, input_shape=None, classes=1000, pooling=None) -> list[LayerConfig]:
    """ResNet50 (v1): `conv1_conv` ... `conv{s}_block{b}_{1,2,3}_{conv,bn,relu}`, `..._add`, `..._out`, `avg_pool`,
    `predictions`."""
    net = _Net()
    bn = dict(axis=3, epsilon=1.001e-5)
    x = net.input(_input_shape(input_shape, include_top, 224, 32))
    x = net.add("ZeroPadding2D", x, "conv1_pad", padding=[[3, 3], [3, 3]])
    x = net.add("Conv2D", x, "conv1_conv", filters=64, kernel_size=[7, 7], strides=[2, 2])
    x = net.add("BatchNormalization", x, "conv1_bn", **bn)
    x = net.add("Activation", x, "conv1_relu", activation="relu")
    x = net.add("ZeroPadding2D", x, "pool1_pad", padding=[[1, 1], [1, 1]])
    x = net.add("MaxPooling2D", x, "pool1_pool", pool_size=[3, 3], strides=[2, 2])

    def block(x, filters, stride, conv_shortcut, name):
        if conv_shortcut:
            shortcut = net.add("Conv2D", x, f"{name}_0_conv", filters=4 * filters, kernel_size=[1, 1],
                               strides=[stride, stride])
            shortcut = net.add("BatchNormalization", shortcut, f"{name}_0_bn", **bn)
        else:
            shortcut = x
        x = net.add("Conv2D", x, f"{name}_1_conv", filters=filters, kernel_size=[1, 1], strides=[stride, stride])
        x = net.add("BatchNormalization", x, f"{name}_1_bn", **bn)
        x = net.add("Activation", x, f"{name}_1_relu", activation="relu")
        x = net.add("Conv2D", x, f"{name}_2_conv", filters=filters, kernel_size=[3, 3], padding="same")
        x = net.add("BatchNormalization", x, f"{name}_2_bn", **bn)
        x = net.add("Activation", x, f"{name}_2_relu", activation="relu")
        x = net.add("Conv2D", x, f"{name}_3_conv", filters=4 * filters, kernel_size=[1, 1])
        x = net.add("BatchNormalization", x, f"{name}_3_bn", **bn)
        x = net.add("Add", [shortcut, x], f"{name}_add")
        return net.add("Activation", x, f"{name}_out", activation="relu")

    for stack, (filters, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 2):
        x = block(x, filters, stride, True, f"conv{stack}_block1")
        for i in range(2, blocks + 1):
            x = block(x, filters, 1, False, f"conv{stack}_block{i}")
    x = _top(net, x, include_top, pooling, classes, gap_name="avg_pool", pool_names=("avg_pool", "max_pool"))
    return net.ordered(x)


def inception_v3_layers(*, include_top=True, input_shape=None, classes=1000, pooling=None) -> list[LayerConfig]:
    """InceptionV3: auto-named `conv2d_N` / `batch_normalization_N` / `activation_N`, blocks `mixed0` ... `mixed10`."""
    net = _Net()

    def conv_bn(x, filters, rows, cols, padding="same", strides=(1, 1)):
        x = net.add("Conv2D", x, None, filters=filters, kernel_size=[rows, cols], strides=list(strides),
                    padding=padding, use_bias=False)
        x = net.add("BatchNormalization", x, None, axis=3, scale=False)
        return net.add("Activation", x, None, activation="relu")

    def avg_pool(x):
        return net.add("AveragePooling2D", x, None, pool_size=[3, 3], strides=[1, 1], padding="same")

    def max_pool(x):
        return net.add("MaxPooling2D", x, None, pool_size=[3, 3], strides=[2, 2])

    def concat(branches, name=None):
        return net.add("Concatenate", branches, name, axis=3)

    x = net.input(_input_shape(input_shape, include_top, 299, 75))
    x = conv_bn(x, 32, 3, 3, strides=(2, 2), padding="valid")
    x = conv_bn(x, 32, 3, 3, padding="valid")
    x = conv_bn(x, 64, 3, 3)
    x = max_pool(x)
    x = conv_bn(x, 80, 1, 1, padding="valid")
    x = conv_bn(x, 192, 3, 3, padding="valid")
    x = max_pool(x)
    for i, pool_filters in enumerate((32, 64, 64)):  # mixed 0, 1, 2: 35 x 35
        b1 = conv_bn(x, 64, 1, 1)
        b5 = conv_bn(conv_bn(x, 48, 1, 1), 64, 5, 5)
        b3 = conv_bn(conv_bn(conv_bn(x, 64, 1, 1), 96, 3, 3), 96, 3, 3)
        bp = conv_bn(avg_pool(x), pool_filters, 1, 1)
        x = concat([b1, b5, b3, bp], f"mixed{i}")
    b3 = conv_bn(x, 384, 3, 3, strides=(2, 2), padding="valid")  # mixed 3: 17 x 17
    bd = conv_bn(conv_bn(conv_bn(x, 64, 1, 1), 96, 3, 3), 96, 3, 3, strides=(2, 2), padding="valid")
    x = concat([b3, bd, max_pool(x)], "mixed3")
    for i, width in enumerate((128, 160, 160, 192)):  # mixed 4, 5, 6, 7
        b1 = conv_bn(x, 192, 1, 1)
        b7 = conv_bn(conv_bn(conv_bn(x, width, 1, 1), width, 1, 7), 192, 7, 1)
        bd = conv_bn(x, width, 1, 1)
        bd = conv_bn(conv_bn(conv_bn(conv_bn(bd, width, 7, 1), width, 1, 7), width, 7, 1), 192, 1, 7)
        bp = conv_bn(avg_pool(x), 192, 1, 1)
        x = concat([b1, b7, bd, bp], f"mixed{4 + i}")
    b3 = conv_bn(conv_bn(x, 192, 1, 1), 320, 3, 3, strides=(2, 2), padding="valid")  # mixed 8: 8 x 8
    b7 = conv_bn(conv_bn(conv_bn(x, 192, 1, 1), 192, 1, 7), 192, 7, 1)
    b7 = conv_bn(b7, 192, 3, 3, strides=(2, 2), padding="valid")
    x = concat([b3, b7, max_pool(x)], "mixed8")
    for i in range(2):  # mixed 9, 10
        b1 = conv_bn(x, 320, 1, 1)
        b3 = conv_bn(x, 384, 1, 1)
        b3 = concat([conv_bn(b3, 384, 1, 3), conv_bn(b3, 384, 3, 1)], f"mixed9_{i}")
        bd = conv_bn(conv_bn(x, 448, 1, 1), 384, 3, 3)
        bd = concat([conv_bn(bd, 384, 1, 3), conv_bn(bd, 384, 3, 1)])
        bp = conv_bn(avg_pool(x), 192, 1, 1)
        x = concat([b1, b3, bd, bp], f"mixed{9 + i}")
    x = _top(net, x, include_top, pooling, classes, gap_name="avg_pool")
    return net.ordered(x)


def mobilenet_v2_layers(*, alpha: float = 1.0, include_top=True, input_shape=None, classes=1000,
                        pooling=None) -> list[LayerConfig]:
    """MobileNetV2: `Conv1`, `expanded_conv_*`, `block_{1..16}_{expand,depthwise,project}[_BN|_relu]`, `out_relu`,
    `predictions`."""
    net = _Net()
    shape = _input_shape(input_shape, include_top, 224, 32)
    bn = dict(axis=-1, epsilon=1e-3, momentum=0.999)
    x = net.input(shape)
    size = shape[:2]

    def halve(size):  # a stride-2 'same' conv or a valid conv on correct_pad'ed input
        return tuple(None if s is None else -(-s // 2) for s in size)

    x = net.add("Conv2D", x, "Conv1", filters=make_divisible(32 * alpha), kernel_size=[3, 3], strides=[2, 2],
                padding="same", use_bias=False)
    size = halve(size)
    x = net.add("BatchNormalization", x, "bn_Conv1", **bn)
    x = net.add("ReLU", x, "Conv1_relu", max_value=6.0)
    channels = make_divisible(32 * alpha)
    settings = [(1, 16, 1)] + [(6, c, s) for c, s in (
        (24, 2), (24, 1), (32, 2), (32, 1), (32, 1), (64, 2), (64, 1), (64, 1), (64, 1), (96, 1), (96, 1), (96, 1),
        (160, 2), (160, 1), (160, 1), (320, 1))]
    for block_id, (expansion, filters, stride) in enumerate(settings):
        inputs, out = x, make_divisible(int(filters * alpha))
        if block_id:
            prefix = f"block_{block_id}_"
            x = net.add("Conv2D", x, f"{prefix}expand", filters=expansion * channels, kernel_size=[1, 1],
                        padding="same", use_bias=False, activation=None)
            x = net.add("BatchNormalization", x, f"{prefix}expand_BN", **bn)
            x = net.add("ReLU", x, f"{prefix}expand_relu", max_value=6.0)
        else:
            prefix = "expanded_conv_"
        if stride == 2:
            adjust = (1, 1) if size[0] is None else (1 - size[0] % 2, 1 - size[1] % 2)
            x = net.add("ZeroPadding2D", x, f"{prefix}pad", padding=[[1 - adjust[0], 1], [1 - adjust[1], 1]])
            size = halve(size)
        x = net.add("DepthwiseConv2D", x, f"{prefix}depthwise", kernel_size=[3, 3], strides=[stride, stride],
                    activation=None, use_bias=False, padding="same" if stride == 1 else "valid")
        x = net.add("BatchNormalization", x, f"{prefix}depthwise_BN", **bn)
        x = net.add("ReLU", x, f"{prefix}depthwise_relu", max_value=6.0)
        x = net.add("Conv2D", x, f"{prefix}project", filters=out, kernel_size=[1, 1], padding="same",
                    use_bias=False, activation=None)
        x = net.add("BatchNormalization", x, f"{prefix}project_BN", **bn)
        if channels == out and stride == 1:
            x = net.add("Add", [inputs, x], f"{prefix}add")
        channels = out
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = net.add("Conv2D", x, "Conv_1", filters=last, kernel_size=[1, 1], use_bias=False)
    x = net.add("BatchNormalization", x, "Conv_1_bn", **bn)
    x = net.add("ReLU", x, "out_relu", max_value=6.0)
    x = _top(net, x, include_top, pooling, classes)
    return net.ordered(x)

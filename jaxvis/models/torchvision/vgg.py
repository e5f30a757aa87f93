"""torchvision's plain `features -> avgpool -> classifier` networks: VGG16, VGG19 (no BatchNorm), AlexNet.

Contract: `module.apply(variables, x[B,H,W,3], outputs=names, relu_redirect=r)` returns
`{name: activation}` for exactly `names` and stops after the last requested layer. Layer names are
torchvision's `nn.Sequential` indices, every module addressable, in execution order:
`features.0` ... (each Conv2d, ReLU and MaxPool2d: a conv's name is its output *before* its ReLU, the
ReLU's name the map after it, as a forward hook on the module sees them), `avgpool`
(`AdaptiveAvgPool2d` to 7x7, AlexNet 6x6: exact for any input size, `jaxvis.models.torchvision.common`),
`classifier.0` ... `classifier.6` (Linear, ReLU and Dropout -- an identity at inference -- the last
Linear being the logits, before any softmax). `x` is preprocessed with `TORCH_IMAGENET`; VGG takes
32x32 and up, AlexNet 63x63 and up.

Weights are torchvision state_dicts: `features.N.{weight,bias}` and `classifier.N.{weight,bias}`.
torch flattens the pooled C*H*W map before the first Linear and jaxvis an NHWC map, so that one
Linear's input axis is permuted once, in the converter (`linear_rule(..., chw=(C, h, w))`). The
class count is read from the file. Every ReLU is `activations.relu(x, relu_redirect)`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from jaxvis.convert.torch.layout import conv_rule, convert_state_dict, linear_rule
from jaxvis.models.activations import relu
from jaxvis.models.imagenet import imagenet_class_names
from jaxvis.models.layers import Conv2d, Linear
from jaxvis.models.registry import register
from jaxvis.models.spec import TORCH_IMAGENET, ModelSpec, check_image_batch
from jaxvis.models.torchvision.common import (
    Selection,
    adaptive_avg_pool,
    flatten,
    init_shapes,
    linear_outputs,
    load_torch_weights,
    max_pool,
    random_init,
)

__all__ = [
    "TorchSequentialNet", "VGG_CONFIGS", "alexnet", "architecture", "build", "from_state_dict", "layer_names",
    "logits_layer", "vgg16", "vgg19",
]

# A layer is ("conv", out channels, kernel, stride, padding), ("relu",), ("pool", kernel, stride),
# ("linear", out features; 0: the class count) or ("dropout",), in torchvision's Sequential order.
_CONV_RELU = lambda out, k=3, s=1, p=1: (("conv", out, k, s, p), ("relu",))  # noqa: E731
_POOL = (("pool", 2, 2),)


def _vgg_features(cfg) -> tuple:
    layers = ()
    for item in cfg:
        layers += _POOL if item == "M" else _CONV_RELU(item)
    return layers


VGG_CONFIGS = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


@functools.cache
def architecture(arch: str) -> tuple[tuple, tuple[int, int], tuple, int]:
    """(features layers, avgpool size, classifier layers, smallest input) of a torchvision network."""
    if arch in VGG_CONFIGS:
        classifier = (
            ("linear", 4096),
            ("relu",),
            ("dropout",),
            ("linear", 4096),
            ("relu",),
            ("dropout",),
            ("linear", 0),
        )
        return _vgg_features(VGG_CONFIGS[arch]), (7, 7), classifier, 32
    if arch == "alexnet":
        features = (_CONV_RELU(64, 11, 4, 2) + (("pool", 3, 2),) + _CONV_RELU(192, 5, 1, 2) + (("pool", 3, 2),)
                    + _CONV_RELU(384) + _CONV_RELU(256) + _CONV_RELU(256) + (("pool", 3, 2),))
        classifier = (
            ("dropout",),
            ("linear", 4096),
            ("relu",),
            ("dropout",),
            ("linear", 4096),
            ("relu",),
            ("linear", 0),
        )
        return features, (6, 6), classifier, 63
    raise ValueError(f"unknown architecture {arch!r}")


@functools.cache
def layer_names(arch: str) -> tuple[str, ...]:
    """Every addressable layer of `arch`, in execution order."""
    features, _, classifier, _ = architecture(arch)
    return (tuple(f"features.{i}" for i in range(len(features))) + ("avgpool",)
            + tuple(f"classifier.{i}" for i in range(len(classifier))))


def _last_conv_channels(features) -> int:
    return [layer[1] for layer in features if layer[0] == "conv"][-1]


class TorchSequentialNet(nn.Module):
    """VGG / AlexNet as torchvision builds them (see the module docstring for the call contract)."""

    arch: str = "vgg16"
    num_classes: int = 1000
    conv_impl: str = "auto"  # jaxvis.models.layers formulation: "auto", "lax" or "taps"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return layer_names(self.arch)

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        select = Selection(self.arch, self.layer_names, outputs)
        features, pool_size, classifier, minimum = architecture(self.arch)
        check_image_batch(x, 3, f"{self.arch}'s input", minimum=minimum)
        if select.nothing:
            return {}
        for i, layer in enumerate(features):
            if layer[0] == "conv":
                _, out, kernel, stride, padding = layer
                x = Conv2d(out, kernel, stride, padding, impl=self.conv_impl, kernel_init=nn.initializers.he_normal(),
                           name=f"features.{i}")(x)
            elif layer[0] == "relu":
                x = relu(x, relu_redirect)
            else:
                x = max_pool(x, layer[1], layer[2])
            if select.keep(f"features.{i}", x):
                return select.found
        x = adaptive_avg_pool(x, pool_size)
        if select.keep("avgpool", x):
            return select.found
        x = flatten(x)
        for i, layer in enumerate(classifier):
            if layer[0] == "linear":
                x = Linear(layer[1] or self.num_classes, name=f"classifier.{i}")(x)
            elif layer[0] == "relu":
                x = relu(x, relu_redirect)
            if select.keep(f"classifier.{i}", x):
                break
        return select.found


# ---------------------------------------------------------------------------------------------
# Weights.


def _rules(arch: str):
    """torchvision state_dict keys -> the params tree (see `jaxvis.convert.torch.layout`)."""
    features, (ph, pw), classifier, _ = architecture(arch)
    rules = [conv_rule(("params", f"features.{i}"), f"features.{i}") for i, layer in enumerate(features)
             if layer[0] == "conv"]
    linears = [i for i, layer in enumerate(classifier) if layer[0] == "linear"]
    chw = (_last_conv_channels(features), ph, pw)  # the first Linear takes torch's C*H*W flatten
    rules += [linear_rule(("params", f"classifier.{i}"), f"classifier.{i}", chw=chw if i == linears[0] else None)
              for i in linears]
    return rules


def logits_layer(arch: str) -> str:
    return f"classifier.{len(architecture(arch)[2]) - 1}"


def from_state_dict(state_dict, arch: str = "vgg16", *, num_classes: int | None = None,
                    what: str = "the weights") -> dict:
    """torchvision `arch` state_dict (`{name: np.ndarray}`) -> `TorchSequentialNet(arch)` variables (NumPy).

    The class count is the last Linear's output count unless given. The result is checked key by
    key and shape by shape against the module's init tree.

    Raises:
      WeightFileError: naming the torch keys missing or left over, or a key with both shapes.
    """
    if num_classes is None:
        num_classes = linear_outputs(state_dict, f"{logits_layer(arch)}.weight")
    return convert_state_dict(state_dict, _rules(arch), _init_shapes(arch, num_classes), what=what)


@functools.cache
def _init_shapes(arch: str, num_classes: int) -> dict:
    minimum = architecture(arch)[3]
    return init_shapes(TorchSequentialNet(arch, num_classes), (1, minimum, minimum, 3))


def build(arch: str, weights=None, *, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """A zoo spec of torchvision's `arch` with the checkpoint at `weights`, or random weights (`seed`)."""
    if weights is not None:
        variables, source = load_torch_weights(weights, functools.partial(from_state_dict, arch=arch))
        num_classes = variables["params"][logits_layer(arch)]["bias"].shape[0]
    else:
        num_classes, minimum = 1000, architecture(arch)[3]
        variables = random_init(TorchSequentialNet(arch), (1, minimum, minimum, 3), seed)
        source = f"random init (seed {seed}): no weights given"
    module = TorchSequentialNet(arch, num_classes, conv_impl)
    return ModelSpec(
        name=arch, module=module, variables=jax.device_put(variables), input_shape=(224, 224, 3),
        layer_names=module.layer_names, preprocess=TORCH_IMAGENET, logits_layer=logits_layer(arch),
        class_names=imagenet_class_names() if num_classes == 1000 else None, source=source,
    )


@register("vgg16", "torchvision VGG16 (no BatchNorm), weights=<torchvision .pth/.safetensors> or random",
          framework="torchvision", module_class=TorchSequentialNet, preprocess=TORCH_IMAGENET)
def vgg16(weights=None, *, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """torchvision's VGG16 (`vgg16`); `weights`: its state_dict (.pth zip / legacy, .safetensors)."""
    return build("vgg16", weights, conv_impl=conv_impl, seed=seed)


@register("vgg19", "torchvision VGG19 (no BatchNorm), weights=<torchvision .pth/.safetensors> or random",
          framework="torchvision", module_class=TorchSequentialNet, preprocess=TORCH_IMAGENET)
def vgg19(weights=None, *, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """torchvision's VGG19 (`vgg19`); `weights`: its state_dict (.pth zip / legacy, .safetensors)."""
    return build("vgg19", weights, conv_impl=conv_impl, seed=seed)


@register("alexnet", "torchvision AlexNet, weights=<torchvision .pth/.safetensors> or random",
          framework="torchvision", module_class=TorchSequentialNet, preprocess=TORCH_IMAGENET)
def alexnet(weights=None, *, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """torchvision's AlexNet (`alexnet`); `weights`: its state_dict (.pth zip / legacy, .safetensors)."""
    return build("alexnet", weights, conv_impl=conv_impl, seed=seed)

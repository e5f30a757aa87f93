"""torchvision's ResNet18, ResNet34 (BasicBlock) and ResNet50 (Bottleneck, stride on the 3x3: "v1.5").

Contract: `ResNet(depth).apply(variables, x[B,H,W,3], outputs=names, relu_redirect=r)` returns
`{name: activation}` for exactly `names` and stops after the last requested layer. Layer names are
torchvision's module names, in the order their forward hooks fire: `conv1` (the stem conv's output),
`bn1` (after its BatchNorm), `relu`, `maxpool`, then for each stage `layerS.0`, `layerS.1`, ...
(block outputs after the residual add and ReLU) and `layerS` (the same map as its last block),
`avgpool` ([B, 1, 1, C], as torch's `AdaptiveAvgPool2d((1, 1))`) and `fc` (logits, before any
softmax). `x` is preprocessed with `TORCH_IMAGENET`; any size from 32x32 up works.

Inference only: the stem keeps its conv and its BatchNorm (as a per-channel scale and bias) apart, so
`conv1` and `bn1` are both addressable; every BatchNorm inside a block is folded into its conv
(`conv_bn_rule`), the downsample's too. Params: `conv1/kernel`, `bn1/{scale, bias}`,
`layerS.B/{conv1, conv2[, conv3][, downsample]}/{kernel, bias}`, `fc`. Every ReLU is
`activations.relu(x, relu_redirect)`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np

from jaxvis.convert.torch.layout import Rule, conv_bn_rule, conv_rule, convert_state_dict, linear_rule
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
    "Affine", "Block", "DEPTHS", "ResNet", "WIDTHS", "batchnorm_affine_rule", "blocks", "build", "expansion",
    "from_state_dict", "layer_names", "resnet18", "resnet34", "resnet50",
]

# depth -> (block kind, blocks per stage); torchvision's resnet18 / resnet34 / resnet50.
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}
WIDTHS = (64, 128, 256, 512)
_MINIMUM = 32


def expansion(depth: int) -> int:
    return 4 if DEPTHS[depth][0] == "bottleneck" else 1


@functools.cache
def blocks(depth: int) -> tuple[tuple[str, int, int, bool], ...]:
    """(name, width, stride, has downsample) of every block, in order."""
    kind, counts = DEPTHS[depth]
    out, inp = [], 64
    for stage, (count, width) in enumerate(zip(counts, WIDTHS), start=1):
        for b in range(count):
            stride = 2 if stage > 1 and b == 0 else 1
            out.append((f"layer{stage}.{b}", width, stride, stride != 1 or inp != width * expansion(depth)))
            inp = width * expansion(depth)
    return tuple(out)


@functools.cache
def layer_names(depth: int) -> tuple[str, ...]:
    """Every addressable layer, in execution order."""
    names, counts = ["conv1", "bn1", "relu", "maxpool"], DEPTHS[depth][1]
    for stage, count in enumerate(counts, start=1):
        names += [f"layer{stage}.{b}" for b in range(count)] + [f"layer{stage}"]
    return tuple(names + ["avgpool", "fc"])


def _conv_names(depth: int) -> tuple[str, ...]:
    return ("conv1", "conv2", "conv3") if DEPTHS[depth][0] == "bottleneck" else ("conv1", "conv2")


class Block(nn.Module):
    """BasicBlock (3x3, 3x3) or Bottleneck (1x1, 3x3 with the stride, 1x1 to 4x), with folded BatchNorms."""

    width: int
    stride: int
    downsample: bool
    bottleneck: bool
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, relu_redirect):
        conv = functools.partial(Conv2d, impl=self.conv_impl, kernel_init=nn.initializers.he_normal())
        if self.bottleneck:
            h = relu(conv(self.width, 1, name="conv1")(x), relu_redirect)
            h = relu(conv(self.width, 3, self.stride, 1, name="conv2")(h), relu_redirect)
            h = conv(self.width * 4, 1, name="conv3")(h)
        else:
            h = relu(conv(self.width, 3, self.stride, 1, name="conv1")(x), relu_redirect)
            h = conv(self.width, 3, 1, 1, name="conv2")(h)
        identity = conv(h.shape[-1], 1, self.stride, name="downsample")(x) if self.downsample else x
        return relu(h + identity, relu_redirect)


class ResNet(nn.Module):
    """torchvision's ResNet (see the module docstring for the call contract)."""

    depth: int = 50
    num_classes: int = 1000
    conv_impl: str = "auto"  # jaxvis.models.layers formulation: "auto", "lax" or "taps"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return layer_names(self.depth)

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        model = f"resnet{self.depth}"
        select = Selection(model, self.layer_names, outputs)
        check_image_batch(x, 3, f"{model}'s input", minimum=_MINIMUM)
        if select.nothing:
            return {}
        x = Conv2d(64, 7, 2, 3, use_bias=False, impl=self.conv_impl, kernel_init=nn.initializers.he_normal(),
                   name="conv1")(x)
        if select.keep("conv1", x):
            return select.found
        x = Affine(name="bn1")(x)
        if select.keep("bn1", x):
            return select.found
        x = relu(x, relu_redirect)
        if select.keep("relu", x):
            return select.found
        x = max_pool(x, 3, 2, 1)
        if select.keep("maxpool", x):
            return select.found
        bottleneck, counts = DEPTHS[self.depth][0] == "bottleneck", DEPTHS[self.depth][1]
        for name, width, stride, downsample in blocks(self.depth):
            x = Block(width, stride, downsample, bottleneck, self.conv_impl, name=name)(x, relu_redirect)
            if select.keep(name, x):
                return select.found
            stage, index = name.split(".")
            if int(index) == counts[int(stage[5:]) - 1] - 1 and select.keep(stage, x):
                return select.found
        x = adaptive_avg_pool(x, 1)
        if select.keep("avgpool", x):
            return select.found
        select.keep("fc", Linear(self.num_classes, name="fc")(flatten(x)))
        return select.found


class Affine(nn.Module):
    """An inference BatchNorm: x * scale + bias, per channel (torch's BatchNorm2d in eval mode)."""

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones_init(), (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros_init(), (x.shape[-1],))
        return x * scale + bias


# ---------------------------------------------------------------------------------------------
# Weights.


def batchnorm_affine_rule(target: tuple[str, ...], prefix: str, eps: float = 1e-5) -> Rule:
    """torch BatchNorm2d at `prefix` (eval mode) -> {scale, bias} of `Affine` at `target`."""

    def fn(weight, bias, mean, var):
        vectors = [np.asarray(v, np.float64) for v in (weight, bias, mean, var)]
        if any(v.ndim != 1 for v in vectors) or len({v.shape for v in vectors}) != 1:
            raise ValueError(f"BatchNorm vectors of shapes {[v.shape for v in vectors]}")
        weight, bias, mean, var = vectors
        scale = weight / np.sqrt(var + eps)
        return {"scale": scale.astype(np.float32), "bias": (bias - mean * scale).astype(np.float32)}

    return Rule(target, tuple(f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var")), fn)


def _rules(depth: int):
    """torchvision state_dict keys -> the params tree (see `jaxvis.convert.torch.layout`)."""
    rules = [conv_rule(("params", "conv1"), "conv1", bias=False), batchnorm_affine_rule(("params", "bn1"), "bn1")]
    for name, _, _, downsample in blocks(depth):
        for k, conv in enumerate(_conv_names(depth), start=1):
            rules.append(conv_bn_rule(("params", name, conv), f"{name}.{conv}", f"{name}.bn{k}"))
        if downsample:  # Sequential(conv1x1, BatchNorm2d)
            rules.append(conv_bn_rule(("params", name, "downsample"), f"{name}.downsample.0", f"{name}.downsample.1"))
    rules.append(linear_rule(("params", "fc"), "fc"))
    return rules


def from_state_dict(state_dict, depth: int = 50, *, num_classes: int | None = None,
                    what: str = "the weights") -> dict:
    """torchvision ResNet state_dict (`{name: np.ndarray}`) -> `ResNet(depth)` variables (NumPy).

    BatchNorms are folded (eps 1e-5); `num_batches_tracked` is dropped; the class count is read from
    `fc.weight` unless given. The result is checked against the module's init tree.

    Raises:
      WeightFileError: naming the torch keys missing or left over (a checkpoint of another depth),
        or a key with both shapes.
    """
    if num_classes is None:
        num_classes = linear_outputs(state_dict, "fc.weight")
    return convert_state_dict(state_dict, _rules(depth), _init_shapes(depth, num_classes), what=what)


@functools.cache
def _init_shapes(depth: int, num_classes: int) -> dict:
    return init_shapes(ResNet(depth, num_classes), (1, _MINIMUM, _MINIMUM, 3))


def build(depth: int, weights=None, *, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """A zoo spec of torchvision's ResNet-`depth` with the checkpoint at `weights`, or random weights."""
    if weights is not None:
        variables, source = load_torch_weights(weights, functools.partial(from_state_dict, depth=depth))
        num_classes = variables["params"]["fc"]["bias"].shape[0]
    else:
        num_classes = 1000
        variables = random_init(ResNet(depth), (1, _MINIMUM, _MINIMUM, 3), seed)
        source = f"random init (seed {seed}): no weights given"
    module = ResNet(depth, num_classes, conv_impl)
    return ModelSpec(
        name=f"resnet{depth}", module=module, variables=jax.device_put(variables),
        input_shape=(224, 224, 3), layer_names=module.layer_names, preprocess=TORCH_IMAGENET, logits_layer="fc",
        class_names=imagenet_class_names() if num_classes == 1000 else None, source=source,
    )


@register("resnet18", "torchvision ResNet18, weights=<torchvision .pth/.safetensors> or random",
          framework="torchvision", module_class=ResNet, preprocess=TORCH_IMAGENET)
def resnet18(weights=None, *, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """torchvision's ResNet18; `weights`: its state_dict (.pth zip / legacy, .safetensors)."""
    return build(18, weights, conv_impl=conv_impl, seed=seed)


@register("resnet34", "torchvision ResNet34, weights=<torchvision .pth/.safetensors> or random",
          framework="torchvision", module_class=ResNet, preprocess=TORCH_IMAGENET)
def resnet34(weights=None, *, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """torchvision's ResNet34; `weights`: its state_dict (.pth zip / legacy, .safetensors)."""
    return build(34, weights, conv_impl=conv_impl, seed=seed)


@register("resnet50", "torchvision ResNet50, weights=<torchvision .pth/.safetensors> or random",
          framework="torchvision", module_class=ResNet, preprocess=TORCH_IMAGENET)
def resnet50(weights=None, *, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """torchvision's ResNet50; `weights`: its state_dict (.pth zip / legacy, .safetensors)."""
    return build(50, weights, conv_impl=conv_impl, seed=seed)

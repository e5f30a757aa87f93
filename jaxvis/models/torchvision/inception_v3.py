"""torchvision's Inception v3 (`inception_v3`), without its auxiliary head.

Contract: `InceptionV3().apply(variables, x[B,H,W,3], outputs=names, relu_redirect=r)` returns
`{name: activation}` for exactly `names` and stops after the last requested layer. Layer names are
torchvision's top-level module names, in execution order: `Conv2d_1a_3x3`, `Conv2d_2a_3x3`,
`Conv2d_2b_3x3`, `maxpool1`, `Conv2d_3b_1x1`, `Conv2d_4a_3x3`, `maxpool2`, `Mixed_5b` ... `Mixed_7c`,
`avgpool` ([B, 1, 1, 2048]) and `fc` (logits, before any softmax). A `Conv2d_*` is a BasicConv2d
(conv, BatchNorm eps 1e-3, ReLU): its output is after the ReLU; a `Mixed_*` is the concatenation of
its branches. Any size from 75x75 up works (299x299 is the trained size).

Input: torchvision's ImageNet weights are used with `transform_input=True`, which re-maps the
TORCH_IMAGENET-normalized input to (image - 0.5) / 0.5 before `Conv2d_1a_3x3`; the spec's
preprocessing is that composite (`TORCH_TRANSFORM_INPUT`), so the module receives what
torchvision's first conv does. `transform_input=False` gives `TORCH_IMAGENET` instead.

Weights: a torchvision state_dict; every BatchNorm is folded into its conv and `AuxLogits.*` (the
training-only head) is ignored. Params mirror the torch keys: `Conv2d_1a_3x3/conv`,
`Mixed_5b/branch5x5_1/conv`, ... ({kernel, bias}), `fc`. Every ReLU is `activations.relu`.
"""

from __future__ import annotations

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
    avg_pool,
    classifier_spec,
    classifier_variables,
    flatten,
    max_pool,
)

__all__ = [
    "AUX_PREFIXES", "BN_EPS", "BasicConv2d", "InceptionV3", "LAYER_NAMES", "MIXED", "Mixed", "STEM", "block_convs",
    "from_state_dict", "inception_v3",
]

BN_EPS = 1e-3
AUX_PREFIXES = ("AuxLogits.",)
_MINIMUM = 75

# The stem: BasicConv2d (name, out, kernel, stride, padding) or a max pool (name, None, 3, 2, 0).
STEM = (
    ("Conv2d_1a_3x3", 32, 3, 2, 0), ("Conv2d_2a_3x3", 32, 3, 1, 0), ("Conv2d_2b_3x3", 64, 3, 1, 1),
    ("maxpool1", None, 3, 2, 0), ("Conv2d_3b_1x1", 80, 1, 1, 0), ("Conv2d_4a_3x3", 192, 3, 1, 0),
    ("maxpool2", None, 3, 2, 0),
)
# The Mixed blocks: (name, kind, argument) -- InceptionA's pool_features, InceptionC's channels_7x7.
MIXED = (
    ("Mixed_5b", "A", 32), ("Mixed_5c", "A", 64), ("Mixed_5d", "A", 64), ("Mixed_6a", "B", None),
    ("Mixed_6b", "C", 128), ("Mixed_6c", "C", 160), ("Mixed_6d", "C", 160), ("Mixed_6e", "C", 192),
    ("Mixed_7a", "D", None), ("Mixed_7b", "E", None), ("Mixed_7c", "E", None),
)
LAYER_NAMES = tuple(layer[0] for layer in STEM) + tuple(layer[0] for layer in MIXED) + ("avgpool", "fc")


def block_convs(kind: str, arg) -> tuple[tuple, ...]:
    """The BasicConv2ds of a Mixed block: (name, out, kernel, stride, padding), torchvision's."""
    if kind == "A":
        return (("branch1x1", 64, 1, 1, 0), ("branch5x5_1", 48, 1, 1, 0), ("branch5x5_2", 64, 5, 1, 2),
                ("branch3x3dbl_1", 64, 1, 1, 0), ("branch3x3dbl_2", 96, 3, 1, 1), ("branch3x3dbl_3", 96, 3, 1, 1),
                ("branch_pool", arg, 1, 1, 0))
    if kind == "B":
        return (("branch3x3", 384, 3, 2, 0), ("branch3x3dbl_1", 64, 1, 1, 0), ("branch3x3dbl_2", 96, 3, 1, 1),
                ("branch3x3dbl_3", 96, 3, 2, 0))
    if kind == "C":
        c7, row, col = arg, ((1, 7), (0, 3)), ((7, 1), (3, 0))
        return (("branch1x1", 192, 1, 1, 0), ("branch7x7_1", c7, 1, 1, 0), ("branch7x7_2", c7, row[0], 1, row[1]),
                ("branch7x7_3", 192, col[0], 1, col[1]), ("branch7x7dbl_1", c7, 1, 1, 0),
                ("branch7x7dbl_2", c7, col[0], 1, col[1]), ("branch7x7dbl_3", c7, row[0], 1, row[1]),
                ("branch7x7dbl_4", c7, col[0], 1, col[1]), ("branch7x7dbl_5", 192, row[0], 1, row[1]),
                ("branch_pool", 192, 1, 1, 0))
    if kind == "D":
        return (("branch3x3_1", 192, 1, 1, 0), ("branch3x3_2", 320, 3, 2, 0), ("branch7x7x3_1", 192, 1, 1, 0),
                ("branch7x7x3_2", 192, (1, 7), 1, (0, 3)), ("branch7x7x3_3", 192, (7, 1), 1, (3, 0)),
                ("branch7x7x3_4", 192, 3, 2, 0))
    if kind == "E":
        return (("branch1x1", 320, 1, 1, 0), ("branch3x3_1", 384, 1, 1, 0), ("branch3x3_2a", 384, (1, 3), 1, (0, 1)),
                ("branch3x3_2b", 384, (3, 1), 1, (1, 0)), ("branch3x3dbl_1", 448, 1, 1, 0),
                ("branch3x3dbl_2", 384, 3, 1, 1), ("branch3x3dbl_3a", 384, (1, 3), 1, (0, 1)),
                ("branch3x3dbl_3b", 384, (3, 1), 1, (1, 0)), ("branch_pool", 192, 1, 1, 0))
    raise ValueError(f"unknown Inception block kind {kind!r}")


class BasicConv2d(nn.Module):
    """conv -> (folded) BatchNorm -> ReLU."""

    features: int
    kernel_size: int | tuple[int, int] = 1
    stride: int = 1
    padding: int | tuple[int, int] = 0
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, relu_redirect):
        conv = Conv2d(self.features, self.kernel_size, self.stride, self.padding, impl=self.conv_impl,
                      kernel_init=nn.initializers.he_normal(), name="conv")
        return relu(conv(x), relu_redirect)


class Mixed(nn.Module):
    """One of torchvision's InceptionA ... InceptionE blocks (`kind`), branches concatenated in its order."""

    kind: str
    arg: int | None = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, relu_redirect):
        convs = {name: BasicConv2d(out, k, s, p, self.conv_impl, name=name)
                 for name, out, k, s, p in block_convs(self.kind, self.arg)}

        def chain(h, *names):
            for name in names:
                h = convs[name](h, relu_redirect)
            return h

        pooled = lambda: avg_pool(x, 3, 1, 1)  # noqa: E731  (count_include_pad=True, torch's default)
        if self.kind == "A":
            branches = [chain(x, "branch1x1"), chain(x, "branch5x5_1", "branch5x5_2"),
                        chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), chain(pooled(), "branch_pool")]
        elif self.kind == "B":
            branches = [chain(x, "branch3x3"), chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                        max_pool(x, 3, 2)]
        elif self.kind == "C":
            branches = [chain(x, "branch1x1"), chain(x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
                        chain(x, *(f"branch7x7dbl_{i}" for i in range(1, 6))), chain(pooled(), "branch_pool")]
        elif self.kind == "D":
            branches = [chain(x, "branch3x3_1", "branch3x3_2"),
                        chain(x, *(f"branch7x7x3_{i}" for i in range(1, 5))), max_pool(x, 3, 2)]
        else:  # E
            h = chain(x, "branch3x3_1")
            d = chain(x, "branch3x3dbl_1", "branch3x3dbl_2")
            branches = [chain(x, "branch1x1"), chain(h, "branch3x3_2a"), chain(h, "branch3x3_2b"),
                        chain(d, "branch3x3dbl_3a"), chain(d, "branch3x3dbl_3b"), chain(pooled(), "branch_pool")]
        return jnp.concatenate(branches, axis=-1)


class InceptionV3(nn.Module):
    """torchvision's Inception v3 with folded BatchNorm (see the module docstring for the call contract)."""

    num_classes: int = 1000
    conv_impl: str = "auto"  # jaxvis.models.layers formulation: "auto", "lax" or "taps"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return LAYER_NAMES

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        select = Selection("inception_v3", LAYER_NAMES, outputs)
        check_image_batch(x, 3, "inception_v3's input", minimum=_MINIMUM)
        if select.nothing:
            return {}
        for name, out, kernel, stride, padding in STEM:
            if out is None:
                x = max_pool(x, kernel, stride, padding)
            else:
                x = BasicConv2d(out, kernel, stride, padding, self.conv_impl, name=name)(x, relu_redirect)
            if select.keep(name, x):
                return select.found
        for name, kind, arg in MIXED:
            x = Mixed(kind, arg, self.conv_impl, name=name)(x, relu_redirect)
            if select.keep(name, x):
                return select.found
        x = adaptive_avg_pool(x, 1)
        if select.keep("avgpool", x):
            return select.found
        select.keep("fc", Linear(self.num_classes, name="fc")(flatten(x)))  # dropout: identity at inference
        return select.found


# ---------------------------------------------------------------------------------------------
# Weights.


def _basic_conv_rule(path: tuple[str, ...], prefix: str):
    return conv_bn_rule(("params",) + path + ("conv",), f"{prefix}.conv", f"{prefix}.bn", eps=BN_EPS)


def _rules():
    """torchvision state_dict keys -> the folded params tree (see `jaxvis.convert.torch.layout`)."""
    rules = [_basic_conv_rule((name,), name) for name, out, *_ in STEM if out is not None]
    for name, kind, arg in MIXED:
        rules += [_basic_conv_rule((name, conv), f"{name}.{conv}") for conv, *_ in block_convs(kind, arg)]
    return rules + [linear_rule(("params", "fc"), "fc")]


def from_state_dict(state_dict, *, num_classes: int | None = None, what: str = "the weights") -> dict:
    """torchvision Inception3 state_dict (`{name: np.ndarray}`) -> `InceptionV3` variables (NumPy).

    `AuxLogits.*` is ignored; BatchNorms are folded (eps 1e-3); the class count is read from
    `fc.weight` unless given. The result is checked against the module's init tree.

    Raises:
      WeightFileError: naming the torch keys missing or left over, or a key with both shapes.
    """
    return classifier_variables(state_dict, _rules(), module_class=InceptionV3, aux_prefixes=AUX_PREFIXES,
                                minimum=_MINIMUM, num_classes=num_classes, what=what)


@register(
    "inception_v3",
    "torchvision Inception v3, weights=<torchvision .pth/.safetensors> or random",
    framework="torchvision",
    module_class=InceptionV3,
    preprocess=TORCH_TRANSFORM_INPUT,
    input_shape=(299, 299, 3),
)
def inception_v3(weights=None, *, transform_input: bool = True, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """torchvision's Inception v3; `weights`: its state_dict (.pth zip / legacy, .safetensors).

    Args:
      weights: a torchvision Inception3 checkpoint; default: random weights (`seed`).
      transform_input: torchvision's flag, True for its ImageNet weights: the preprocessing is then
        (image - 0.5) / 0.5, else `TORCH_IMAGENET`.
      conv_impl: conv formulation (`jaxvis.models.layers`).
    """
    return classifier_spec(
        "inception_v3",
        InceptionV3,
        from_state_dict,
        weights=weights,
        input_shape=(299, 299, 3),
        minimum=_MINIMUM,
        layer_names=LAYER_NAMES,
        transform_input=transform_input,
        conv_impl=conv_impl,
        seed=seed,
    )

"""The small MNIST CNN of pytorch/examples (`mnist/main.py`'s `Net`), as `torch_mnist_cnn`.

Contract: `MnistCNN().apply(variables, x[B,28,28,1], outputs=names, relu_redirect=r)` returns
`{name: activation}` for exactly `names` and stops after the last requested layer. The network is
conv1 (1->32, 3x3) - ReLU - conv2 (32->64, 3x3) - ReLU - 2x2 max pool - dropout1 - flatten -
fc1 (9216->128) - ReLU - dropout2 - fc2 (128->10). Its ReLUs and pooling are functional in torch, so
the layer names are its modules as forward hooks see them: `conv1`, `conv2` (conv outputs, before
their ReLU), `dropout1` (the pooled map, [B,12,12,64]), `fc1` (before its ReLU), `dropout2` (after
it) and `fc2` (logits, before the example's log_softmax). The input must be 28x28 (fc1 takes the
flattened 64x12x12 map); the preprocessing is the example's `Normalize((0.1307,), (0.3081,))` on
grayscale images in [0, 1].

Weights: the example's state_dict (`conv1`, `conv2`, `fc1`, `fc2`). torch flattens the pooled map
as C*H*W and jaxvis as H*W*C, so `fc1`'s input axis is permuted once, in the converter
(`linear_rule(..., chw=(64, 12, 12))`). Every ReLU is `activations.relu(x, relu_redirect)`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from jaxvis.convert.torch.layout import conv_rule, convert_state_dict, linear_rule
from jaxvis.errors import JaxvisError
from jaxvis.models.activations import relu
from jaxvis.models.layers import Conv2d, Linear
from jaxvis.models.registry import register
from jaxvis.models.spec import ModelSpec, Preprocess, check_image_batch
from jaxvis.models.torchvision.common import (
    Selection,
    flatten,
    init_shapes,
    linear_outputs,
    load_torch_weights,
    max_pool,
    random_init,
)

__all__ = ["INPUT_SHAPE", "LAYER_NAMES", "MNIST", "MnistCNN", "POOLED_CHW", "from_state_dict", "torch_mnist_cnn"]

LAYER_NAMES = ("conv1", "conv2", "dropout1", "fc1", "dropout2", "fc2")
MNIST = Preprocess(mean=(0.1307,), std=(0.3081,))
POOLED_CHW = (64, 12, 12)  # what torch flattens before fc1
INPUT_SHAPE = (28, 28, 1)


class MnistCNN(nn.Module):
    """pytorch/examples' MNIST `Net` (see the module docstring for the call contract)."""

    num_classes: int = 10
    conv_impl: str = "auto"  # jaxvis.models.layers formulation: "auto", "lax" or "taps"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return LAYER_NAMES

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        select = Selection("torch_mnist_cnn", LAYER_NAMES, outputs)
        check_image_batch(x, 1, "torch_mnist_cnn's input")
        if tuple(x.shape[1:]) != INPUT_SHAPE:
            raise JaxvisError(f"torch_mnist_cnn takes 28x28 images (fc1 takes a flattened 64x12x12 map), "
                              f"got {x.shape[1]}x{x.shape[2]}")
        if select.nothing:
            return {}
        conv = functools.partial(Conv2d, kernel_size=3, impl=self.conv_impl)
        steps = (
            ("conv1", lambda h: conv(32, name="conv1")(h)),
            ("conv2", lambda h: conv(64, name="conv2")(relu(h, relu_redirect))),
            ("dropout1", lambda h: max_pool(relu(h, relu_redirect), 2)),
            ("fc1", lambda h: Linear(128, name="fc1")(flatten(h))),
            ("dropout2", lambda h: relu(h, relu_redirect)),
            ("fc2", lambda h: Linear(self.num_classes, name="fc2")(h)),
        )
        for name, step in steps:
            x = step(x)
            if select.keep(name, x):
                break
        return select.found


def _rules():
    """The example's state_dict keys -> the params tree; fc1 gets the C*H*W -> H*W*C fix."""
    return [conv_rule(("params", "conv1"), "conv1"), conv_rule(("params", "conv2"), "conv2"),
            linear_rule(("params", "fc1"), "fc1", chw=POOLED_CHW), linear_rule(("params", "fc2"), "fc2")]


def from_state_dict(state_dict, *, num_classes: int | None = None, what: str = "the weights") -> dict:
    """The example's state_dict (`{name: np.ndarray}`) -> `MnistCNN` variables (NumPy), checked against init.

    Raises:
      WeightFileError: naming the torch keys missing or left over, or a key with both shapes.
    """
    if num_classes is None:
        num_classes = linear_outputs(state_dict, "fc2.weight", default=10)
    return convert_state_dict(state_dict, _rules(), _init_shapes(num_classes), what=what)


@functools.cache
def _init_shapes(num_classes: int) -> dict:
    return init_shapes(MnistCNN(num_classes), (1, *INPUT_SHAPE))


@register("torch_mnist_cnn", "pytorch/examples MNIST CNN (28x28 gray), weights=<its .pth/.safetensors> or random",
          framework="pytorch", module_class=MnistCNN, preprocess=MNIST, input_shape=INPUT_SHAPE)
def torch_mnist_cnn(weights=None, *, conv_impl: str = "auto", seed: int = 0) -> ModelSpec:
    """pytorch/examples' MNIST CNN; `weights`: its state_dict (.pth zip / legacy, .safetensors)."""
    if weights is not None:
        variables, source = load_torch_weights(weights, from_state_dict)
        num_classes = variables["params"]["fc2"]["bias"].shape[0]
    else:
        num_classes = 10
        variables = random_init(MnistCNN(), (1, *INPUT_SHAPE), seed)
        source = f"random init (seed {seed}): no weights given"
    module = MnistCNN(num_classes, conv_impl)
    return ModelSpec(
        name="torch_mnist_cnn", module=module, variables=jax.device_put(variables),
        input_shape=INPUT_SHAPE, layer_names=LAYER_NAMES, preprocess=MNIST, logits_layer="fc2",
        class_names=tuple(str(digit) for digit in range(10)) if num_classes == 10 else None, source=source,
    )

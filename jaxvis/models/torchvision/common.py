"""torch's pooling arithmetic on NHWC maps, and the layer selection shared by the torchvision zoo.

Contract: every pooling function maps `x[B,H,W,C]` to `y[B,Ho,Wo,C]` with exactly the output size
and values of the torch function of the same name on the NCHW map (`nn.MaxPool2d`,
`F.avg_pool2d`, `nn.AdaptiveAvgPool2d`), so a torchvision network ported to Flax keeps its
spatial sizes for any input size, not only the one it was trained on:

* `max_pool(x, k, s, p, ceil_mode=...)`: padding is -inf; with `ceil_mode` the output has
  `ceil((H + 2p - k) / s) + 1` rows, less one if the last window would start in the right padding
  (torch's rule), the extra rows read -inf.
* `avg_pool(x, k, s, p)`: `count_include_pad=True` (torch's default): zero padding, divided by k*k.
* `adaptive_avg_pool(x, (oh, ow))`: output row i averages input rows
  `floor(i*H/oh) .. ceil((i+1)*H/oh) - 1` (bins may overlap, or repeat a row when H < oh); written
  as two small averaging matrices so it is exact for any H, W.

`Selection` is the `outputs=` contract of `jaxvis.models.spec`: it validates the requested names,
records them as the network runs and says when the last one has been computed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.graph.ops import max_pool2d
from jaxvis.models.spec import TORCH_IMAGENET, ModelSpec, Preprocess

__all__ = [
    "Selection", "TORCH_TRANSFORM_INPUT", "adaptive_avg_pool", "adaptive_bins", "avg_pool",
    "classifier_spec", "classifier_variables", "flatten", "init_shapes", "linear_outputs", "load_torch_weights",
    "max_pool", "pool_output_size", "random_init", "without_prefixes",
]

# torchvision's `transform_input=True` (its GoogLeNet and Inception v3 ImageNet weights) re-maps a
# TORCH_IMAGENET-normalized input channel-wise by x * std / 0.5 + (mean - 0.5) / 0.5, which is
# (image - 0.5) / 0.5 on the [0, 1] image: so the spec's preprocessing is this, and the module
# receives exactly what torchvision's first conv receives.
TORCH_TRANSFORM_INPUT = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def pool_output_size(size: int, kernel: int, stride: int, padding: int, *, ceil_mode: bool = False) -> int:
    """torch's pooling output size (`pooling_output_shape`, dilation 1)."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise JaxvisError(f"a {kernel}-wide pooling window (padding {padding}) does not fit an input of size {size}")
    return out


def _pad_for_pool(x, kernel, stride, padding, ceil_mode, value):
    """`x` padded (or cropped) by `value` to exactly the rows / columns the pooling windows read."""
    config = [(0, 0, 0)]
    for axis, (k, s, p) in enumerate(zip(kernel, stride, padding), start=1):
        out = pool_output_size(x.shape[axis], k, s, p, ceil_mode=ceil_mode)
        config.append((p, (out - 1) * s + k - x.shape[axis] - p, 0))
    config.append((0, 0, 0))
    return lax.pad(x, jnp.asarray(value, x.dtype), config)


def max_pool(x, kernel_size, stride=None, padding=0, *, ceil_mode: bool = False):
    """`nn.MaxPool2d(kernel_size, stride, padding, ceil_mode=ceil_mode)` on NHWC (stride defaults to the kernel).

    The graph executor's `max_pool2d` (the maximum of the window's strided slices): its gradient
    costs a fraction of `lax.reduce_window`'s on CPU, which XLA builds from four full-size index
    maps (iotas) and a variadic reduce-window. Values are identical; at ties the gradient is shared.
    """
    kernel, padding = _pair(kernel_size), _pair(padding)
    stride = kernel if stride is None else _pair(stride)
    for axis, (k, s, p) in enumerate(zip(kernel, stride, padding), start=1):
        pool_output_size(x.shape[axis], k, s, p, ceil_mode=ceil_mode)  # an image too small: one JaxvisError line
    return max_pool2d(x, kernel=kernel, stride=stride, padding=tuple((p, p) for p in padding), ceil_mode=ceil_mode)


def avg_pool(x, kernel_size, stride=None, padding=0):
    """`F.avg_pool2d(x, kernel_size, stride, padding)` on NHWC (count_include_pad=True, floor mode)."""
    kernel = _pair(kernel_size)
    stride = kernel if stride is None else _pair(stride)
    padded = _pad_for_pool(x, kernel, stride, _pair(padding), False, 0.0)
    total = lax.reduce_window(padded, 0.0, lax.add, (1, *kernel, 1), (1, *stride, 1), "VALID")
    return total / (kernel[0] * kernel[1])


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling bins: [(start, end)] of each output position."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _averaging_matrix(size: int, out: int) -> np.ndarray:
    matrix = np.zeros((out, size), np.float32)
    for i, (start, end) in enumerate(adaptive_bins(size, out)):
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x, output_size):
    """`nn.AdaptiveAvgPool2d(output_size)` on NHWC, for any input size (keeps [B, oh, ow, C])."""
    (oh, ow), (_, h, w, _) = _pair(output_size), x.shape
    if (oh, ow) == (1, 1):
        return x.mean(axis=(1, 2), keepdims=True)
    if (h, w) != (oh, ow):
        precision = lax.Precision.HIGHEST  # an average, not a learned product: no reduced-precision matmul
        x = jnp.einsum("ih,bhwc->biwc", jnp.asarray(_averaging_matrix(h, oh), x.dtype), x, precision=precision)
        x = jnp.einsum("jw,biwc->bijc", jnp.asarray(_averaging_matrix(w, ow), x.dtype), x, precision=precision)
    return x


def make_divisible(value: float, divisor: int = 8) -> int:
    """The MobileNet family's channel rounding, in torchvision and Keras alike: to a multiple of
    `divisor`, never more than 10% down."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def flatten(x):
    """`torch.flatten(x, 1)` of an NHWC map, in NHWC order (the converter permutes the next linear layer)."""
    return x.reshape(x.shape[0], -1)


class Selection:
    """The requested layers of one call: validated, recorded as computed, and when to stop.

    Usage inside a module's `__call__`:

        select = Selection("vgg16", self.layer_names, outputs)
        if select.nothing:
            return {}
        ...
        if select.keep("features.0", x):   # True once nothing after this layer is needed
            return select.found
    """

    def __init__(self, model: str, names: Sequence[str], outputs: Sequence[str] | None):
        names = tuple(names)
        outputs = names if outputs is None else tuple(outputs)
        self.position = {name: i for i, name in enumerate(names)}
        for name in outputs:
            if name not in self.position:
                raise unknown_name(f"layer of {model}", name, names)
        self.wanted = set(outputs)
        self.last = max((self.position[name] for name in outputs), default=-1)
        self.found: dict = {}

    @property
    def nothing(self) -> bool:
        return not self.wanted

    def needs(self, name: str) -> bool:
        """Whether `name` or any layer after it is still to be computed."""
        return self.position[name] <= self.last

    def keep(self, name: str, value) -> bool:
        """Record `value` if `name` was requested; True when nothing after `name` is needed."""
        if name in self.wanted:
            self.found[name] = value
        return self.position[name] >= self.last



def load_torch_weights(weights, convert) -> tuple[dict, str]:
    """(`convert(state_dict, what=...)` of the torch checkpoint at `weights`, its path)."""
    from jaxvis.convert.torch.checkpoint import load_state_dict

    path = os.fspath(weights)
    return convert(load_state_dict(path), what=f"the weights in {path}"), path


def linear_outputs(state_dict, name: str, default: int = 1000) -> int:
    """The output count of the linear weight `name` in `state_dict` (`default` if absent or not 2-D)."""
    weight = state_dict.get(name)
    return int(np.shape(weight)[0]) if weight is not None and np.ndim(weight) == 2 else default


def without_prefixes(state_dict, prefixes: tuple[str, ...]) -> dict:
    """`state_dict` less the keys under any of `prefixes` (auxiliary heads the zoo does not run)."""
    return {key: value for key, value in state_dict.items() if not key.startswith(prefixes)}


def random_init(module, sample_shape: tuple[int, ...], seed: int) -> dict:
    """`module.init` on zeros of `sample_shape` (jitted: one compile instead of an eager pass)."""
    return jax.jit(module.init)(jax.random.PRNGKey(seed), jnp.zeros(sample_shape, jnp.float32))


def init_shapes(module, sample_shape: tuple[int, ...]) -> dict:
    """The shapes of `module.init` (nothing computed), for `check_against_init`."""
    x = jax.ShapeDtypeStruct(sample_shape, jnp.float32)
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), x)


# --- torchvision Inception-family classifiers (GoogLeNet, Inception v3) ------------------------
# Both fold their BatchNorms, drop the training-only auxiliary heads, read the class count from
# `fc.weight` and default to torchvision's `transform_input` preprocessing.


@functools.cache
def _classifier_init_shapes(module_class, num_classes: int, minimum: int) -> dict:
    return init_shapes(module_class(num_classes), (1, minimum, minimum, 3))


def classifier_variables(state_dict, rules, *, module_class, aux_prefixes: tuple[str, ...], minimum: int,
                         num_classes: int | None, what: str) -> dict:
    """A torchvision classifier's state_dict -> variables (NumPy): auxiliary heads dropped, `rules`
    applied, the result checked against `module_class(num_classes)`'s init tree."""
    from jaxvis.convert.torch.layout import convert_state_dict

    state_dict = without_prefixes(state_dict, aux_prefixes)
    if num_classes is None:
        num_classes = linear_outputs(state_dict, "fc.weight")
    return convert_state_dict(state_dict, rules, _classifier_init_shapes(module_class, num_classes, minimum), what=what)


def classifier_spec(name: str, module_class, from_state_dict, *, weights, input_shape: tuple[int, int, int],
                    minimum: int, layer_names, transform_input: bool, conv_impl: str, seed: int) -> ModelSpec:
    """The ModelSpec of a torchvision Inception-family classifier, from `weights` or random (`seed`)."""
    from jaxvis.models.imagenet import imagenet_class_names

    if weights is not None:
        variables, source = load_torch_weights(weights, from_state_dict)
        num_classes = variables["params"]["fc"]["bias"].shape[0]
    else:
        num_classes = 1000
        variables = random_init(module_class(), (1, minimum, minimum, 3), seed)
        source = f"random init (seed {seed}): no weights given"
    return ModelSpec(
        name=name, module=module_class(num_classes, conv_impl), variables=jax.device_put(variables),
        input_shape=input_shape, layer_names=layer_names,
        preprocess=TORCH_TRANSFORM_INPUT if transform_input else TORCH_IMAGENET,
        logits_layer="fc", class_names=imagenet_class_names() if num_classes == 1000 else None, source=source,
    )

"""A tiny random CNN (conv1, conv2, conv3, logits) that drives fast tests and CLI smoke runs."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvis.models.activations import relu
from jaxvis.models.registry import register
from jaxvis.models.spec import ModelSpec, Preprocess

__all__ = ["LAYERS", "TINY_PREPROCESS", "TinyCNN", "tiny_cnn"]

LAYERS = ("conv1", "conv2", "conv3", "logits")
TINY_PREPROCESS = Preprocess(mean=(0.5,), std=(0.25,))


class TinyCNN(nn.Module):
    widths: tuple[int, ...] = (8, 16, 16)
    classes: int = 10

    @nn.compact
    def __call__(self, x, *, outputs=LAYERS, relu_redirect=0.0):
        wanted, found = set(outputs), {}
        for i, width in enumerate(self.widths):
            name = f"conv{i + 1}"
            x = relu(nn.Conv(width, (3, 3), strides=(2, 2) if i else (1, 1), name=name)(x), relu_redirect)
            if name in wanted:
                found[name] = x
                if len(found) == len(wanted):
                    return found
        x = nn.Dense(self.classes, name="logits")(x.mean(axis=(1, 2)))
        if "logits" in wanted:
            found["logits"] = x
        return found


@register("tiny_cnn", "a tiny random CNN for tests and smoke runs (random weights, seed 0)", framework="jaxvis",
          module_class=TinyCNN, takes_weights=False, preprocess=TINY_PREPROCESS, input_shape=(32, 32, 3))
def tiny_cnn(*, channels: int = 3, seed: int = 0, size: int = 32) -> ModelSpec:
    module = TinyCNN()
    # One compiled init (the same values as eager init, which compiles a program per parameter shape):
    # a single program that the persistent compilation cache can serve to every later process.
    variables = jax.jit(module.init)(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, channels)))
    return ModelSpec(
        name="tiny_cnn",
        module=module,
        variables=variables,
        input_shape=(size, size, channels),
        layer_names=LAYERS,
        preprocess=TINY_PREPROCESS,
        logits_layer="logits",
        source=f"random init, seed {seed}",
        recipe={"zoo": "tiny_cnn", "options": {"channels": channels, "seed": seed, "size": size}},
    )

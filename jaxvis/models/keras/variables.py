"""A Keras layer graph's variables and class outputs, as its lowered IR graph keeps them.

Contract: variables are `{"params": {param_key(layer_name): {weight_name: array}}}` (a nested
model's layer `vgg16/block1_conv1` is keyed `vgg16|block1_conv1`: '/' separates keys in saved
trees) with Keras's own weight names and layouts, in `layer.weights` order: `kernel` [kh, kw,
Cin/groups, Cout] (Conv2D), `kernel` [kh, kw, C, multiplier] (DepthwiseConv2D), `depthwise_kernel`
and `pointwise_kernel` (SeparableConv2D), `kernel` [in, out] (Dense), `bias`, and `gamma`, `beta`,
`moving_mean`, `moving_variance` (BatchNormalization, inference only, all in `params`). So a
converter copies a Keras file's arrays as they are, and weight statistics read like Keras's.
`init_shapes` gives that tree's shapes (no compute), `random_variables` draws it with Keras's
default initializers; `softmax_layers` / `logits_layer` name the layers a `ModelSpec` scores.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.models.keras.graph import Graph
from jaxvis.models.keras.lower import lower, param_key
from jaxvis.models.keras.ops import Dense

__all__ = ["init_shapes", "logits_layer", "param_key", "random_variables", "softmax_layers"]


def init_shapes(graph: Graph, input_shape=None) -> dict:
    """`{"params": {layer: {weight: ShapeDtypeStruct}}}` of the graph lowered at `input_shape`."""
    ir_graph = lower(graph, None if input_shape is None else tuple(input_shape))
    params: dict = {}
    for name, shape in ir_graph.params.items():
        layer, weight = ir_graph.param_path(name)
        params.setdefault(layer, {})[weight] = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
    return {"params": params}


def random_variables(graph: Graph, *, seed: int = 0, input_shape=None) -> dict:
    """Variables with Keras's default initializers (glorot_uniform kernels, zero biases / beta / mean,
    unit gamma / variance), drawn with NumPy (fast for VGG-sized models)."""
    rng = np.random.default_rng(seed)
    tree = init_shapes(graph, input_shape)["params"]
    params = {}
    for layer, weights in tree.items():
        params[layer] = {}
        for name, leaf in weights.items():
            shape = tuple(leaf.shape)
            if name.endswith("kernel"):
                receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
                limit = math.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
                value = rng.uniform(-limit, limit, shape).astype(np.float32)
            elif name in ("gamma", "moving_variance"):
                value = np.ones(shape, np.float32)
            else:
                value = np.zeros(shape, np.float32)
            params[layer][name] = jnp.asarray(value)
    return {"params": params}


def softmax_layers(graph: Graph) -> tuple[str, ...]:
    """The layers whose activation is a softmax (their pre-softmax value is `<layer>/pre_softmax`)."""
    return tuple(node.name for node in graph.nodes if node.activation.is_softmax)


def logits_layer(graph: Graph) -> str | None:
    """The single output layer if it holds class scores (a softmax or linear multi-unit output)."""
    if len(graph.outputs) != 1:
        return None
    node = graph.by_name[graph.outputs[0]]
    if node.activation.is_softmax:
        return node.name
    if isinstance(node.op, Dense) and node.activation.is_identity and node.op.units > 1:
        return node.name
    return None

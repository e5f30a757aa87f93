"""A Flax module that runs a Keras layer `Graph` by Keras layer names.

Contract: `KerasGraph(graph).apply(variables, x, outputs=names, relu_redirect=r)` takes `x` shaped
like the graph's input (`[B, H, W, C]` for image models, channels last) and returns
`{name: activation}` for exactly `names`, computing only the layers those outputs depend on. Each
layer gives what Keras gives, softmax included; for a layer with a softmax activation
(`Dense(activation="softmax")`, `Activation("softmax")`, `Softmax`) the value before the softmax
is `<name>/pre_softmax` (`jaxvis.models.spec.PRE_SOFTMAX`). Results equal Keras 3's inference
(`training=False`) to float32 rounding.

Variables: `{"params": {param_key(layer_name): {weight_name: array}}}` (a nested model's layer
`vgg16/block1_conv1` is keyed `vgg16|block1_conv1`: '/' separates keys in saved trees) with
Keras's own weight names and layouts, in `layer.weights` order: `kernel` [kh, kw, Cin/groups, Cout] (Conv2D), `kernel`
[kh, kw, C, multiplier] (DepthwiseConv2D), `depthwise_kernel` and `pointwise_kernel`
(SeparableConv2D), `kernel` [in, out] (Dense), `bias`, and `gamma`, `beta`, `moving_mean`,
`moving_variance` (BatchNormalization, inference only, all in `params`). So a converter copies a
Keras file's arrays as they are, and weight statistics read like Keras's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.keras.graph import Graph
from jaxvis.models.keras.ops import Dense
from jaxvis.models.keras.parse import Node
from jaxvis.models.spec import PRE_SOFTMAX

__all__ = ["KerasGraph", "init_shapes", "logits_layer", "param_key", "random_variables", "softmax_layers"]


def param_key(layer_name: str) -> str:
    """A layer's key in the params tree: its name, with a nested model's '/' path separators as '|'."""
    return layer_name.replace("/", "|")


class KerasGraph(nn.Module):
    """Runs a `Graph` (see the module docstring for the call contract)."""

    graph: Graph
    conv_impl: str = "auto"  # jaxvis.models.layers formulation: "auto", "lax" or "taps"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.graph.layer_names

    @nn.compact
    def __call__(self, x, *, outputs=None, relu_redirect=0.0) -> dict:
        graph = self.graph
        outputs = graph.layer_names if outputs is None else tuple(outputs)
        softmax = set(softmax_layers(graph))
        # `<layer>/pre_softmax` of a softmax layer: its value before the softmax (what objectives optimize)
        layers = [name[: -len(PRE_SOFTMAX)] if name.endswith(PRE_SOFTMAX) and name[: -len(PRE_SOFTMAX)] in softmax
                  else name for name in outputs]
        for name in layers:
            if name not in graph.by_name:
                raise unknown_name(f"layer of Keras model {graph.name}", name, graph.layer_names)
        expected = graph.input_shape
        if x.ndim != len(expected) + 1 or any(e is not None and e != d for e, d in zip(expected[-1:], x.shape[-1:])):
            raise JaxvisError(f"Keras model {graph.name} takes inputs of shape {('batch', *expected)} "
                              f"(None: any size), got {tuple(x.shape)}")
        needed = graph.ancestors(layers)
        wanted = set(outputs)
        values, found = {graph.input.name: x}, {}
        if graph.input.name in wanted:
            found[graph.input.name] = x
        for node in graph.nodes[1:]:
            if node.name not in needed:
                continue
            xs = [values[name] for name in node.inputs]
            params = self._weights(node, xs[0].shape) if node.op.weight_names else None
            pre = node.op(node.name, params, xs, self.conv_impl)
            post = node.activation(pre, relu_redirect)
            values[node.name] = post
            if node.name in wanted:
                found[node.name] = post
            if node.name + PRE_SOFTMAX in wanted:
                found[node.name + PRE_SOFTMAX] = pre
        return found

    def _weights(self, node: Node, shape) -> dict:
        if self.is_initializing():
            shapes = node.op.weight_shapes(shape)
            return self.param(param_key(node.name), lambda key: _init_weights(key, shapes))
        if not self.has_variable("params", param_key(node.name)):
            raise JaxvisError(f"the variables have no weights for Keras layer {node.name!r}")
        return self.get_variable("params", param_key(node.name))


def _init_weights(key, shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """Keras's default initializers: glorot_uniform kernels, zero biases / beta / mean, unit gamma / variance."""
    out = {}
    for i, (name, shape) in enumerate(shapes.items()):
        if name.endswith("kernel"):
            out[name] = nn.initializers.glorot_uniform()(jax.random.fold_in(key, i), shape, jnp.float32)
        elif name in ("gamma", "moving_variance"):
            out[name] = jnp.ones(shape, jnp.float32)
        else:
            out[name] = jnp.zeros(shape, jnp.float32)
    return out


def _concrete_input_shape(graph: Graph, input_shape=None) -> tuple[int, ...]:
    shape = tuple(input_shape) if input_shape is not None else graph.input_shape
    if len(shape) == 3:
        shape = tuple(224 if d is None else d for d in shape[:2]) + (shape[2],)
    if any(d is None for d in shape):
        raise JaxvisError(f"Keras model {graph.name} has an input shape {graph.input_shape} with unknown sizes")
    return tuple(int(d) for d in shape)


def init_shapes(graph: Graph, input_shape=None) -> dict:
    """`{"params": {layer: {weight: ShapeDtypeStruct}}}` of `KerasGraph(graph)` (no compute)."""
    shape = _concrete_input_shape(graph, input_shape)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    return jax.eval_shape(KerasGraph(graph).init, jax.random.PRNGKey(0), x)


def random_variables(graph: Graph, *, seed: int = 0, input_shape=None) -> dict:
    """Variables with Keras's default initializers, drawn with NumPy (fast for VGG-sized models)."""
    rng = np.random.default_rng(seed)
    tree = init_shapes(graph, input_shape).get("params", {})
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

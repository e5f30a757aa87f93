"""Keras layer graphs lowered onto the graph IR: the IR graph keeps Keras's names and weight layouts,
and a model whose input leaves height / width open runs at any size with TensorFlow's 'same'
padding (resolved per size), matching Keras 3 there too.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import jit
from keras_reference import fast_init, keras, randomize, reference, relative_error

from jaxvis.models import load_model
from jaxvis.models.graph.executor import GraphModule
from jaxvis.models.keras.config import graph_from_keras_config
from jaxvis.models.keras.lower import lower
from jaxvis.models.keras.variables import init_shapes

L = keras.layers
TOLERANCE = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def open_size_model():
    """Strided 'same' convs and pools (whose padding depends on the size's parity) on an open-size input."""
    image = L.Input((None, None, 3), name="image")
    x = L.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv")(image)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="depthwise")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.SeparableConv2D(8, 5, padding="same", activation="relu6", name="separable")(x)
    a = L.MaxPooling2D(3, strides=2, padding="same", name="max")(x)
    b = L.AveragePooling2D(3, strides=2, padding="same", name="avg")(x)
    x = L.Concatenate(name="cat")([a, b])
    x = L.UpSampling2D((2, 3), name="up")(x)
    x = L.Conv2D(4, 2, dilation_rate=2, padding="same", name="dilated")(x)
    return keras.Model(image, L.GlobalAveragePooling2D(name="gap")(x), name="open_size")


@pytest.fixture(scope="module")
def open_size(tmp_path_factory):
    keras.backend.clear_session()
    with fast_init():
        model = open_size_model()
    randomize(model, 7)
    path = tmp_path_factory.mktemp("lower") / "open.keras"
    model.save(path)
    return model, load_model(path)


def test_ir_graph_keeps_keras_names_and_layouts(open_size):
    model, spec = open_size
    graph = spec.module.graph
    assert isinstance(spec.module, GraphModule) and graph.source_format == "keras" and graph.input_layout == "nhwc"
    assert graph.layer_names == tuple(layer.name for layer in model.layers[1:])
    assert spec.input_shape == (224, 224, 3)  # an open size is lowered at 224
    params = spec.variables["params"]
    for layer in model.layers:
        if layer.weights:
            names = [w.path.rsplit("/", 1)[-1] for w in layer.weights]
            assert sorted(params[layer.name]) == sorted(names)
            for weight, name in zip(layer.weights, names):
                assert params[layer.name][name].shape == tuple(weight.shape)
    shapes = init_shapes(graph_from_keras_config(_config(model)))
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(lambda a: a.shape, spec.variables)


def _config(model):
    return json.loads(model.to_json())


@pytest.mark.parametrize("size", [(37, 41), (64, 48), (15, 16)])
def test_open_size_model_matches_keras_at_any_size(open_size, size):
    model, spec = open_size
    names = [layer.name for layer in model.layers[1:]]
    x = np.random.default_rng(size[0]).standard_normal((2, *size, 3)).astype(np.float32)
    want = reference(model, x, names)
    got = jit(lambda v, x: spec.module.apply(v, x, outputs=tuple(names)))(spec.variables, jnp.asarray(x))
    errors = {name: relative_error(got[name], want[name]) for name in names}
    assert max(errors.values()) < TOLERANCE, errors


def test_lowering_is_cached_per_graph_and_size(open_size):
    model, _ = open_size
    graph = graph_from_keras_config(_config(model))
    assert lower(graph, (32, 32, 3)) is lower(graph, (32, 32, 3))
    assert lower(graph, (32, 32, 3)) is not lower(graph, (64, 64, 3))

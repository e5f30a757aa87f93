"""Every keras.applications family (built with `weights=None` at a small input size) loaded from its own
`.keras` file matches Keras 3 (JAX backend, inference) layer by layer, to 1e-4 relative; its `.h5`
file must give the same graph and weights (one numerical comparison per family keeps the suite fast).

These are the user-file route (`load_model(path)`), not the zoo's generated architectures
(test_applications.py): the families' own layers (ConvNeXt's LayerScale and nested Sequentials,
EfficientNet's Normalization, MobileNetV3's `x + 3.0` operation nodes) are read from the file.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import jit
from keras_reference import fast_init, keras, randomize, reference, relative_error

from jaxvis.models import load_model
from jaxvis.models.graph.ir import graph_to_data
from jaxvis.models.spec import KERAS_TF, RAW, TORCH_IMAGENET

A = keras.applications
TOLERANCE = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# family: (constructor, input size, input range, preprocessing); small sizes keep the tests cheap
FAMILIES = {
    "EfficientNetB0": (A.EfficientNetB0, 32, (0.0, 255.0), RAW),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 32, (0.0, 255.0), RAW),
    "ResNet50V2": (A.ResNet50V2, 32, (-1.0, 1.0), KERAS_TF),
    "DenseNet121": (A.DenseNet121, 32, (-2.0, 2.0), TORCH_IMAGENET),
    "Xception": (A.Xception, 71, (-1.0, 1.0), KERAS_TF),
    "NASNetMobile": (A.NASNetMobile, 32, (-1.0, 1.0), KERAS_TF),
    "MobileNetV3Small": (A.MobileNetV3Small, 32, (0.0, 255.0), RAW),
}


def _compared(model, count=40):
    """About `count` layers spread over the model, and the last three (the classifier)."""
    names = [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]
    step = max(len(names) // count, 1)
    return list(dict.fromkeys(names[::step] + names[-3:]))


def _outer_names(model, names):
    """Keras's `reference` probes outer layers only: nested Sequentials (ConvNeXt's stem) are compared at
    their output, by name."""
    return [name for name in names if not isinstance(model.get_layer(name), keras.Model)]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    constructor, size, (low, high), preprocess = FAMILIES[request.param]
    keras.backend.clear_session()
    with fast_init():
        model = constructor(weights=None, input_shape=(size, size, 3))
    randomize(model, seed=7)
    for layer in model.layers:  # a Normalization adapted to data: positive variances
        if type(layer).__name__ == "Normalization" and layer.weights:
            rng = np.random.default_rng(1)
            layer.set_weights([rng.uniform(-0.2, 0.2, 3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32),
                               np.array(100, np.int64)])
            layer.finalize_state()
    folder = tmp_path_factory.mktemp(request.param)
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    x = np.random.default_rng(0).uniform(low, high, (2, size, size, 3)).astype(np.float32)
    names = _compared(model)
    spec = load_model(folder / "model.keras")  # loaded once: both tests read it
    return model, folder, x, names, reference(model, x, _outer_names(model, names)), preprocess, spec


def test_family_matches_keras(family):
    model, folder, x, names, want, preprocess, spec = family
    assert spec.preprocess == preprocess, (model.name, spec.preprocess)
    outputs = tuple(want)
    got = jit(lambda v, x: spec.module.apply(v, x, outputs=outputs))(spec.variables, jnp.asarray(x))
    errors = {name: relative_error(got[name], want[name]) for name in outputs}
    worst = max(errors, key=errors.get)
    print(f"\n{model.name}: worst {worst} {errors[worst]:.1e} over {len(outputs)} layers")
    assert errors[worst] < TOLERANCE, errors
    assert spec.logits_layer == model.layers[-1].name and model.layers[-1].name in spec.softmax_layers


def test_family_h5_file_gives_the_same_model_as_its_keras_file(family):
    """The `.h5` route (Keras 2-style config, HDF5 weight groups) parses to the very graph and weights the
    `.keras` route gives, which the test above compares with Keras: same program, so same values."""
    model, folder, *_, preprocess, from_keras = family
    from_h5 = load_model(folder / "model.h5")
    assert graph_to_data(from_h5.module.graph) == graph_to_data(from_keras.module.graph), model.name
    assert jax.tree.structure(from_h5.variables) == jax.tree.structure(from_keras.variables)
    for got, want in zip(jax.tree.leaves(from_h5.variables), jax.tree.leaves(from_keras.variables)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert (from_h5.preprocess, from_h5.logits_layer, from_h5.softmax_layers, from_h5.layer_names) == (
        preprocess, from_keras.logits_layer, from_keras.softmax_layers, from_keras.layer_names)

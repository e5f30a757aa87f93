"""The Keras Applications zoo: same graph as keras.applications, same activations as Keras 3 (JAX backend).

Each architecture is built by Keras with random weights at a small input size where Keras allows
it (include_top=True still, so the classifier is checked too; MobileNetV2 at its full 224x224),
saved as `.keras` and `.weights.h5`, and loaded both ways; intermediate layers and logits must be
within 1e-4 relative (max |diff| / max |ref|) of Keras's.
"""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import jit
from keras_reference import (
    fast_init,
    keras,
    randomize,
    reference,
    relative_error,
    write_keras2_model_h5,
    write_keras2_weights_h5,
)

from jaxvis.models import KERAS_CAFFE, KERAS_TF, load_model, model_names
from jaxvis.models.keras.applications import APPLICATIONS
from jaxvis.models.keras.config import graph_from_keras_config
from jaxvis.models.keras.load import load_keras

TOLERANCE = 1e-4
# Keras 3.15 on NumPy 2 warns about an __array__ signature on every weight it converts.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
A = keras.applications

# arch: (Keras constructor, its arguments, layers compared, preprocessing)
CASES = {
    "keras_vgg16": (
        A.VGG16,
        dict(input_shape=(64, 64, 3)),
        ["block1_conv1", "block3_conv3", "block4_pool", "block5_conv3", "block5_pool", "fc1", "fc2", "predictions"],
        KERAS_CAFFE,
    ),
    "keras_vgg19": (
        A.VGG19,
        dict(input_shape=(32, 32, 3), classes=10),
        ["block1_conv2", "block3_conv4", "block5_conv4", "block5_pool", "flatten", "fc2", "predictions"],
        KERAS_CAFFE,
    ),
    "keras_resnet50": (
        A.ResNet50,
        dict(input_shape=(64, 64, 3)),
        [
            "conv1_relu",
            "pool1_pool",
            "conv2_block1_0_bn",
            "conv2_block1_add",
            "conv3_block2_out",
            "conv4_block2_out",
            "conv5_block3_out",
            "avg_pool",
            "predictions",
        ],
        KERAS_CAFFE,
    ),
    "keras_inception_v3": (
        A.InceptionV3,
        dict(input_shape=(75, 75, 3)),
        [
            "activation",
            "max_pooling2d",
            "mixed0",
            "mixed3",
            "mixed5",
            "mixed7",
            "mixed8",
            "mixed9_1",
            "concatenate_1",
            "mixed10",
            "avg_pool",
            "predictions",
        ],
        KERAS_TF,
    ),
    "keras_mobilenet_v2": (
        A.MobileNetV2,
        dict(),  # full size: the full-size logits check
        [
            "Conv1_relu",
            "expanded_conv_project_BN",
            "block_1_pad",
            "block_2_add",
            "block_6_depthwise_relu",
            "block_13_expand_relu",
            "block_16_project_BN",
            "out_relu",
            "global_average_pooling2d",
            "predictions",
        ],
        KERAS_TF,
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def app(request, tmp_path_factory):
    """A Keras Application with random weights, saved both ways, and Keras's activations."""
    arch = request.param
    constructor, kwargs, names, _ = CASES[arch]
    keras.backend.clear_session()  # auto-generated names (InceptionV3's conv2d_N) as in a fresh session
    with fast_init():
        model = constructor(weights=None, **kwargs)
    randomize(model, seed=len(arch))
    folder = tmp_path_factory.mktemp(arch)
    model.save(folder / "model.keras")
    model.save_weights(folder / "model.weights.h5")
    write_keras2_model_h5(model, folder / "model_keras2.h5")  # a Keras 2 full-model file
    low, high = (-150.0, 150.0) if CASES[arch][3] is KERAS_CAFFE else (-1.0, 1.0)  # the preprocessed range
    x = np.random.default_rng(0).uniform(low, high, (2, *model.input_shape[1:])).astype(np.float32)
    return arch, model, folder, x, reference(model, x, names)


@pytest.fixture(scope="module")
def archive(app):
    """The application's `.keras` file, loaded once: test_keras_archive compares it with Keras, the other
    files' tests compare their graphs and variables with it."""
    return load_keras(app[2] / "model.keras")


def activations(spec, x, names):
    """`spec`'s activations under jit (eager op-by-op dispatch is far slower for 300-layer graphs)."""
    names = tuple(names)
    return jit(lambda v, x: spec.module.apply(v, x, outputs=names))(spec.variables, jnp.asarray(x))


def parity(spec, x, want, label):
    got = activations(spec, x, want)
    errors = {name: relative_error(got[name], want[name]) for name in want}
    worst = max(errors, key=errors.get)
    print(f"\n{label}: worst {worst} {errors[worst]:.1e}; predictions {errors['predictions']:.1e}")
    assert errors[worst] < TOLERANCE, errors
    return errors


def test_graph_is_keras_graph(app):
    """Same layers, names, configs, connections and order as keras.applications builds."""
    arch, model, *_ = app
    kwargs = CASES[arch][1]
    want = graph_from_keras_config({"class_name": "Functional", "config": model.get_config()})
    got = APPLICATIONS[arch].graph(**kwargs)
    assert got.name == want.name
    assert [node.name for node in got.nodes] == [layer.name for layer in model.layers]
    for mine, theirs in zip(got.nodes, want.nodes):
        assert mine == theirs
    assert got.outputs == want.outputs


def test_keras_archive(app, archive):
    """A `.keras` of a Keras Application is recognized: the zoo's preprocessing and class names."""
    arch, model, folder, x, want = app
    spec = archive
    assert spec.preprocess == CASES[arch][3]
    assert spec.logits_layer == "predictions"
    classes = model.output_shape[-1]
    assert (spec.class_names is not None and len(spec.class_names) == 1000) == (classes == 1000)
    parity(spec, x, want, f"{arch} from .keras")


def test_weights_h5_onto_arch(app, archive):
    """`.weights.h5` (and `.keras`) onto the zoo architecture: identical variables, same graph, classes read
    from the file."""
    arch, model, folder, x, want = app
    kwargs = {k: v for k, v in CASES[arch][1].items() if k != "classes"}
    spec = load_model(arch, weights=folder / "model.weights.h5", **kwargs)
    reference_spec = archive
    assert spec.module.graph.nodes == reference_spec.module.graph.nodes
    assert spec.preprocess == CASES[arch][3] and spec.logits_layer == "predictions"
    leaves = jax.tree_util.tree_leaves_with_path(spec.variables)
    other = dict(jax.tree_util.tree_leaves_with_path(reference_spec.variables))
    assert len(leaves) == len(other) > 0
    for path, leaf in leaves:
        np.testing.assert_array_equal(leaf, other[path])
    # Same graph, same variables as the .keras file test_keras_archive compares with Keras: same outputs.
    # A full-model file onto the architecture gives the same variables too.
    from_archive = load_model(arch, weights=folder / "model.keras", **kwargs)
    for path, leaf in jax.tree_util.tree_leaves_with_path(from_archive.variables):
        np.testing.assert_array_equal(leaf, other[path])


def test_keras2_full_model_h5(app, archive):
    """A legacy Keras 2 full-model `.h5` of the application: the same graph and the very same variables
    as the `.keras` file whose activations `test_keras_archive` compares with Keras (so the same outputs)."""
    arch, model, folder, x, want = app
    spec = load_keras(folder / "model_keras2.h5")
    reference_spec = archive
    assert spec.module.graph.nodes == reference_spec.module.graph.nodes
    assert spec.preprocess == CASES[arch][3] and spec.logits_layer == "predictions"
    other = dict(jax.tree_util.tree_leaves_with_path(reference_spec.variables))
    leaves = jax.tree_util.tree_leaves_with_path(spec.variables)
    assert len(leaves) == len(other) > 0
    for path, leaf in leaves:
        np.testing.assert_array_equal(leaf, other[path])


def test_zoo_layer_names():
    expected = {"keras_vgg16": "block3_conv3", "keras_vgg19": "block5_pool", "keras_resnet50": "conv4_block2_out",
                "keras_inception_v3": "mixed5", "keras_mobilenet_v2": "block_13_expand_relu"}
    assert set(expected) <= set(model_names())
    for arch, layer in expected.items():
        graph = APPLICATIONS[arch].graph()
        assert layer in graph.layer_names and graph.layer_names[-1] == "predictions"


def test_random_init_without_weights():
    spec = load_model("keras_mobilenet_v2")
    assert "random init" in spec.source and spec.input_shape == (224, 224, 3)
    out = activations(spec, spec.preprocess(jnp.full((1, 96, 96, 3), 0.5)), ["block_13_expand_relu", "predictions"])
    assert out["block_13_expand_relu"].shape == (1, 6, 6, 576) and out["predictions"].shape == (1, 1000)
    assert np.isfinite(np.asarray(out["predictions"])).all()


# The last feature layer before each architecture's classifier.
FEATURES = {"keras_vgg16": "block5_pool", "keras_vgg19": "block5_pool", "keras_resnet50": "conv5_block3_out",
            "keras_inception_v3": "mixed10", "keras_mobilenet_v2": "out_relu"}


def test_notop_keras2_weights_file(app, tmp_path):
    """Keras 2 weights-only files without the classifier, like the DeepDream tutorial's
    `inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`: include_top is read from the file."""
    arch, model, _, x, want = app
    names = [layer.name for layer in model.layers]
    top = names[names.index(FEATURES[arch]) + 1:]
    path = write_keras2_weights_h5(model, tmp_path / f"{arch}_notop.h5", skip=top)
    spec = load_model(arch, weights=path)
    assert spec.logits_layer is None and spec.layer_names[-1] == FEATURES[arch]
    assert spec.input_shape == (APPLICATIONS[arch].default_size,) * 2 + (3,)  # any size runs; this is nominal
    feature = FEATURES[arch]
    assert relative_error(activations(spec, x, [feature])[feature], want[feature]) < TOLERANCE


def test_keras3_weights_matched_by_class_path(tmp_path):
    """A `.weights.h5` whose layer names differ (a model built after others in one session: `conv2d_94`...)
    still loads: Keras 3 itself addresses weights by class path (`layers/conv2d_1/vars`), not by name."""
    keras.backend.clear_session()
    with fast_init():
        model = A.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, include_top=False, pooling="avg")
    randomize(model, 9)
    path = tmp_path / "shifted.weights.h5"
    model.save_weights(path)
    with h5py.File(path, "a") as f:
        for group in f["layers"].values():
            if "vars" in group:
                group["vars"].attrs["name"] = "renamed_" + str(group["vars"].attrs.get("name", ""))
    spec = load_model("keras_mobilenet_v2", weights=path, input_shape=(96, 96, 3), alpha=0.35, pooling="avg")
    assert spec.layer_names[-1] == "global_average_pooling2d"
    x = np.random.default_rng(10).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    want = reference(model, x, ["block_5_project_BN", "global_average_pooling2d"])
    got = activations(spec, x, want)
    assert max(relative_error(got[k], want[k]) for k in want) < TOLERANCE

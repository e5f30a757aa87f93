"""Keras files into jaxvis: parity with Keras 3 (JAX backend) on every layer, every file format, bad files.

Models are built with Keras, given random weights, saved, loaded with `load_keras`, and every
requested layer is compared with Keras's own activations: max |diff| / max |ref| < 1e-4.
"""

import json
import zipfile

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

from jaxvis.convert.keras.file import read_keras_file
from jaxvis.errors import JaxvisError, WeightFileError
from jaxvis.models import activations
from jaxvis.models.graph.executor import GraphModule
from jaxvis.models.keras.graph import build_graph
from jaxvis.models.keras.load import load_keras
from jaxvis.models.keras.lower import lower
from jaxvis.models.keras.parse import LayerConfig
from jaxvis.models.keras.variables import random_variables
from jaxvis.models.spec import UNIT, Preprocess

L = keras.layers
TOLERANCE = 1e-4
# Keras 3.15 on NumPy 2 warns about an __array__ signature on every weight it converts.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def all_layers(model):
    return [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]


def parity(spec, model, x, names=None, want=None, extra=()):
    """Relative error per layer of `spec` against the Keras `model` (all layers by default), and `spec`'s
    activations.

    `want`: Keras's activations, if already computed (a superset of `names`). `extra`: more outputs of
    `spec` computed in the same program (for the caller's own checks).
    """
    names = list(names or all_layers(model))
    want = want if want is not None else reference(model, x, names)
    outputs = (*names, *extra)
    got = jit(lambda v, x: spec.module.apply(v, x, outputs=outputs))(spec.variables, jnp.asarray(x))
    assert sorted(got) == sorted(outputs)
    errors = {name: relative_error(got[name], want[name]) for name in names}
    worst = max(errors, key=errors.get)
    print(f"\n{spec.name}: worst {worst} {errors[worst]:.1e} over {len(names)} layers")
    assert errors[worst] < TOLERANCE, errors
    return errors, got


# ---------------------------------------------------------------------------------------------
# Models.


def cats_and_dogs():
    """Seed 004: Chollet's cats-vs-dogs convnet (Deep Learning with Python, 5.2), 150x150 RGB in [0, 1]."""
    return keras.Sequential([
        keras.Input((150, 150, 3)),
        L.Conv2D(32, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)),
        L.Conv2D(64, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)),
        L.Conv2D(128, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)),
        L.Conv2D(128, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)),
        L.Flatten(), L.Dropout(0.5), L.Dense(512, activation="relu"), L.Dense(1, activation="sigmoid"),
    ], name="cats_and_dogs")


def alexnet_bn(num_classes=5):
    """Seed 001: a functional Keras AlexNet (Conv2D 96 11x11 stride 4, BatchNormalization, MaxPooling, ...,
    Dense layers; auto names conv2d, batch_normalization, ...) at 96x96 to keep the test cheap, with
    the logits through a Softmax layer."""
    image = L.Input(shape=(96, 96, 3), dtype="float32")
    x = L.Conv2D(96, kernel_size=11, strides=4, activation="relu")(image)  # 22 x 22
    x = L.BatchNormalization()(x)
    x = L.MaxPool2D(pool_size=3, strides=2)(x)  # 10 x 10
    x = L.Conv2D(256, kernel_size=5, padding="same", activation="relu")(x)
    x = L.BatchNormalization()(x)
    x = L.MaxPool2D(pool_size=3, strides=2)(x)  # 4 x 4
    x = L.Conv2D(384, kernel_size=3, padding="same", activation="relu")(x)
    x = L.BatchNormalization()(x)
    x = L.Conv2D(384, kernel_size=3, padding="same", activation="relu")(x)
    x = L.BatchNormalization()(x)
    x = L.Conv2D(256, kernel_size=3, padding="same", activation="relu")(x)
    x = L.BatchNormalization()(x)
    x = L.MaxPool2D(pool_size=3, strides=2)(x)  # 1 x 1
    x = L.Flatten()(x)
    x = L.Dense(1024, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    x = L.Dense(1024, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    x = L.Dense(num_classes)(x)
    return keras.Model(inputs=image, outputs=L.Softmax()(x), name="alexnet")


def mixed_layers():
    """Depthwise / separable / dilated / grouped convs, BatchNorm variants, merges, odd 'same' paddings."""
    image = L.Input((40, 40, 3), name="image")
    x = L.Rescaling(1 / 127.5, offset=-1, name="rescale")(image)
    x = L.ZeroPadding2D(((1, 2), (0, 1)), name="pad")(x)  # 43 x 41: asymmetric 'same' padding below
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(epsilon=1e-3, name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    a = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    a = L.BatchNormalization(center=False, name="dw_bn")(a)
    a = L.Activation("relu6", name="dw_relu6")(a)
    b = L.SeparableConv2D(16, 3, padding="same", dilation_rate=2, name="sep")(x)
    b = L.BatchNormalization(scale=False, epsilon=1.001e-5, name="sep_bn")(b)
    b = L.LeakyReLU(negative_slope=0.1, name="leaky")(b)
    x = L.Add(name="add")([a, b])
    c = L.Conv2D(8, 3, dilation_rate=2, padding="same", activation="swish", name="dilated")(x)
    d = L.Conv2D(8, 1, activation="tanh", name="pointwise")(x)
    e = L.Conv2D(8, 3, groups=2, padding="same", activation="sigmoid", name="grouped")(x)
    f = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw_strided")(x)  # 22 x 21 -> 11 x 11
    f = L.UpSampling2D(name="up")(f)  # 22 x 22
    f = L.Cropping2D(((0, 0), (0, 1)), name="crop")(f)  # 22 x 21
    x = L.Concatenate(name="cat")([c, d, e, L.Multiply(name="mul")([f, f])])
    x = L.AveragePooling2D(3, strides=2, padding="same", name="avg_same")(x)
    x = L.MaxPooling2D(3, strides=2, padding="same", name="max_same")(x)
    x = L.AveragePooling2D(2, name="avg_valid")(x)
    x = L.ReLU(max_value=4.0, negative_slope=0.1, threshold=0.05, name="relu_odd")(x)
    x = L.Activation("relu", name="act_relu")(x)
    pooled = L.Concatenate(name="pooled")(
        [L.GlobalMaxPooling2D(name="gmp")(x), L.GlobalAveragePooling2D(name="gap")(x)]
    )
    x = L.Reshape((1, 1, pooled.shape[-1]), name="reshape")(pooled)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(10, name="logits")(x)
    return keras.Model(image, L.Softmax(name="probs")(x), name="mixed_layers")


def _build(fn, seed=0):
    keras.backend.clear_session()
    with fast_init():
        model = fn()
    return randomize(model, seed)


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    model = _build(cats_and_dogs)
    folder = tmp_path_factory.mktemp("cats")
    model.save(folder / "cats_and_dogs_small_2.h5")  # Keras 3's legacy writer (Keras 3 config inside)
    model.save(folder / "cats.keras")
    write_keras2_model_h5(model, folder / "cats_keras2.h5", sequential_list=True)
    write_keras2_model_h5(model, folder / "cats_keras24.h5")
    x = np.random.default_rng(1).uniform(0, 1, (2, 150, 150, 3)).astype(np.float32)
    return model, folder, x, reference(model, x, all_layers(model))


@pytest.fixture(scope="module")
def alexnet(tmp_path_factory):
    model = _build(alexnet_bn)
    folder = tmp_path_factory.mktemp("alexnet")
    model.save(folder / "myAlex.keras")
    write_keras2_model_h5(model, folder / "myAlex.h5")
    x = np.random.default_rng(2).standard_normal((2, 96, 96, 3)).astype(np.float32)
    return model, folder, x, reference(model, x, all_layers(model))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    model = _build(mixed_layers)
    folder = tmp_path_factory.mktemp("mixed")
    model.save(folder / "mixed.keras")
    model.save(folder / "mixed.h5")
    write_keras2_model_h5(model, folder / "mixed_keras2.h5")
    x = np.random.default_rng(3).uniform(0, 255, (2, 40, 40, 3)).astype(np.float32)
    return model, folder, x, reference(model, x, all_layers(model))


# ---------------------------------------------------------------------------------------------
# Parity.


@pytest.mark.parametrize("file", ["cats_and_dogs_small_2.h5", "cats.keras", "cats_keras2.h5", "cats_keras24.h5"])
def test_cats_and_dogs_sequential(cats, file):
    model, folder, x, want = cats
    spec = load_keras(folder / file)
    names = [layer.name for layer in model.layers]
    assert spec.layer_names == tuple(names)
    assert names[:2] == ["conv2d", "max_pooling2d"]
    assert spec.input_shape == (150, 150, 3) and spec.preprocess == UNIT
    assert spec.logits_layer is None  # one sigmoid unit: not class logits
    assert spec.channel_count("conv2d_3") == 128
    parity(spec, model, x, want=want)


@pytest.mark.parametrize("file", ["myAlex.keras", "myAlex.h5"])
def test_alexnet_functional(alexnet, file):
    model, folder, x, want = alexnet
    spec = load_keras(folder / file)
    assert spec.layer_names[:3] == ("conv2d", "batch_normalization", "max_pooling2d")
    assert {"conv2d_4", "batch_normalization_4", "dense_2", "softmax"} <= set(spec.layer_names)
    errors, got = parity(spec, model, x, list(spec.layer_names), want, extra=("softmax/pre_softmax",))
    assert errors["dense_2"] < TOLERANCE and errors["softmax"] < TOLERANCE  # the probabilities, as Keras gives them
    # The Softmax layer's pre-softmax value is the logits: what the class scores are.
    assert (
        spec.logits_layer == "softmax"
        and spec.softmax_layers == ("softmax",)
        and spec.scored("softmax") == "softmax/pre_softmax"
    )
    np.testing.assert_array_equal(got["softmax/pre_softmax"], got["dense_2"])


@pytest.mark.parametrize("file", ["mixed.keras", "mixed.h5", "mixed_keras2.h5"])
def test_mixed_layers(mixed, file):
    model, folder, x, want = mixed
    spec = load_keras(folder / file)
    assert spec.preprocess == Preprocess(scale=255.0)  # the model rescales raw pixels itself
    # probs: the probabilities, as Keras gives them; probs/pre_softmax: before its softmax
    _, got = parity(spec, model, x, list(spec.layer_names), want, extra=("probs/pre_softmax",))
    assert relative_error(got["probs/pre_softmax"], want["logits"]) < TOLERANCE  # probs before its softmax
    assert spec.logits_layer == "probs"


def test_weights_keep_keras_names_and_layouts(mixed):
    model, folder, _, _ = mixed
    spec = load_keras(folder / "mixed.keras")
    params = spec.variables["params"]
    assert sorted(params["sep"]) == ["bias", "depthwise_kernel", "pointwise_kernel"]
    assert sorted(params["dw_bn"]) == ["gamma", "moving_mean", "moving_variance"]  # center=False: no beta
    for layer in model.layers:
        for weight in layer.weights:
            got = params[layer.name][weight.path.rsplit("/", 1)[-1]]
            np.testing.assert_array_equal(np.asarray(got), np.asarray(weight))


def test_computes_only_what_is_asked(cats):
    model, folder, x, _ = cats
    spec = load_keras(folder / "cats.keras")
    only_first = {"params": {"conv2d": spec.variables["params"]["conv2d"]}}  # later layers' weights absent
    out = spec.module.apply(only_first, jnp.asarray(x), outputs=("max_pooling2d",))
    assert list(out) == ["max_pooling2d"] and out["max_pooling2d"].shape == (2, 74, 74, 32)
    with pytest.raises(JaxvisError, match="unknown layer .*'conv9'"):
        spec.module.apply(spec.variables, jnp.asarray(x), outputs=("conv9",))


# ---------------------------------------------------------------------------------------------
# Every ReLU goes through jaxvis.models.activations (relu_redirect reaches it).


@pytest.mark.parametrize("relu_layer", [
    LayerConfig("Conv2D", "c", {"filters": 2, "kernel_size": 1, "activation": "relu"}, ("x",)),
    LayerConfig("ReLU", "c", {}, ("x",)),
    LayerConfig("Activation", "c", {"activation": "relu6"}, ("x",)),
    LayerConfig("ReLU", "c", {"max_value": 6.0}, ("x",)),
    LayerConfig("ReLU", "c", {"max_value": 3.0}, ("x",)),
])
def test_relu_redirect_reaches_every_relu(relu_layer):
    layers = [LayerConfig("InputLayer", "x", {"batch_shape": [None, 4, 4, 2]}), relu_layer]
    graph = build_graph(layers)
    module = GraphModule(lower(graph))
    variables = random_variables(graph)
    if relu_layer.class_name == "Conv2D":  # an identity conv, so a negative input is a dead unit
        variables = {"params": {"c": {"kernel": jnp.eye(2).reshape(1, 1, 2, 2), "bias": jnp.zeros(2)}}}
    x = -jnp.ones((1, 4, 4, 2))

    def loss(x, mode):
        return -module.apply(variables, x, outputs=("c",), relu_redirect=mode)["c"].sum()

    assert float(jnp.abs(jax.grad(loss)(x, activations.TRUE)).max()) == 0.0  # dead: no true gradient
    assert float(jnp.abs(jax.grad(loss)(x, activations.REDIRECT)).max()) > 0.0  # redirected


# ---------------------------------------------------------------------------------------------
# Weights-only Keras 2 files onto a zoo architecture.


@pytest.fixture(scope="module")
def small_vgg16(tmp_path_factory):
    keras.backend.clear_session()
    with fast_init():
        model = keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=7)
    randomize(model, 4)
    return model, tmp_path_factory.mktemp("vgg16")


def test_keras2_weights_only_onto_arch(small_vgg16):
    """The `vgg16_weights_tf_dim_ordering_tf_kernels.h5` layout: layer groups at the root, old weight names."""
    model, folder = small_vgg16
    path = write_keras2_weights_h5(model, folder / "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                                   weight_name=lambda layer, leaf: f"{layer}_{'W' if leaf == 'kernel' else 'b'}_1:0")
    assert read_keras_file(path).kind == "legacy-weights"
    spec = load_keras(path, arch="keras_vgg16", input_shape=(32, 32, 3))
    assert spec.class_names is None and spec.logits_layer == "predictions"  # 7 classes, read from the file
    x = np.random.default_rng(5).standard_normal((2, 32, 32, 3)).astype(np.float32) * 50
    parity(spec, model, x, ["block1_conv1", "block3_conv3", "block5_pool", "fc2", "predictions"])


def test_keras2_weights_by_position_when_names_differ(small_vgg16):
    """Keras's own `load_weights` matches layers by position: so does jaxvis when the names differ."""
    model, folder = small_vgg16
    renamed = [f"layer_{i}" for i in range(len(model.layers))]
    path = write_keras2_weights_h5(model, folder / "renamed.h5", layer_names=renamed)
    spec = load_keras(path, arch="keras_vgg16", input_shape=(32, 32, 3))
    np.testing.assert_array_equal(spec.variables["params"]["fc1"]["kernel"], model.get_layer("fc1").kernel)


# ---------------------------------------------------------------------------------------------
# Bad input: each a one-line error that names the problem.


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_missing_file(tmp_path):
    with pytest.raises(WeightFileError, match="no such Keras file"):
        load_keras(tmp_path / "nothing.h5")


@pytest.mark.parametrize("file", ["cats_and_dogs_small_2.h5", "cats.keras"])
@pytest.mark.parametrize("fraction", [0.5, 0.02])
def test_truncated_file(cats, tmp_path, file, fraction):
    folder = cats[1]
    data = (folder / file).read_bytes()
    path = tmp_path / file
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(WeightFileError) as err:
        load_keras(path)
    assert str(path) in _one_line(err)


@pytest.mark.parametrize("content", [b"just some text\n", b"\x80\x02}q\x00." + bytes(100)])
def test_foreign_file(tmp_path, content):
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    with pytest.raises(WeightFileError, match="not a Keras file") as err:
        load_keras(path)
    _one_line(err)


def test_foreign_zip_and_hdf5(tmp_path):
    archive = tmp_path / "model.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", b"not keras")
    with pytest.raises(WeightFileError, match="not a Keras .keras archive"):
        load_keras(archive)
    other = tmp_path / "data.h5"
    with h5py.File(other, "w") as f:
        f["images"] = np.zeros((2, 3))
    with pytest.raises(WeightFileError, match="not a Keras one"):
        load_keras(other)


def test_weights_only_file_needs_arch(small_vgg16):
    model, folder = small_vgg16
    path = folder / "w.weights.h5"
    model.save_weights(path)
    with pytest.raises(WeightFileError, match="weights only.*arch=.*keras_vgg16"):
        load_keras(path)


def test_unknown_arch(cats):
    folder = cats[1]
    with pytest.raises(JaxvisError, match="unknown Keras architecture 'vgg16'; valid: keras_vgg16"):
        load_keras(folder / "cats.keras", arch="vgg16")


def test_wrong_arch_for_file(cats):
    folder = cats[1]
    with pytest.raises(WeightFileError, match="do not fit model") as err:
        load_keras(folder / "cats.keras", arch="keras_resnet50")
    _one_line(err)


def test_shape_mismatch_names_key_and_both_shapes(cats, tmp_path):
    folder = cats[1]
    path = tmp_path / "edited.h5"
    path.write_bytes((folder / "cats_and_dogs_small_2.h5").read_bytes())
    with h5py.File(path, "a") as f:
        group = f["model_weights/conv2d_1"]
        name = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]][0]
        del group[name]
        group[name] = np.zeros((3, 3, 32, 65), np.float32)
    with pytest.raises(WeightFileError) as err:
        load_keras(path)
    text = _one_line(err)
    assert "params/conv2d_1/kernel" in text and "(3, 3, 32, 65)" in text and "(3, 3, 32, 64)" in text


def test_unsupported_layer_names_class_and_layer(tmp_path):
    keras.backend.clear_session()
    inputs = L.Input((8, 8, 3))
    x = L.Reshape((8, 24), name="rows")(inputs)
    x = L.LSTM(4, name="my_lstm", kernel_initializer="zeros", recurrent_initializer="zeros")(x)  # no QR compile
    keras.Model(inputs, x).save(tmp_path / "lstm.keras")
    with pytest.raises(JaxvisError, match="unsupported Keras layer 'my_lstm' of class LSTM") as err:
        load_keras(tmp_path / "lstm.keras")
    _one_line(err)


def test_lambda_layer_is_refused_not_run(tmp_path):
    keras.backend.clear_session()
    inputs = L.Input((8, 8, 3))
    x = L.Lambda(lambda t: t * 2, name="double")(inputs)
    with fast_init():
        keras.Model(inputs, L.Conv2D(2, 3)(x)).save(tmp_path / "lambda.keras")
    with pytest.raises(JaxvisError, match="'double' is a Lambda.*never executes code") as err:
        load_keras(tmp_path / "lambda.keras")
    _one_line(err)


def test_nested_model_is_flattened(tmp_path):
    """(Parity of nested models: test_keras_nested.py.)"""
    keras.backend.clear_session()
    with fast_init():
        inner = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(2, 3)], name="base")
        outer = keras.Sequential([keras.Input((8, 8, 3)), inner, L.Flatten(), L.Dense(1)])
    outer.save(tmp_path / "nested.keras")
    names = load_keras(tmp_path / "nested.keras").layer_names
    assert names == ("base/input_layer", "base/conv2d", "base", "flatten", "dense"), names


def test_archive_config_is_read_not_executed(cats, tmp_path):
    """A .keras config naming an unknown class is refused by name; nothing is imported for it."""
    folder = cats[1]
    path = tmp_path / "evil.keras"
    with zipfile.ZipFile(folder / "cats.keras") as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["layers"][1].update(class_name="Evil", module="os", registered_name="os>system")
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(JaxvisError, match="unsupported Keras layer 'conv2d' of class Evil"):
        load_keras(path)


def test_graph_validation_errors():
    with pytest.raises(JaxvisError, match="2 inputs"):
        build_graph([LayerConfig("InputLayer", "a", {"batch_shape": [None, 4, 4, 3]}),
                     LayerConfig("InputLayer", "b", {"batch_shape": [None, 4, 4, 3]})])
    with pytest.raises(JaxvisError, match="unknown layer"):
        build_graph([LayerConfig("InputLayer", "a", {"batch_shape": [None, 4, 4, 3]}),
                     LayerConfig("ReLU", "r", {}, ("nope",))])
    with pytest.raises(JaxvisError, match="'p'.*padding 'causal'"):
        build_graph([LayerConfig("InputLayer", "a", {"batch_shape": [None, 4, 4, 3]}),
                     LayerConfig("Conv2D", "p", {"filters": 1, "kernel_size": 3, "padding": "causal"}, ("a",))])
    with pytest.raises(JaxvisError, match="channels_first"):
        build_graph([LayerConfig("InputLayer", "a", {"batch_shape": [None, 3, 4, 4]}),
                     LayerConfig("Conv2D", "p", {"filters": 1, "kernel_size": 3, "data_format": "channels_first"},
                                 ("a",))])

"""Keras layers beyond the basics (a Keras CNN tutorial's preprocessing and augmentation layers, the
normalization layers, Conv2DTranspose, PReLU, Permute, Keras 3 operation nodes): every layer of
Keras-built models, saved as `.keras` and `.h5`, matches Keras 3 (JAX backend, inference) to 1e-4.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import jit
from keras_reference import fast_init, keras, randomize, reference, relative_error

from jaxvis.errors import JaxvisError
from jaxvis.models import load_model
from jaxvis.models.keras.parse import LayerConfig, parse_layer

L = keras.layers
TOLERANCE = 1e-4
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
              pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")]


def tutorial_model(brightness=True):
    """Keras's "image classification from scratch" front (augmentation, Rescaling) and every layer family.

    (Keras 3.15 cannot write a RandomBrightness layer to a legacy `.h5`: `brightness=False` leaves it out.)
    """
    image = L.Input((36, 44, 3), name="image")
    x = L.RandomFlip("horizontal", name="flip")(image)
    x = L.RandomRotation(0.1, name="rotate")(x)
    x = L.RandomZoom(0.2, name="zoom")(x)
    x = L.RandomTranslation(0.1, 0.1, name="translate")(x)
    x = L.RandomContrast(0.2, name="contrast")(x)
    if brightness:
        x = L.RandomBrightness(0.2, name="brightness")(x)
    x = L.Rescaling(1 / 255.0, name="rescale")(x)
    x = L.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.04, 0.09, 0.01], name="norm_config")(x)
    x = L.Normalization(axis=-1, name="norm_adapted")(x)  # mean / variance stored as weights
    x = L.Normalization(mean=0.1, variance=4.0, invert=True, name="norm_invert")(x)
    r1 = L.Resizing(30, 30, name="resize_bilinear")(x)
    r2 = L.Resizing(30, 30, interpolation="nearest", crop_to_aspect_ratio=True, name="resize_crop")(x)
    r3 = L.Resizing(30, 30, interpolation="bicubic", pad_to_aspect_ratio=True, fill_value=0.5, name="resize_pad")(x)
    r4 = L.Resizing(30, 30, interpolation="lanczos3", antialias=True, name="resize_lanczos")(x)
    r5 = L.CenterCrop(40, 30, name="center_crop_up")(x)  # taller than the input: Keras's smart_resize
    r5 = L.Resizing(30, 30, name="resize_back")(r5)
    x = L.Concatenate(name="cat")([r1, r2, r3, r4, r5])
    x = L.CenterCrop(28, 26, name="center_crop")(x)
    x = L.Conv2D(16, 3, padding="same", name="conv")(x)
    a = L.LayerNormalization(name="ln")(x)
    b = L.LayerNormalization(axis=[1, 2, 3], epsilon=1e-5, center=False, name="ln_all")(x)
    c = L.LayerNormalization(rms_scaling=True, name="ln_rms")(x)
    d = L.GroupNormalization(groups=4, name="gn")(x)
    e = L.GroupNormalization(groups=16, scale=False, epsilon=1e-5, name="gn_instance")(x)
    f = L.UnitNormalization(name="unit")(x)
    g = L.UnitNormalization(axis=[1, 2], name="unit_spatial")(x)
    h = L.RMSNormalization(name="rms")(x)
    x = L.Add(name="sum")([a, b, c, d, e, f, g, h])
    x = L.PReLU(shared_axes=[1, 2], name="prelu_shared")(x)
    x = L.PReLU(name="prelu")(x)
    t1 = L.Conv2DTranspose(8, 3, strides=2, padding="same", name="up_same")(x)  # 56 x 52
    t2 = L.Conv2DTranspose(8, 4, strides=2, padding="valid", output_padding=1, name="up_valid")(x)
    t3 = L.Conv2DTranspose(8, 3, padding="same", dilation_rate=2, use_bias=False, activation="relu",
                           name="up_dilated")(x)
    t4 = L.Conv2DTranspose(8, (3, 2), strides=(2, 3), padding="same", output_padding=(0, 1), name="up_odd")(x)
    t1 = L.RandomCrop(50, 48, name="random_crop")(t1)  # the identity at inference in Keras 3
    pooled = [L.GlobalAveragePooling2D(name=f"gap{i}")(t) for i, t in enumerate((t1, t2, t3, t4))]
    p = L.Permute((2, 1, 3), name="permute")(x)
    pooled.append(L.GlobalMaxPooling2D(name="gmp")(p))
    x = L.Concatenate(name="features")(pooled)
    x = L.Dense(5, activation="softmax", name="probs")(x)
    return keras.Model(image, x, name="tutorial")


def operations_model():
    """Keras 3 operation nodes with constants (MobileNetV3's hard-swish is `x * relu6(x + 3) * (1/6)`)."""
    image = L.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv")(image)
    h = L.ReLU(6.0, name="relu6")(x + 3.0)
    x = L.Multiply(name="hswish")([x, h * (1.0 / 6.0)])
    y = 2.0 - x
    y = y / 4.0
    y = keras.ops.maximum(y, 0.25)
    y = keras.ops.sqrt(keras.ops.abs(y))
    z = keras.ops.relu(x) * y
    z = keras.ops.hard_sigmoid(z)
    z = z ** 2
    z = L.Activation("hard_silu", name="act_hard_silu")(z)
    return keras.Model(image, L.Conv2D(4, 1, name="head")(z), name="operations")


def pooling_model():
    """The 1D pooling and convolution layers on a feature map reshaped to a sequence, beside the 2D ones."""
    image = L.Input((12, 10, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv")(image)
    x = L.AveragePooling2D(3, strides=2, padding="same", name="avg2d")(x)  # 6 x 5
    seq = L.Reshape((30, 8), name="to_seq")(x)
    seq = L.Conv1D(8, 3, strides=2, padding="same", activation="relu", name="conv1d_same")(seq)  # 15
    seq = L.Conv1D(8, 3, dilation_rate=2, padding="causal", groups=2, name="conv1d_causal")(seq)
    seq = L.Conv1D(8, 2, use_bias=False, name="conv1d_valid")(seq)  # 14
    a = L.MaxPooling1D(3, strides=2, padding="same", name="max1d")(seq)  # 7
    a = L.AveragePooling1D(2, padding="same", name="avg1d_same")(a)  # 4
    b = L.AveragePooling1D(4, strides=3, name="avg1d")(seq)  # 4
    c = L.MaxPool1D(5, name="max1d_valid")(seq)  # 2
    pooled = [L.GlobalAveragePooling1D(name="gap1d")(a), L.GlobalMaxPooling1D(name="gmp1d")(b),
              L.Flatten(name="flat")(L.GlobalAveragePooling1D(keepdims=True, name="gap1d_keep")(c)),
              L.GlobalMaxPooling2D(name="gmp2d")(x)]
    return keras.Model(image, L.Concatenate(name="cat")(pooled), name="pooling")


def _build(fn, seed):
    keras.backend.clear_session()
    with fast_init():
        model = fn()
    randomize(model, seed)
    for layer in model.layers:
        if type(layer).__name__ == "Normalization" and layer.weights:
            layer.set_weights([np.array([0.1, -0.2, 0.3], np.float32), np.array([0.5, 2.0, 1.5], np.float32),
                               np.array(10, np.int64)])
            layer.finalize_state()  # what adapt() does: the layer computes with the new statistics
    return model


def _check(model, tmp_path, x, files=("model.keras", "model.h5"), want=None):
    """Every layer of `model`, loaded from each file, against Keras (`want`: Keras's activations if already
    computed, of a superset of this model's layers)."""
    names = [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]
    want = want if want is not None else reference(model, x, names)
    outputs = tuple(key for key in want if key.split("/")[0] in names)  # and `<softmax layer>/pre_softmax`
    assert set(names) <= set(outputs)
    for file in files:
        model.save(tmp_path / file)
        spec = load_model(tmp_path / file)
        got = jit(lambda v, x, module=spec.module, outputs=outputs: module.apply(v, x, outputs=outputs))(
            spec.variables, jnp.asarray(x))
        errors = {name: relative_error(got[name], want[name]) for name in outputs}
        worst = max(errors, key=errors.get)
        assert errors[worst] < TOLERANCE, (file, worst, errors)
    return spec


@pytest.fixture(scope="module")
def tutorial():
    """The tutorial model and Keras's activations of all its layers, computed once for both files."""
    model = _build(lambda: tutorial_model(brightness=True), seed=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 36, 44, 3)).astype(np.float32)
    return model, x, reference(model, x, [layer.name for layer in model.layers[1:]])


@pytest.mark.parametrize("file", ["model.keras", "model.h5"])
def test_tutorial_layers(tutorial, tmp_path, file):
    model, x, want = tutorial
    if file.endswith(".h5"):
        # The `.h5` model leaves out RandomBrightness, the identity at inference: with the same weights, every
        # other layer's activation is the full model's, so Keras's activations of the full model are its reference.
        twin = _build(lambda: tutorial_model(brightness=False), seed=3)
        assert [layer.name for layer in twin.layers] == [
            layer.name for layer in model.layers if layer.name != "brightness"]
        for layer in twin.layers:
            for mine, theirs in zip(layer.weights, model.get_layer(layer.name).weights, strict=True):
                np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
        model = twin
    spec = _check(model, tmp_path, x, files=(file,), want=want)
    assert spec.softmax_layers == ("probs",) and spec.scored("probs") == "probs/pre_softmax"


def test_operation_nodes(tmp_path):
    model = _build(operations_model, seed=4)
    x = np.random.default_rng(1).standard_normal((2, 16, 16, 3)).astype(np.float32)
    _check(model, tmp_path, x)


def test_pooling_variants(tmp_path):
    model = _build(pooling_model, seed=5)
    x = np.random.default_rng(2).standard_normal((2, 12, 10, 3)).astype(np.float32)
    _check(model, tmp_path, x)


@pytest.mark.parametrize("layer, words", [
    (LayerConfig("Resizing", "r", {"height": 4, "width": 4, "interpolation": "area"}), ["'r'", "Resizing", "area"]),
    (LayerConfig("Resizing", "r", {"height": 4, "width": 4, "fill_mode": "reflect"}), ["'r'", "fill_mode"]),
    (LayerConfig("Conv2DTranspose", "t", {"filters": 2, "kernel_size": 3, "padding": "causal"}), ["'t'", "causal"]),
    (LayerConfig("Cumsum", "c", {}, ("x",), "keras.src.ops.numpy", (None,)), ["'c'", "Cumsum", "supported operations"]),
    (LayerConfig("Add", "a", {}, ("x",), "keras.src.ops.numpy", (None, "three")), ["'a'", "Add"]),
    (LayerConfig("Lambda", "l", {"function": "x"}, ("x",)), ["'l'", "Lambda", "never executes"]),
])
def test_unsupported_attributes_are_one_line_errors(layer, words):
    with pytest.raises(JaxvisError) as err:
        parse_layer(layer)
    message = str(err.value)
    assert "\n" not in message and all(word in message for word in words), message

"""Converted `.jaxvis` files: save then load gives the same model (identical activations), faster than
its source, and a damaged file is one clear error."""

import dataclasses
import time
from pathlib import Path

import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.convert.jaxvis_file import read_metadata
from jaxvis.errors import JaxvisError, WeightFileError
from jaxvis.models import load_model
from jaxvis.models.converted import load_converted, save_converted
from jaxvis.models.keras.load import load_keras

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def assert_same_model(spec, loaded, layers, size=None):
    assert loaded.name == spec.name and loaded.layer_names == spec.layer_names
    assert loaded.input_shape == spec.input_shape and loaded.preprocess == spec.preprocess
    assert loaded.logits_layer == spec.logits_layer and loaded.class_names == spec.class_names
    assert type(loaded.module) is type(spec.module)
    want = dict(jax.tree_util.tree_leaves_with_path(spec.variables))
    got = dict(jax.tree_util.tree_leaves_with_path(loaded.variables))
    assert want.keys() == got.keys()
    for key, leaf in want.items():
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(leaf))
    h, w = size or spec.input_shape[:2]
    images = np.random.default_rng(0).random((2, h, w, spec.channels), np.float32)
    a = fast_compile.activations(spec, images, layers)
    b = fast_compile.activations(loaded, images, layers)
    for layer in layers:
        np.testing.assert_array_equal(np.asarray(a[layer]), np.asarray(b[layer]))


def test_tiny_cnn_round_trip(tmp_path):
    spec = load_model("tiny_cnn")
    path = save_converted(spec, tmp_path / "tiny.jaxvis")
    meta = read_metadata(path)
    assert meta["recipe"] == {"zoo": "tiny_cnn", "options": {"channels": 3, "seed": 0, "size": 32}}
    assert meta["version"] == 3
    assert meta["module"] == {"entry": "tiny_cnn", "fields": {"widths": [8, 16, 16], "classes": 10}}
    assert_same_model(spec, load_converted(path), ["conv1", "conv3", "logits"])


@pytest.mark.parametrize("name, size", [("tiny_cnn_v2.jaxvis", 32), ("keras_small_v2.jaxvis", 16)])
def test_version_2_files_still_load(name, size):
    """Files written before models were named by zoo entry (they name Python classes) load as they did."""
    folder = Path(__file__).parents[1] / "data" / "jaxvis_v2"
    assert read_metadata(folder / name)["version"] == 2
    spec = load_converted(folder / name)
    expected = np.load(folder / "expected_v2.npz")
    x = np.random.default_rng(0).random((2, size, size, 3)).astype(np.float32)
    layers = [key.split("::")[1] for key in expected.files if key.startswith(name)]
    assert layers
    acts = fast_compile.activations(spec, x, layers)
    for layer in layers:
        np.testing.assert_allclose(np.asarray(acts[layer]), expected[f"{name}::{layer}"], rtol=1e-5, atol=1e-6)


def test_version_3_keras_file_from_its_former_module_still_loads():
    """A Keras model saved when Keras graphs had their own module loads onto the graph executor, same values."""
    folder = Path(__file__).parents[1] / "data" / "jaxvis_v3"
    name = "keras_small_v3.jaxvis"
    assert read_metadata(folder / name)["module"]["graph"] == "keras"
    spec = load_converted(folder / name)
    assert spec.softmax_layers == ("out",) and spec.logits_layer == "out"
    expected = np.load(folder / "expected_v3.npz")
    x = np.random.default_rng(0).random((2, 20, 20, 3)).astype(np.float32)
    layers = [key.split("::")[1] for key in expected.files]
    acts = fast_compile.jit(lambda v, x: spec.module.apply(v, x, outputs=tuple(layers)))(
        spec.variables, jnp.asarray(x))
    for layer in layers:
        np.testing.assert_allclose(np.asarray(acts[layer]), expected[f"{name}::{layer}"], rtol=1e-5, atol=1e-6)


def test_mobilenet_v2_real_weights(mobilenet_checkpoint, tmp_path):
    start = time.perf_counter()
    spec = load_model("mobilenet_v2", weights=mobilenet_checkpoint)
    source_seconds = time.perf_counter() - start
    path = save_converted(spec, tmp_path / "mobilenet.jaxvis")
    start = time.perf_counter()
    loaded = load_converted(path)
    converted_seconds = time.perf_counter() - start
    print(f"\nmobilenet_v2: source .pth {source_seconds:.2f} s, converted .jaxvis {converted_seconds:.2f} s")
    assert read_metadata(path)["class_names"] == "imagenet"
    assert mobilenet_checkpoint in loaded.source
    assert_same_model(spec, loaded, ["features.3", "features.10", "classifier.1"], size=(96, 96))


def test_keras_sequential_round_trip(tmp_path):
    from keras_reference import fast_init, keras, randomize

    L = keras.layers
    keras.backend.clear_session()
    with fast_init():
        model = keras.Sequential([
            keras.Input((24, 24, 3)), L.Rescaling(1 / 255.0), L.Conv2D(8, 3, activation="relu"),
            L.BatchNormalization(), L.MaxPooling2D(), L.Flatten(), L.Dense(4, activation="softmax")], name="small")
    randomize(model, 3)
    model.save(tmp_path / "small.keras")
    spec = load_keras(tmp_path / "small.keras")
    path = save_converted(spec, tmp_path / "small.jaxvis")
    assert read_metadata(path)["recipe"]["keras_config"]["class_name"] == "Sequential"
    loaded = load_converted(path)
    assert loaded.module.graph == spec.module.graph
    assert_same_model(spec, loaded, list(spec.layer_names))


def test_keras_application_round_trip(tmp_path):
    spec = load_model("keras_vgg16", input_shape=(32, 32, 3), classes=5, seed=2)
    path = save_converted(spec, tmp_path / "vgg.jaxvis")
    loaded = load_converted(path)
    assert loaded.module.graph == spec.module.graph
    assert_same_model(spec, loaded, ["block2_conv2", "block5_pool", "predictions"])


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_corrupt_files(tmp_path):
    spec = load_model("tiny_cnn")
    good = save_converted(spec, tmp_path / "tiny.jaxvis")
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.jaxvis"
    truncated.write_bytes(data[:len(data) - 100])
    with pytest.raises(WeightFileError, match="truncated") as err:
        load_converted(truncated)
    assert str(truncated) in _one_line(err)
    header = tmp_path / "header.jaxvis"
    header.write_bytes(data[:8] + b"#" + data[9:])
    with pytest.raises(WeightFileError, match="corrupt") as err:
        load_converted(header)
    _one_line(err)
    text = tmp_path / "text.jaxvis"
    text.write_bytes(b"hello world, not a model\n")
    with pytest.raises(WeightFileError, match="not a converted jaxvis model") as err:
        load_converted(text)
    _one_line(err)
    with pytest.raises(WeightFileError, match="no such"):
        load_converted(tmp_path / "missing.jaxvis")


def test_foreign_module_class_and_wrong_shapes_are_refused(tmp_path):
    import json

    from safetensors.numpy import save_file

    spec = load_model("tiny_cnn")
    path = save_converted(spec, tmp_path / "tiny.jaxvis")
    meta = read_metadata(path)
    tensors = {"params/conv1/kernel": np.zeros((3, 3, 3, 9), np.float32)}
    entries = [
        ("os", {"version": 2, "module": {"class": "os:system"}}),
        ("os3", {"module": {"entry": "os", "fields": {}}}),
        ("ok", {"version": 2, "module": {"class": "jaxvis.models.tiny:TinyCNN", "fields": meta["module"]["fields"]}}),
        ("ok3", {}),
    ]
    for name, changes in entries:
        edited = dict(meta, **changes)
        out = tmp_path / f"{name}.jaxvis"
        save_file(tensors, str(out), metadata={"jaxvis": json.dumps(edited)})
        with pytest.raises(WeightFileError) as err:
            load_converted(out)
        text = _one_line(err)
        if name == "os":
            assert "only builds its own" in text
        elif name == "os3":
            assert "needs zoo model 'os'" in text
        else:
            assert "params/conv1/kernel" in text and "(3, 3, 3, 9)" in text and "(3, 3, 3, 8)" in text


def test_unsaveable_module_is_a_clear_error(tmp_path):

    spec = load_model("tiny_cnn")
    odd = dataclasses.replace(spec, recipe={"zoo": "tiny_cnn", "options": {"fn": print}})
    with pytest.raises(JaxvisError, match="not plain data"):
        save_converted(odd, tmp_path / "odd.jaxvis")
    assert not (tmp_path / "odd.jaxvis").exists()

"""`jaxvis weights` reports a model file's tensors as the file stores them; the converted view is
behind --converted and says so."""

import json

import numpy as np
import torch
from mobilenet_cache import mobilenet

from jaxvis.cli import main
from jaxvis.recipes.weights import parameter_tensors, stored_tensors


def test_a_zoo_model_reports_its_checkpoint_as_stored(mobilenet_checkpoint):
    stored = stored_tensors(mobilenet(mobilenet_checkpoint))
    raw = torch.load(mobilenet_checkpoint, weights_only=True)
    assert list(stored) == list(raw)  # the file's keys, in the file's order
    tensors = parameter_tensors(stored)
    assert list(tensors) == [k for k in raw if not k.endswith("num_batches_tracked")]
    for name in ("features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight"):
        np.testing.assert_array_equal(tensors[name], raw[name].numpy())


def test_cli_default_is_the_stored_view_and_converted_is_labelled(mobilenet_checkpoint, tmp_path, capsys):
    args = ["weights", "--model", "mobilenet_v2", "--weights", mobilenet_checkpoint, "--histograms", "none"]
    assert main([*args, "--out", str(tmp_path / "stored")]) == 0
    out = capsys.readouterr().out
    assert "as stored in the file" in out and "features.0.1.running_var" in out and "num_batches_tracked" not in out
    manifest = json.loads((tmp_path / "stored" / "weights.json").read_text())
    assert manifest["view"] == "stored" and manifest["tensors"][0]["name"] == "features.0.0.weight"
    assert manifest["first_conv"]["kernels"] == [32, 3, 3, 3]

    assert main([*args, "--converted", "--out", str(tmp_path / "converted")]) == 0
    out = capsys.readouterr().out
    assert "CONVERTED" in out and "features.0.1.running_var" not in out
    assert json.loads((tmp_path / "converted" / "weights.json").read_text())["view"] == "converted"


def test_a_keras_file_reports_its_weight_names(tmp_path):
    import keras
    from keras import layers as L
    from keras_reference import fast_init, randomize

    from jaxvis.models.load import load_model as resolve_model

    keras.backend.clear_session()
    with fast_init():
        image = keras.Input((16, 16, 3))
        x = L.Conv2D(4, 3, name="conv2d")(image)
        x = L.BatchNormalization(name="bn")(x)
        x = L.Flatten(name="flat")(x)
        model = keras.Model(image, L.Dense(3, name="dense")(x))
    model = randomize(model, 0)
    model.save(tmp_path / "small.h5")
    stored = stored_tensors(resolve_model(str(tmp_path / "small.h5")))
    assert (
        len(stored) == len(model.weights) == 8
    )  # kernel, bias; gamma, beta, moving mean, moving variance; kernel, bias
    for (name, array), weight in zip(stored.items(), model.weights):
        assert name.startswith(weight.path.split("/")[0])
        np.testing.assert_array_equal(array, np.asarray(weight.numpy()))
    print(list(stored))

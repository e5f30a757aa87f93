"""Feature maps: the `.npy` files are the model's activations (NHWC float32), the figures exist."""

import json

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
from mobilenet_cache import mobilenet

from jaxvis.errors import JaxvisError
from jaxvis.recipes.features import channel_grid, feature_maps, prepare_image, save_feature_maps, standardize_channels

LAYERS = ["features.0", "features.3", "features.10", "classifier.1"]


@pytest.fixture(scope="module")
def spec(mobilenet_checkpoint):
    return mobilenet(mobilenet_checkpoint)


def test_npy_files_are_the_activations(spec, sample_photos, tmp_path):
    photo = sample_photos[0]
    manifest = save_feature_maps(spec, photo, tmp_path, LAYERS, fit="crop", grid="all")
    pixels = prepare_image(spec, photo, fit="crop")
    assert pixels.shape == (224, 224, 3)
    want = spec.activations(jnp.asarray(pixels[None]), LAYERS)
    assert [r["layer"] for r in manifest["layers"]] == LAYERS
    for layer in LAYERS:
        got = np.load(tmp_path / f"{layer}.npy")
        assert got.dtype == np.float32 and got.shape == want[layer].shape[1:]
        np.testing.assert_allclose(got, np.asarray(want[layer][0]), rtol=1e-5, atol=1e-5)
        assert (tmp_path / f"{layer}.png").stat().st_size > 1000
    assert np.load(tmp_path / "features.10.npy").shape == (14, 14, 64)  # NHWC without N
    assert json.loads((tmp_path / "features.json").read_text())["layers"][0]["shape"] == [112, 112, 32]
    assert cv2.imread(str(tmp_path / "input.png")).shape == (224, 224, 3)


def test_feature_maps_resize_and_keep(spec, sample_photos):
    acts = feature_maps(spec, sample_photos[1], ["features.1"], fit="resize")
    assert acts["features.1"].shape == (112, 112, 16)
    acts = feature_maps(spec, sample_photos[1][:96, :160], ["features.1"], fit="keep")
    assert acts["features.1"].shape == (48, 80, 16)
    with pytest.raises(JaxvisError, match="layer of model mobilenet_v2"):
        feature_maps(spec, sample_photos[1], ["nope"])


def test_seed_004_standardization_and_grid():
    act = np.random.default_rng(0).normal(3.0, 2.0, (5, 6, 3)).astype(np.float32)
    act[..., 2] = 7.0  # a flat channel is 128
    out = standardize_channels(act)
    z = (act[..., 0] - act[..., 0].mean()) / act[..., 0].std()
    np.testing.assert_array_equal(out[..., 0], np.clip(z * 64 + 128, 0, 255).astype(np.uint8))
    assert (out[..., 2] == 128).all()
    grid = channel_grid(act, columns=2, gap=1)
    assert grid.shape == (11, 13) and np.isnan(grid[6:, 7:]).all()
    np.testing.assert_array_equal(grid[6:, :6], act[..., 2])

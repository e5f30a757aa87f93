"""Feature maps: the `.npy` files are the model's activations (NHWC float32), the figures exist."""

import json

import cv2
import numpy as np
import pytest
import torch
import torch_mobilenet_v2
from mobilenet_cache import mobilenet

from jaxvis.errors import JaxvisError
from jaxvis.recipes.features import channel_grid, feature_maps, prepare_image, save_feature_maps, standardize_channels

LAYERS = ["features.0", "features.3", "features.10", "classifier.1"]


@pytest.fixture(scope="module")
def spec(mobilenet_checkpoint):
    return mobilenet(mobilenet_checkpoint)


def torch_activations(checkpoint, pixels, layers):
    """{layer: NHWC / [B, N] output} of torchvision's MobileNetV2 module tree (forward hooks) on the
    display image [H, W, 3] in [0, 1], ImageNet-normalized: a forward pass independent of jaxvis."""
    model = torch_mobilenet_v2.load(checkpoint)
    modules = dict(model.named_modules())
    found, hooks = {}, []
    for name in layers:
        hooks.append(
            modules[name].register_forward_hook(
                lambda m, i, out, name=name: found.__setitem__(name, out.detach().numpy())
            )
        )
    mean, std = np.asarray([0.485, 0.456, 0.406], np.float32), np.asarray([0.229, 0.224, 0.225], np.float32)
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1)[None])))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: value[0].transpose(1, 2, 0) if value.ndim == 4 else value[0] for name, value in found.items()}


def test_npy_files_are_the_activations(spec, mobilenet_checkpoint, sample_photos, tmp_path):
    photo = sample_photos[0]
    manifest = save_feature_maps(spec, photo, tmp_path, LAYERS, fit="crop", grid="all")
    pixels = prepare_image(spec, photo, fit="crop")
    assert pixels.shape == (224, 224, 3)
    want = torch_activations(mobilenet_checkpoint, pixels, LAYERS)
    assert [r["layer"] for r in manifest["layers"]] == LAYERS
    for layer in LAYERS:
        got = np.load(tmp_path / f"{layer}.npy")
        assert got.dtype == np.float32 and got.shape == want[layer].shape
        assert np.abs(got - want[layer]).max() < 1e-4 * np.abs(want[layer]).max(), layer
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

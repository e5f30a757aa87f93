"""Grad-CAM, saliency and guided backprop against a PyTorch reference on the real MobileNetV2.

The reference is a few lines of torch on `tests/torch_mobilenet_v2.py` (torchvision's module tree,
loading the same checkpoint): a forward hook on the CAM layer for Grad-CAM, the input gradient for
saliency, and for guided backprop the `_ModifiedReLU6` autograd function of that file. MobileNetV2
uses ReLU6, so guided backprop is defined for ReLU6 the same way on both sides: the gradient passes
a unit only where it is positive and the unit is in its linear range, `g * (g > 0) * (0 < x < 6)`
(`jaxvis.models.activations.GUIDED`, torch_mobilenet_v2's "guided" mode). Gradients are taken with
respect to the display image in [0, 1] (the ImageNet normalization is part of the function).

Why the 1e-4 comparison runs in float64: an input gradient through 17 ReLU6 blocks is not a
continuous function of the rounding. A unit whose input sits within float32 rounding of 0 or 6 is
"on" on one side and "off" on the other, and its whole gradient path appears or vanishes: torch's
own float32 saliency differs from its float64 saliency by ~0.8% (relative max-abs) on these photos,
jaxvis float32 by ~2.4% -- while the relative L2 error is ~2e-3. So the 1e-4 check compares the same
weights in float64 on both sides: jaxvis under `jax.enable_x64` (its float32 weights, folded BatchNorm,
promoted to float64) and the torch module with its BatchNorms folded here the same way (float64,
rounded to float32 -- bit-identical to jaxvis's weights, asserted below) and then run in float64.
They agree to ~1e-15. The float32 path is checked too: Grad-CAM and guided backprop within 1e-4
(the first has no ReLU6 between features.18 and the logits, the second's masks make it robust), vanilla
saliency in relative L2 within 1e-2.
"""

import cv2
import jax
import numpy as np
import pytest
import torch
import torch_mobilenet_v2
from mobilenet_cache import mobilenet
from torch import nn

from jaxvis.errors import JaxvisError
from jaxvis.recipes.cam import CamConfig, cam, check_classes, default_cam_layer, overlay, save_cam, visualize_cam

MEAN = np.asarray([0.485, 0.456, 0.406])
STD = np.asarray([0.229, 0.224, 0.225])
# per photo [B, K]: china (973 coral reef, 20 water ouzel), flower (985 daisy, 309 bee)
CLASSES = np.asarray([[973, 20], [985, 309]], np.int32)
TOLERANCE = 1e-4  # relative max-abs: max |jaxvis - torch| / max |torch|
SIZE = 160  # photos resized to SIZE x SIZE: features.18 is a 5 x 5 map (224 checks nothing more, at twice the cost)
CELL = SIZE // 32


@pytest.fixture(scope="module")
def spec(mobilenet_checkpoint):
    return mobilenet(mobilenet_checkpoint)


@pytest.fixture(scope="module")
def photos(sample_photos):
    return np.stack([cv2.resize(p, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for p in sample_photos])


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """Every Conv2d followed by a BatchNorm2d becomes one Conv2d with bias (float64 arithmetic, rounded
    to float32 -- as jaxvis's converter); the BatchNorm becomes Identity. Then the module in float64."""
    for sequence in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(sequence)
        for i, (conv, bn) in enumerate(zip(children, children[1:])):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                gain = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
                folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                   groups=conv.groups, bias=True)
                folded.weight.data = (conv.weight.double() * gain[:, None, None, None]).float()
                folded.bias.data = (bn.bias.double() - bn.running_mean.double() * gain).float()
                sequence[i], sequence[i + 1] = folded, nn.Identity()
    return model.double().eval()


@pytest.fixture(scope="module")
def reference(mobilenet_checkpoint):
    return fold_batchnorms(torch_mobilenet_v2.load(mobilenet_checkpoint))


def _logits(model, x01):
    mean, std = (torch.from_numpy(v)[:, None, None] for v in (MEAN, STD))
    return model((x01 - mean) / std)


def _torch_input(photos):
    return torch.from_numpy(np.ascontiguousarray(photos.transpose(0, 3, 1, 2), np.float64)).requires_grad_(True)


def _class_score(logits, classes, k):
    return logits[torch.arange(len(classes)), torch.from_numpy(classes[:, k]).long()].sum()


def torch_gradcam(model, photos, classes, layer_index=18):
    """[B, K, h, w]: relu(sum_c mean_ij(d logit / d A_c) * A_c) with A = features[layer_index]."""
    captured = {}
    hook = model.features[layer_index].register_forward_hook(lambda module, inputs, output: captured.update(a=output))
    try:
        logits = _logits(model, _torch_input(photos))
    finally:
        hook.remove()
    acts, maps = captured["a"], []
    for k in range(classes.shape[1]):
        (grads,) = torch.autograd.grad(_class_score(logits, classes, k), acts, retain_graph=True)
        maps.append(torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)))
    return torch.stack(maps, dim=1).detach().numpy()


def torch_input_gradients(model, photos, classes, mode="true"):
    """[B, K, H, W, C]: d logit_k / d image, with the ReLU6 backward pass of `mode`."""
    grads = []
    with torch_mobilenet_v2.relu_gradient(mode):
        for k in range(classes.shape[1]):
            x = _torch_input(photos)
            _class_score(_logits(model, x), classes, k).backward()
            grads.append(x.grad.numpy().transpose(0, 2, 3, 1))
    return np.stack(grads, axis=1)


@pytest.fixture(scope="module")
def torch_saliency(reference, photos):
    """The torch reference's plain input gradients [B, K, H, W, C], computed once for the saliency and
    guided backprop tests."""
    return torch_input_gradients(reference, photos, CLASSES, "true")


def relative_max_abs(got, want):
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def cam64(spec, photos, classes, config):
    with jax.enable_x64(True):
        result = cam(spec, photos.astype(np.float64), classes, config)
    assert result.raw.dtype == np.float64
    return result


def test_the_reference_holds_jaxvis_weights(spec, reference):
    params = spec.variables["params"]
    pairs = [
        (reference.features[0][0], params["features.0"]),
        (reference.features[5].conv[0][0], params["features.5"]["expand"]),
        (reference.features[5].conv[1][0], params["features.5"]["depthwise"]),
        (reference.features[17].conv[2], params["features.17"]["project"]),
    ]
    for conv, flax in pairs:
        np.testing.assert_array_equal(
            conv.weight.detach().float().numpy().transpose(2, 3, 1, 0), np.asarray(flax["kernel"])
        )
        np.testing.assert_array_equal(conv.bias.detach().float().numpy(), np.asarray(flax["bias"]))


def test_gradcam_matches_torch(spec, reference, photos):
    want = torch_gradcam(reference, photos, CLASSES)
    assert want.shape == (2, 2, CELL, CELL) and want.max() > 0
    assert default_cam_layer(spec) == "features.18"
    assert relative_max_abs(cam64(spec, photos, CLASSES, CamConfig(method="gradcam")).raw, want) < TOLERANCE
    result = cam(spec, photos, CLASSES, CamConfig(method="gradcam"))  # float32
    assert result.raw.shape == (2, 2, CELL, CELL) and result.raw.dtype == np.float32
    assert relative_max_abs(result.raw, want) < TOLERANCE
    # heat maps: the raw map upsampled to the image and min-max normalized
    assert result.heatmaps.shape == (2, 2, SIZE, SIZE)
    assert result.heatmaps.min() >= 0.0 and result.heatmaps.max() == pytest.approx(1.0)
    hot = np.unravel_index(result.raw[0, 1].argmax(), (CELL, CELL))
    y, x = np.unravel_index(result.heatmaps[0, 1].argmax(), (SIZE, SIZE))
    assert (y // 32, x // 32) == hot  # the hot cell stays where it was (no transpose, no flip)
    np.testing.assert_allclose(visualize_cam(spec, photos[0], 20), result.heatmaps[0, 1], atol=1e-5)


def test_saliency_matches_torch(spec, torch_saliency, photos):
    want = torch_saliency
    result = cam64(spec, photos, CLASSES, CamConfig(method="saliency"))
    assert result.raw.shape == want.shape == (2, 2, SIZE, SIZE, 3)
    assert relative_max_abs(result.raw, want) < TOLERANCE
    got32 = cam(spec, photos, CLASSES, CamConfig(method="saliency")).raw  # ReLU6 mask flips: see module docstring
    assert np.linalg.norm(got32 - want) / np.linalg.norm(want) < 1e-2


def test_guided_backprop_matches_torch(spec, reference, photos, torch_saliency):
    want = torch_input_gradients(reference, photos, CLASSES, "guided")
    assert relative_max_abs(cam64(spec, photos, CLASSES, CamConfig(method="guided")).raw, want) < TOLERANCE
    result = cam(spec, photos, CLASSES, CamConfig(method="guided"))
    assert relative_max_abs(result.raw, want) < TOLERANCE
    plain = torch_saliency[:1, :1]
    assert relative_max_abs(plain, want[:1, :1]) > 0.1  # guided backprop really is another gradient
    assert result.heatmaps.shape == (2, 2, SIZE, SIZE) and 0 <= result.heatmaps.min() and result.heatmaps.max() <= 1


def test_class_out_of_range_is_a_clear_error(spec):
    with pytest.raises(JaxvisError, match=r"class 1000 is out of range: classifier.1 has 1000 classes \(0-999\)"):
        check_classes(spec, [5, 1000], 1)
    with pytest.raises(JaxvisError, match="class -1 is out of range"):
        check_classes(spec, [-1], 1)
    with pytest.raises(JaxvisError, match="integers"):
        check_classes(spec, [1.5], 1)


def test_overlay_is_aligned_rgb():
    image = np.zeros((40, 60, 3), np.float32)
    image[..., 1] = 1.0  # a green photo
    heat = np.zeros((40, 60), np.float32)
    heat[:10, :15] = 1.0  # hot top-left corner
    out = overlay(image, heat, cmap="jet", alpha=1.0)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > 100 and out[0, 0, 2] < 50  # jet's top is red, in RGB order
    assert out[-1, -1, 2] > 100 and out[-1, -1, 0] < 50  # jet's bottom is blue
    half = overlay(image, heat[:20, :30], alpha=0.0)  # alpha 0: the photo; a small map is resized
    assert (half[..., 1] == 255).all() and (half[..., [0, 2]] == 0).all()
    with pytest.raises(JaxvisError, match="alpha"):
        overlay(image, heat, alpha=1.5)


def test_save_cam_writes_what_it_promises(spec, sample_photos, tmp_path):
    photo = sample_photos[0][::2, ::2]  # 214x320: maps are drawn back at the photo's size
    manifest = save_cam(spec, [photo], ["china"], [20], CamConfig(method="gradcam"), tmp_path)
    entry = manifest["images"][0]["classes"][0]
    assert entry["label"] == "20 water ouzel" and manifest["layer"] == "features.18"
    assert (tmp_path / "china_gradcam_class20.png").is_file() and (tmp_path / "china_gradcam.png").is_file()
    assert (tmp_path / "cam.json").is_file()
    heat = np.load(tmp_path / "china_gradcam_class20.npy")
    assert heat.shape == photo.shape[:2] and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
    png = cv2.imread(str(tmp_path / "china_gradcam_class20.png"))
    assert png.shape == photo.shape

"""Every CAM / attribution method against an independent implementation, same weights, same input.

The model is pytorch/examples' MNIST CNN (`torch_mnist_cnn`) with random weights: small enough for
every method, and its activations are plain ReLUs, which Captum's guided backprop hooks (its
`nn.ReLU` hooks do not see MobileNetV2's ReLU6). The torch side is that network written here with
`nn.ReLU` modules, returning the class logits (fc2, before the example's log_softmax) of the display
image in [0, 1] (the example's normalization is inside the network, as jaxvis's preprocessing). Its
state_dict, saved as a .pth, is what jaxvis loads.

References:
- Captum 0.9 (`LayerGradCam`, `Saliency(abs=False)`, `GuidedBackprop`, `LayerAttribution.interpolate`):
  Grad-CAM, saliency, SmoothGrad (Captum's saliency averaged over the noisy copies), guided backprop,
  guided Grad-CAM (guided backprop x the bilinearly upsampled, min-max normalized Grad-CAM map).
- Written here from the papers with torch autograd, where Captum has no equivalent:
  Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 weights with the exponential score's closed form)
  and Score-CAM (Wang et al. 2020, Alg. 1: softmax over channels of the masked inputs' score increase).

Both sides run in float64 (jaxvis under `jax.enable_x64`, its float32 weights promoted; torch the same
float32 weights promoted), so a ReLU input near 0 cannot flip between them: they agree to ~1e-15 and
are held to 1e-9 (relative max-abs).
"""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_zoo_reference as zoo
from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam, Saliency
from torch import nn

from jaxvis.models import load_model
from jaxvis.recipes.cam import CamConfig, cam

MEAN, STD = 0.1307, 0.3081
CLASSES = np.asarray([[3, 7], [1, 3], [9, 0]], np.int32)  # [B, K]
TOLERANCE = 1e-9


class Net(zoo.MnistNet):
    """pytorch/examples' MNIST `Net` (same state_dict keys) with ReLU modules (Captum's guided backprop
    hooks modules); display image -> logits."""

    def __init__(self):
        super().__init__()
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x01):
        x = (x01 - MEAN) / STD
        x = self.dropout1(F.max_pool2d(self.relu2(self.conv2(self.relu1(self.conv1(x)))), 2))
        return self.fc2(self.dropout2(self.relu3(self.fc1(torch.flatten(x, 1)))))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    state = zoo.randomize(zoo.MnistNet(), seed=4).state_dict()
    path = tmp_path_factory.mktemp("mnist") / "mnist.pth"
    torch.save(state, path)
    net = Net()
    net.load_state_dict(state)
    return load_model("torch_mnist_cnn", weights=str(path)), net.double().eval()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(3, 28, 28, 1))  # float64


def nchw(images):
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def run(spec, images, method, **options):
    with jax.enable_x64(True):
        result = cam(spec, images, CLASSES, CamConfig(method=method, **options))
    assert result.raw.dtype == np.float64
    return result


def per_class(fn):
    """[B, K, ...] from fn(targets) for each column of CLASSES (Captum's per-example targets)."""
    return np.stack([fn([int(c) for c in CLASSES[:, k]]) for k in range(CLASSES.shape[1])], axis=1)


def relative_max_abs(got, want):
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def min_max(maps):
    """Min-max over the last two axes; an all-equal map becomes 0."""
    low, high = maps.min(axis=(-2, -1), keepdims=True), maps.max(axis=(-2, -1), keepdims=True)
    return np.where(high > low, (maps - low) / np.where(high > low, high - low, 1.0), 0.0)


def captum_gradcam(net, images):
    """[B, K, 12, 12]: Captum's Grad-CAM at dropout1 (jaxvis's default CAM layer for this model)."""
    gradcam = LayerGradCam(net, net.dropout1)
    return per_class(lambda t: gradcam.attribute(nchw(images), target=t, relu_attributions=True)[:, 0].detach().numpy())


def layer_and_gradients(net, images, targets):
    """(A [B, c, h, w] at dropout1, d logit_target / d A) with torch autograd."""
    captured = {}
    hook = net.dropout1.register_forward_hook(lambda module, inputs, output: captured.update(a=output))
    try:
        logits = net(nchw(images))
    finally:
        hook.remove()
    acts = captured["a"]
    (grads,) = torch.autograd.grad(logits[torch.arange(len(targets)), torch.as_tensor(targets)].sum(), acts)
    return acts.detach(), grads


def paper_gradcam_plus_plus(net, images, targets):
    """Grad-CAM++ (Chattopadhay et al., eq. 19 with Y = exp(S)): alpha = g^2 / (2 g^2 + sum_ab A_ab g^3)
    (0 where the denominator is 0), w_k = sum_ij alpha relu(g), map = relu(sum_k w_k A_k)."""
    acts, g = layer_and_gradients(net, images, targets)
    denominator = 2 * g**2 + acts.sum(dim=(2, 3), keepdim=True) * g**3
    alpha = torch.where(
        denominator != 0, g**2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator)), 0.0
    )
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    return torch.relu((weights * acts).sum(dim=1)).numpy()


@torch.no_grad()
def paper_scorecam(net, images, targets):
    """Score-CAM (Wang et al., Alg. 1): each channel of A, upsampled (bilinear) to the input and
    min-max normalized, masks the network input X (the normalized image); the channel's weight is
    the softmax over channels of f_c(X o H_k) - f_c(X_b), X_b the zero input; map = relu(sum w_k A_k)."""
    captured = {}
    hook = net.dropout1.register_forward_hook(lambda module, inputs, output: captured.update(a=output))
    try:
        net(nchw(images))
    finally:
        hook.remove()
    acts = captured["a"]
    masks = torch.from_numpy(min_max(F.interpolate(acts, size=(28, 28), mode="bilinear", align_corners=False).numpy()))
    x = (nchw(images) - MEAN) / STD
    logits_of_input = lambda inputs: net(inputs * STD + MEAN)  # the net takes display images
    rows = torch.arange(len(targets))
    base = logits_of_input(torch.zeros_like(x))[rows, torch.as_tensor(targets)]
    increase = torch.stack([logits_of_input(x * masks[:, k:k + 1])[rows, torch.as_tensor(targets)] - base
                            for k in range(acts.shape[1])], dim=1)  # [B, c]
    weights = torch.softmax(increase, dim=1)[:, :, None, None]
    return torch.relu((weights * acts).sum(dim=1)).numpy()


def test_gradcam_matches_captum(models, images):
    spec, net = models
    want = captum_gradcam(net, images)
    result = run(spec, images, "gradcam")
    assert result.layer == "dropout1" and want.shape == result.raw.shape == (3, 2, 12, 12) and want.max() > 0
    assert relative_max_abs(result.raw, want) < TOLERANCE
    # heat maps: Captum's bilinear upsampling (torch, half-pixel centres) then min-max per map
    upsampled = LayerAttribution.interpolate(torch.from_numpy(want.reshape(6, 1, 12, 12)), (28, 28), "bilinear")
    np.testing.assert_allclose(result.heatmaps, min_max(upsampled.numpy().reshape(3, 2, 28, 28)), atol=1e-9)
    # the scores are the logits before any softmax
    logits = net(nchw(images)).detach().numpy()
    np.testing.assert_allclose(result.scores, np.take_along_axis(logits, CLASSES, axis=1), rtol=1e-12)


def test_gradcam_plus_plus_matches_the_paper(models, images):
    spec, net = models
    want = per_class(lambda t: paper_gradcam_plus_plus(net, images, t))
    assert want.max() > 0
    result = run(spec, images, "gradcam++")
    assert relative_max_abs(result.raw, want) < TOLERANCE
    # it is not Grad-CAM under another name
    assert relative_max_abs(captum_gradcam(net, images), want) > 1e-2


def test_scorecam_matches_the_paper(models, images):
    spec, net = models
    want = per_class(lambda t: paper_scorecam(net, images, t))
    assert want.max() > 0
    for chunk in (64, 24):  # one forward pass of all 64 masked images, or three (the last one padded)
        result = run(spec, images, "scorecam", scorecam_batch=chunk)
        assert relative_max_abs(result.raw, want) < TOLERANCE


def test_saliency_matches_captum(models, images):
    spec, net = models
    saliency = Saliency(net)
    want = per_class(lambda t: nhwc(saliency.attribute(nchw(images).requires_grad_(True), target=t, abs=False)))
    result = run(spec, images, "saliency")
    assert result.raw.shape == want.shape == (3, 2, 28, 28, 1)
    assert relative_max_abs(result.raw, want) < TOLERANCE
    # heat map: max_c |g| over its 99th percentile, clipped to 1
    magnitude = np.abs(want).max(axis=-1)
    top = np.percentile(magnitude.reshape(3, 2, -1), 99.0, axis=-1)[..., None, None]
    np.testing.assert_allclose(result.heatmaps, np.clip(magnitude / top, 0, 1), atol=1e-9)


def test_smoothgrad_is_captums_saliency_averaged_over_the_noisy_copies(models, images):
    """SmoothGrad (Smilkov et al.): the mean gradient over copies x + N(0, sigma^2). The copies are the
    ones jaxvis documents drawing (sample i: sigma * normal(fold_in(PRNGKey(seed), i))), so both
    sides average the same samples; the gradients are Captum's."""
    spec, net = models
    samples, sigma, seed = 6, 0.2, 3
    saliency = Saliency(net)
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(seed)
        noises = [
            sigma * np.asarray(jax.random.normal(jax.random.fold_in(key, i), images.shape, np.float64))
            for i in range(samples)
        ]
    want = np.mean(
        [
            per_class(
                lambda t, n=n: nhwc(saliency.attribute(nchw(images + n).requires_grad_(True), target=t, abs=False))
            )
            for n in noises
        ],
        axis=0,
    )
    result = run(spec, images, "smoothgrad", smooth_samples=samples, smooth_noise=sigma, seed=seed)
    assert relative_max_abs(result.raw, want) < TOLERANCE
    plain = per_class(lambda t: nhwc(saliency.attribute(nchw(images).requires_grad_(True), target=t, abs=False)))
    assert relative_max_abs(plain, want) > 0.1  # the noise matters


def test_guided_backprop_matches_captum(models, images):
    spec, net = models
    guided = GuidedBackprop(net)
    want = per_class(lambda t: nhwc(guided.attribute(nchw(images).requires_grad_(True), target=t)))
    result = run(spec, images, "guided")
    assert relative_max_abs(result.raw, want) < TOLERANCE
    plain = per_class(lambda t: nhwc(Saliency(net).attribute(nchw(images).requires_grad_(True), target=t, abs=False)))
    assert relative_max_abs(plain, want) > 0.1  # guided backprop is another gradient


def test_guided_gradcam_matches_captum(models, images):
    """Guided Grad-CAM (Selvaraju et al.): guided backprop x the Grad-CAM map upsampled to the image.
    jaxvis min-max normalizes the upsampled map first (Captum's GuidedGradCam does not), so the
    reference is composed from Captum's parts: GuidedBackprop x min_max(interpolate(LayerGradCam))."""
    spec, net = models
    guided = GuidedBackprop(net)
    backprop = per_class(lambda t: nhwc(guided.attribute(nchw(images).requires_grad_(True), target=t)))
    maps = captum_gradcam(net, images)
    upsampled = LayerAttribution.interpolate(torch.from_numpy(maps.reshape(6, 1, 12, 12)), (28, 28), "bilinear")
    want = backprop * min_max(upsampled.numpy().reshape(3, 2, 28, 28))[..., None]
    result = run(spec, images, "guided_gradcam")
    assert result.layer == "dropout1"
    assert relative_max_abs(result.raw, want) < TOLERANCE

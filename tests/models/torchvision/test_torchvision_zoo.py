"""The torchvision-layout zoo (VGG16/19, AlexNet, ResNet18/34/50, GoogLeNet, Inception v3, the
pytorch/examples MNIST CNN) against torch references with torchvision's module tree
(`tests/torch_zoo_reference.py`; torchvision itself is not importable here) on the same random
weights.

Each reference gets random weights and non-trivial BatchNorm statistics, its state_dict is saved as a
zip `.pth` (every architecture), a legacy non-zip `.pth` or a `.safetensors` (some), loaded with
`load_model(name, weights=path)`, and run on the same [0, 1] images through `spec.activations` (so
the spec's preprocessing is checked too) at a small input size. The logits and several intermediate
layers, addressed by their torchvision module names, must agree within
max|got - want| <= 1e-4 * max|want| + 1e-6. Non-square inputs make a swapped H / W, and spatial maps
larger than 1x1 before each flatten make a wrong C*H*W -> H*W*C permutation, visible.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch_zoo_reference as zoo

from jaxvis.convert.torch.layout import linear_weight
from jaxvis.errors import JaxvisError
from jaxvis.models import load_model
from jaxvis.models.mnist import MnistCNN

RTOL, ATOL = 1e-4, 1e-6
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@dataclasses.dataclass(frozen=True)
class Case:
    reference: Callable[[], torch.nn.Module]  # the torch module, any weights
    size: tuple[int, int]  # input H, W
    layers: tuple[str, ...]  # compared, by torchvision module name; the last is the logits layer
    batch: int = 2
    mean: tuple[float, ...] = IMAGENET_MEAN  # torch's input is (images - mean) / std
    std: tuple[float, ...] = IMAGENET_STD


CASES = {
    # VGG at 64x96: a 2x3 map before avgpool (7x7): classifier.0 sees torch's C*H*W flatten order.
    "vgg16": Case(
        lambda: zoo.vgg16(num_classes=10),
        (64, 96),
        (
            "features.0",
            "features.1",
            "features.16",
            "features.30",
            "avgpool",
            "classifier.0",
            "classifier.4",
            "classifier.6",
        ),
        batch=1,
    ),
    "vgg19": Case(
        lambda: zoo.vgg19(num_classes=10),
        (64, 96),
        ("features.2", "features.25", "features.36", "avgpool", "classifier.0", "classifier.6"),
        batch=1,
    ),
    # AlexNet at 127x160: a 3x4 map before avgpool (6x6).
    "alexnet": Case(
        lambda: zoo.AlexNet(num_classes=1000),
        (127, 160),
        ("features.0", "features.2", "features.12", "avgpool", "classifier.1", "classifier.6"),
    ),
    "resnet18": Case(
        lambda: zoo.resnet18(num_classes=1000),
        (64, 80),
        ("conv1", "bn1", "relu", "maxpool", "layer1.0", "layer2.0", "layer3", "layer4.1", "avgpool", "fc"),
    ),
    "resnet34": Case(
        lambda: zoo.resnet34(num_classes=10),
        (64, 80),
        ("bn1", "layer1.2", "layer2", "layer3.5", "layer4", "avgpool", "fc"),
        batch=1,
    ),
    "resnet50": Case(
        lambda: zoo.resnet50(num_classes=10),
        (64, 80),
        ("conv1", "layer1.0", "layer2.3", "layer3", "layer4.2", "avgpool", "fc"),
        batch=1,
    ),
    # transform_input=True in both: the spec's preprocessing is torchvision's normalize + transform.
    "googlenet": Case(
        lambda: zoo.GoogLeNet(num_classes=10, aux_logits=True, transform_input=True),
        (64, 80),
        ("conv1", "maxpool1", "conv3", "inception3a", "maxpool3", "inception4e", "inception5b", "avgpool", "fc"),
        batch=1,
    ),
    "inception_v3": Case(
        lambda: zoo.Inception3(num_classes=10, aux_logits=True, transform_input=True),
        (75, 91),
        (
            "Conv2d_1a_3x3",
            "maxpool1",
            "Conv2d_4a_3x3",
            "Mixed_5b",
            "Mixed_6a",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7c",
            "avgpool",
            "fc",
        ),
        batch=1,
    ),
    # 1 channel, and fc1 takes the flattened 64x12x12 map.
    "torch_mnist_cnn": Case(
        zoo.MnistNet, (28, 28), ("conv1", "conv2", "dropout1", "fc1", "dropout2", "fc2"), mean=MNIST_MEAN, std=MNIST_STD
    ),
}
CLASSES = {"vgg16": 10, "vgg19": 10, "alexnet": 1000, "resnet18": 1000, "resnet34": 10, "resnet50": 10,
           "googlenet": 10, "inception_v3": 10, "torch_mnist_cnn": 10}
SLOW = {"vgg16", "vgg19"}  # 12-17 s each on 2 busy CPU cores (a 100M-parameter classifier to save and load)
FORMATS = {  # arch -> the weight files tried; a zip .pth for every architecture
    "vgg16": ("zip",), "vgg19": ("zip",), "alexnet": ("zip", "safetensors"),
    "resnet18": ("zip", "legacy", "safetensors"), "resnet34": ("zip",), "resnet50": ("zip",),
    "googlenet": ("zip",), "inception_v3": ("zip", "safetensors"),
    "torch_mnist_cnn": ("zip", "legacy", "safetensors"),
}
SUFFIX = {"zip": ".pth", "legacy": ".pth", "safetensors": ".safetensors"}


def save(state_dict, path, fmt: str) -> str:
    if fmt == "zip":
        torch.save(state_dict, path)
    elif fmt == "legacy":
        torch.save(state_dict, path, _use_new_zipfile_serialization=False)
    else:
        from safetensors.torch import save_file

        save_file({key: value.contiguous() for key, value in state_dict.items()}, str(path))
    return str(path)


def close(got, want) -> tuple[bool, float]:
    """(max|got - want| <= RTOL * max|want| + ATOL, max|got - want| / max|want|)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff, scale = np.abs(got - want).max(), np.abs(want).max()
    return bool(diff <= RTOL * scale + ATOL), float(diff / max(scale, 1e-30))


@functools.lru_cache(maxsize=1)  # cases of one architecture run together; keep only the current model
def reference(arch: str):
    """(torch model with random weights, [0, 1] images, {layer: torch activation NHWC})."""
    case = CASES[arch]
    torch.manual_seed(0)
    model = zoo.randomize(case.reference(), seed=len(arch))
    channels = len(case.mean)
    images = np.random.default_rng(len(arch)).uniform(0, 1, (case.batch, *case.size, channels)).astype(np.float32)
    x = (images - np.asarray(case.mean, np.float32)) / np.asarray(case.std, np.float32)
    want = zoo.capture(model, x, case.layers)
    for name in case.layers:  # a degenerate reference would make the comparison vacuous
        assert np.abs(want[name]).max() > 1e-2 and np.isfinite(want[name]).all(), name
    return model, images, want


PARITY = [pytest.param(arch, fmt, id=f"{arch}-{fmt}", marks=[pytest.mark.slow] if arch in SLOW else [])
          for arch, formats in FORMATS.items() for fmt in formats]


@pytest.mark.parametrize("arch, fmt", PARITY)
def test_matches_torch(arch, fmt, tmp_path):
    case = CASES[arch]
    model, images, want = reference(arch)
    spec = load_model(arch, weights=save(model.state_dict(), tmp_path / f"{arch}{SUFFIX[fmt]}", fmt))
    assert spec.logits_layer == case.layers[-1]
    assert set(case.layers) <= set(spec.layer_names)
    assert spec.source.endswith(SUFFIX[fmt])
    n_classes = CLASSES[arch]
    assert spec.class_names is None or len(spec.class_names) == n_classes
    assert (spec.class_names is not None) == (n_classes == 1000 or arch == "torch_mnist_cnn")

    got = fast_compile.activations(spec, images, case.layers)
    assert set(got) == set(case.layers)
    results = {}
    for name in case.layers:
        assert got[name].shape == want[name].shape, (name, got[name].shape, want[name].shape)
        results[name] = close(got[name], want[name])
    print(f"\n{arch} ({fmt}): max relative error", max(e for _, e in results.values()))
    assert all(ok for ok, _ in results.values()), {name: e for name, (ok, e) in results.items() if not ok}
    assert got[case.layers[-1]].shape == (case.batch, n_classes)


# ---------------------------------------------------------------------------------------------
# The MNIST net's flatten order, and the loaders' errors.


def test_mnist_flatten_order_is_what_makes_fc1_match(tmp_path):
    """fc1 after the flatten of a 64x12x12 map: without the C*H*W -> H*W*C permutation it must not
    match torch (so the parity above does check the permutation), with it it must."""
    model, images, want = reference("torch_mnist_cnn")
    spec = load_model("torch_mnist_cnn", weights=save(model.state_dict(), tmp_path / "mnist.pth", "zip"))
    x = spec.preprocess(jnp.asarray(images))
    assert close(spec.module.apply(spec.variables, x, outputs=("fc1",))["fc1"], want["fc1"])[0]

    unpermuted = jax.tree.map(lambda a: a, spec.variables)  # a copy of the tree (the arrays are shared)
    unpermuted["params"]["fc1"]["weight"] = jnp.asarray(linear_weight(model.fc1.weight.detach().numpy()))
    wrong = MnistCNN().apply(unpermuted, x, outputs=("dropout1", "fc1"))
    assert close(wrong["dropout1"], want["dropout1"])[0]  # the map before the flatten is right ...
    ok, error = close(wrong["fc1"], want["fc1"])
    assert not ok and error > 0.05, error  # ... so only the flatten order can make fc1 differ


def test_resnet18_weights_as_vgg16_name_the_keys(tmp_path):
    path = save(zoo.resnet18(num_classes=10).state_dict(), tmp_path / "resnet18.pth", "zip")
    with pytest.raises(JaxvisError) as error:
        load_model("vgg16", weights=path)
    message = str(error.value)
    assert "\n" not in message and path in message
    assert "missing from the file: features.0.weight" in message
    assert "not used by the model: conv1.weight" in message


def test_a_conv_of_the_wrong_size_names_the_key_and_both_shapes(tmp_path):
    state = zoo.MnistNet().state_dict()
    state["conv2.weight"] = torch.zeros(64, 32, 5, 5)  # 5x5 where the model has 3x3
    with pytest.raises(JaxvisError) as error:
        load_model("torch_mnist_cnn", weights=save(state, tmp_path / "mnist.pth", "zip"))
    message = str(error.value)
    # The converted (HWIO) kernel's path and shapes: torch's (64, 32, 5, 5) is (5, 5, 32, 64) there.
    assert "params/conv2/kernel has shape (5, 5, 32, 64)" in message, message
    assert "but (3, 3, 32, 64) in the model" in message, message


def test_a_batchnorm_that_does_not_fit_its_conv_names_the_keys_and_shapes(tmp_path):
    state = zoo.resnet18(num_classes=10).state_dict()
    state["layer2.1.bn2.running_var"] = torch.ones(96)  # the conv has 128 outputs
    with pytest.raises(JaxvisError) as error:
        load_model("resnet18", weights=save(state, tmp_path / "resnet18.pth", "zip"))
    message = str(error.value)
    assert "layer2.1.conv2.weight (128, 128, 3, 3)" in message, message
    assert "layer2.1.bn2.running_var (96,)" in message, message


def test_a_linear_of_the_wrong_width_names_the_key_and_its_shape(tmp_path):
    state = zoo.MnistNet().state_dict()
    state["fc1.weight"] = torch.zeros(128, 4608)  # fc1 takes 64*12*12 = 9216
    with pytest.raises(JaxvisError) as error:
        load_model("torch_mnist_cnn", weights=save(state, tmp_path / "mnist.pth", "zip"))
    message = str(error.value)
    assert "fc1.weight (128, 4608)" in message and "64x12x12" in message, message

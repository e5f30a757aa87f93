"""`.pt2` archives from torch.export load onto GraphModule and match torch at every module.

Each model is exported with torch 2.13 (`torch.export.export` + `torch.export.save`) for one
64 px image, loaded with `load_graph_model` (torch-free), and run on a batch of two: every module
path torch has (as lucent names layers) is a layer, and its activation equals a forward hook's
output to 1e-4 relative.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the torchvision-layout references

import graph_torch_models as gm  # noqa: E402
import torch_mobilenet_v2  # noqa: E402
import torch_zoo_reference as zoo  # noqa: E402

from jaxvis.errors import JaxvisError  # noqa: E402
from jaxvis.models.graph import load_graph_model  # noqa: E402
from jaxvis.models.graph.from_export import SUPPORTED_ATEN  # noqa: E402

MODELS = gm.MODELS


def _hooked_modules(model, x):
    """Module paths a forward actually calls (hooks fire), with their outputs."""
    return {k: v for k, v in gm.capture(model, x).items() if k}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_module_matches_torch(name, tmp_path):
    model = gm.randomize(MODELS[name]())
    spec = load_graph_model(gm.export_pt2(model, tmp_path / f"{name}.pt2", 64))
    x = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    expected = _hooked_modules(model, x)
    missing = sorted(set(expected) - set(spec.layer_names))
    assert not missing, f"modules without a layer: {missing}"
    out = gm.apply_jitted(spec, x, tuple(expected))
    errors = {k: gm.relative_error(out[k], v) for k, v in expected.items() if np.shape(out[k]) == np.shape(v)}
    assert all(np.shape(out[k]) == np.shape(v) for k, v in expected.items())
    assert max(errors.values()) < 1e-4, {k: e for k, e in errors.items() if e >= 1e-4}
    assert spec.input_shape == (64, 64, 3)


def test_layer_names_are_module_paths_and_logits_precede_the_softmax(tmp_path):
    model = gm.randomize(zoo.resnet18(num_classes=10))
    spec = load_graph_model(gm.export_pt2(model, tmp_path / "r.pt2", 64))
    assert {"conv1", "layer1.0.relu", "layer3.1.conv2", "layer4", "fc"} <= set(spec.layer_names)
    assert spec.logits_layer == "fc"
    assert spec.layer_names.index("layer1.0.conv1") < spec.layer_names.index("layer2.0.conv1")
    unet = load_graph_model(gm.export_pt2(gm.randomize(gm.UNetDecoder()), tmp_path / "u.pt2", 32))
    assert unet.logits_layer == "out" and "output" in unet.layer_names


def test_decomposed_program_with_dynamic_sizes_takes_an_input_size(tmp_path):
    model = gm.randomize(zoo.resnet18(num_classes=10))
    dims = {"x": {0: torch.export.Dim("batch"), 2: torch.export.Dim("h", min=33, max=512),
                  3: torch.export.Dim("w", min=33, max=512)}}
    program = torch.export.export(model, (torch.zeros(2, 3, 64, 64),), dynamic_shapes=dims).run_decompositions()
    path = tmp_path / "dynamic.pt2"
    torch.export.save(program, str(path))
    assert load_graph_model(str(path)).input_shape == (224, 224, 3)  # symbolic height and width: 224 by default
    spec = load_graph_model(str(path), input_size=(48, 40))
    assert spec.input_shape == (48, 40, 3)
    x = np.random.default_rng(1).uniform(size=(3, 48, 40, 3)).astype(np.float32)
    expected = _hooked_modules(model, x)
    out = gm.apply_jitted(spec, x, ("layer2.1", "fc"))
    assert gm.relative_error(out["layer2.1"], expected["layer2.1"]) < 1e-4
    assert gm.relative_error(out["fc"], expected["fc"]) < 1e-4


def test_unsupported_op_is_one_error_naming_op_module_and_supported_ops(tmp_path):
    class Sorts(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.sort(self.conv(x), dim=1).values

    path = gm.export_pt2(Sorts().eval(), tmp_path / "sort.pt2", 16)
    with pytest.raises(JaxvisError) as error:
        load_graph_model(path)
    message = str(error.value)
    assert "sort" in message and "not supported" in message and "conv2d" in message and "\n" not in message
    assert "sort" not in SUPPORTED_ATEN


@pytest.mark.slow
def test_class_visualization_is_classified_as_its_class_by_torch(mobilenet_checkpoint, tmp_path):
    """torchvision's MobileNetV2 weights, exported to .pt2: jaxvis renders three classes from the
    archive alone, and the torch module classifies each image as its class."""
    import dataclasses

    from jaxvis.models.spec import TORCH_IMAGENET
    from jaxvis.optvis.render import RenderConfig, render

    model = torch_mobilenet_v2.load(mobilenet_checkpoint).eval()
    spec = load_graph_model(gm.export_pt2(model, tmp_path / "mobilenet_v2.pt2", 112))
    spec = dataclasses.replace(spec, preprocess=TORCH_IMAGENET)
    assert spec.logits_layer == "classifier.1"
    classes = [20, 379, 963]  # water ouzel, howler monkey, pizza
    config = RenderConfig(size=112, steps=48, octaves=1, batch=3)
    result = render(spec, spec.logits_layer, classes, config, progress=False)
    x = np.asarray(TORCH_IMAGENET(result.images)).transpose(0, 3, 1, 2)
    with torch.no_grad():
        top1 = model(torch.from_numpy(np.ascontiguousarray(x))).argmax(1).tolist()
    assert top1 == classes


class _Misc(torch.nn.Module):
    """Ops the zoo does not use: factories, normalize, pixel shuffle, PReLU, instance / group norm."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding="same")
        self.inorm = torch.nn.InstanceNorm2d(16, affine=True)
        self.prelu = torch.nn.PReLU(16)
        self.shuffle = torch.nn.PixelShuffle(2)
        self.gnorm = torch.nn.GroupNorm(2, 4)
        self.head = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, padding_mode="reflect")

    def forward(self, x):
        x = self.prelu(self.inorm(self.conv(x)))
        x = self.gnorm(self.shuffle(x)) + torch.ones_like(x[:, :4, :1, :1].repeat(1, 1, 2, 2).sum()) * 0.1
        x = self.head(x) * torch.arange(6, dtype=torch.float32).reshape(1, 6, 1, 1)
        return torch.nn.functional.normalize(x.flatten(1), dim=1)


def test_less_common_ops_match_torch(tmp_path):
    model = gm.randomize(_Misc())
    spec = load_graph_model(gm.export_pt2(model, tmp_path / "misc.pt2", 16))
    x = np.random.default_rng(4).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    expected = _hooked_modules(model, x)
    out = gm.apply_jitted(spec, x, tuple(expected) + ("output",))
    for name, value in expected.items():
        assert gm.relative_error(out[name], value) < 1e-4, name
    assert gm.relative_error(out["output"], gm.capture(model, x)[""]) < 1e-4

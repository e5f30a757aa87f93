"""The default job end to end: `jaxvis atlas` with no render options on the real MobileNetV2
`features.10` (so the fused FFT parameterization and the C++ warp run), judged by an independent
torch forward pass: each filter's image must excite its own channel more than the others' images do."""

import json

import numpy as np
import pytest
import torch
import torch_mobilenet_v2

from jaxvis.cli import main
from jaxvis.native import custom_calls
from jaxvis.output.files import load_image

FILTERS = [0, 1, 2, 3, 4, 5]
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


@pytest.mark.slow
def test_default_atlas_excites_its_own_channels(mobilenet_checkpoint, tmp_path):
    assert custom_calls.cpu_targets("spectral") and custom_calls.cpu_targets("warp"), (
        "the C++ custom calls are not built"
    )
    out = tmp_path / "atlas"
    assert main(["atlas", "--filters", f"{FILTERS[0]}-{FILTERS[-1]}", "--out", str(out), "--quiet", "--no-cache"]) == 0
    manifest = json.loads((out / "features.10" / "manifest.json").read_text())
    assert (
        manifest["config"]["param"] == "fft"
        and manifest["config"]["octaves"] == 2
        and manifest["config"]["size"] == 128
    )
    images = np.stack([load_image(out / "features.10" / f"filter_{i}.png") for i in FILTERS])  # as saved: 8-bit PNGs

    torch.manual_seed(0)
    model = torch_mobilenet_v2.load(mobilenet_checkpoint).eval()
    x = torch.from_numpy(((images - MEAN) / STD).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        maps = model.features[:11](x)  # torchvision's features.10 output
    response = maps.mean(dim=(2, 3)).numpy()[:, FILTERS]  # [image, filter]
    winners = response.argmax(axis=0)
    assert list(winners) == list(range(len(FILTERS))), response

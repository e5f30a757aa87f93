"""`jaxvis atlas --preset NAME`: flags given beside a preset replace its values; the manifest
records the preset and the full config; without --preset the CLI renders as it did before."""

import dataclasses
import json

from jaxvis.cli import build_parser, main
from jaxvis.cli.atlas import render_config as _render_config
from jaxvis.optvis.render import RenderConfig

TINY = ["--model", "tiny_cnn", "--layer", "conv2", "--batch", "2", "--quiet"]


def _config(*flags):
    return _render_config(build_parser().parse_args(["atlas", *flags]))


def test_without_a_preset_the_cli_keeps_its_defaults():
    assert _config() == RenderConfig() == RenderConfig.preset("lucid")  # no options: lucid, RenderConfig()'s defaults
    assert _config("--octaves", "1", "--lr", "0.1") == RenderConfig(octaves=1, learning_rate=0.1)


def test_flags_beside_a_preset_replace_its_values_and_nothing_else():
    config = _config("--preset", "fastai", "--octave-blur", "5", "--lr", "0.05", "--seed", "3")
    expected = dataclasses.replace(RenderConfig.preset("fastai"), octave_blur=5, learning_rate=0.05, seed=3)
    assert config == expected
    assert _config("--preset", "keras-vis", "--space", "input").space == "input"
    assert _config("--preset", "lucid") == RenderConfig()


def test_atlas_manifest_records_the_preset_and_the_full_config(tmp_path):
    args = [
        "atlas",
        *TINY,
        "--preset",
        "keras-vis",
        "--size",
        "24",
        "--steps",
        "3",
        "--filters",
        "0-1",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    layer = json.loads((tmp_path / "manifest.json").read_text())["layers"][0]
    assert layer["preset"] == "keras-vis"
    assert layer["config"]["preset_name"] == "keras-vis" and layer["config"]["optimizer"] == "keras-vis"
    assert (layer["config"]["size"], layer["config"]["steps"], layer["config"]["roll_jitter"]) == (24, 3, 16)

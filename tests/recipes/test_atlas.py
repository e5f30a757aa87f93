"""Atlas files, filter lists and resuming."""

import dataclasses
import json

import numpy as np
import pytest

from jaxvis.errors import JaxvisError
from jaxvis.models import load_model
from jaxvis.optvis.render import RenderConfig
from jaxvis.output import files
from jaxvis.recipes.atlas import parse_units, render_atlas

# The tiny_cnn atlas config of test_examples, test_page, test_cli and test_distributed too: their render
# programs are the same, compiled once per session (the persistent compilation cache). 12 steps over two
# octaves: the second octave runs both the redirected-ReLU steps (< 16) and the true-gradient ones.
CONFIG = RenderConfig(size=32, steps=12, batch=4)


def test_parse_units():
    assert parse_units("0-3,7, 9") == [0, 1, 2, 3, 7, 9]
    assert parse_units("all", 3) == [0, 1, 2]
    for bad in ("", "3-1", "a-b", "1;2"):
        with pytest.raises(JaxvisError):
            parse_units(bad)
    with pytest.raises(JaxvisError, match="16 channels"):
        parse_units("0-16", 16)


def test_atlas_writes_what_it_promises(tmp_path):
    spec = load_model("tiny_cnn")
    manifest = render_atlas(spec, "conv2", range(6), CONFIG, tmp_path, progress=False)
    assert (tmp_path / "conv2_grid.png").is_file()
    grid = files.load_image(tmp_path / "conv2_grid.png")
    assert grid.shape[0] > 2 * 32 and grid.shape[1] > 3 * 32
    atlas = json.loads((tmp_path / "manifest.json").read_text())
    assert [layer["layer"] for layer in atlas["layers"]] == ["conv2"]
    on_disk = json.loads((tmp_path / "conv2" / "manifest.json").read_text())
    assert on_disk == atlas["layers"][0]
    assert on_disk["config"]["seed"] == 0 and on_disk["layer"] == "conv2" and "jax" in on_disk["versions"]
    assert [f["index"] for f in on_disk["filters"]] == list(range(6))
    for record in manifest["filters"]:
        assert files.load_image(tmp_path / record["file"]).shape == (32, 32, 3)
        assert np.isfinite(record["score"])
    assert not list(tmp_path.rglob("*.tmp"))


def test_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    spec = load_model("tiny_cnn")
    render_atlas(spec, "conv2", range(4), CONFIG, tmp_path / "resumed", progress=False)
    second = render_atlas(spec, "conv2", range(8), CONFIG, tmp_path / "resumed", progress=False)
    assert second["rendered"] == 4 and second["resumed"] == 4
    render_atlas(spec, "conv2", range(8), CONFIG, tmp_path / "fresh", progress=False)
    for i in range(8):
        a = (tmp_path / "resumed" / "conv2" / f"filter_{i}.png").read_bytes()
        b = (tmp_path / "fresh" / "conv2" / f"filter_{i}.png").read_bytes()
        assert a == b, i
    assert (tmp_path / "resumed" / "conv2_grid.png").read_bytes() == (
        tmp_path / "fresh" / "conv2_grid.png"
    ).read_bytes()


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    spec = load_model("tiny_cnn")
    render_atlas(spec, "conv2", range(2), CONFIG, tmp_path, progress=False)
    with pytest.raises(JaxvisError, match="other settings"):
        render_atlas(spec, "conv2", range(2), dataclasses.replace(CONFIG, seed=3), tmp_path, progress=False)


def test_two_layers_share_one_atlas_manifest(tmp_path):
    spec = load_model("tiny_cnn")
    # conv3 and conv2 at CONFIG: programs other tests compile too (the session's compilation cache)
    render_atlas(spec, "conv3", range(2), CONFIG, tmp_path, progress=False)
    render_atlas(spec, "conv2", range(2), CONFIG, tmp_path, progress=False)
    atlas = json.loads((tmp_path / "manifest.json").read_text())
    assert [layer["layer"] for layer in atlas["layers"]] == ["conv2", "conv3"]  # the model's order


def test_grid_thumbnails_match_opencv_and_size_the_grid(tmp_path):
    import cv2

    from jaxvis.output.grids import grid_thumbnails

    rng = np.random.default_rng(0)
    tiles = rng.uniform(0, 1, (5, 48, 48, 3)).astype(np.float32)
    up = grid_thumbnails(tiles, 72)
    expected = np.stack([cv2.resize(t, (72, 72), interpolation=cv2.INTER_CUBIC) for t in tiles]).clip(0, 1)
    assert up.shape == (5, 72, 72, 3) and np.abs(up - expected).max() < 1e-4
    down = grid_thumbnails((tiles * 255).astype(np.uint8), 12)  # 4x smaller: blurred, then sampled
    assert down.shape == (5, 12, 12, 3) and down.dtype == np.float32
    assert down.std() < tiles.std() / 2  # noise averaged away, not aliased through
    assert np.abs(down.mean() - tiles.mean()) < 0.02
    with pytest.raises(JaxvisError, match="at least 1 pixel"):
        grid_thumbnails(tiles, 0)

    render_atlas(load_model("tiny_cnn"), "conv2", range(4), CONFIG, tmp_path, progress=False, grid_tile=16)
    small = files.load_image(tmp_path / "conv2_grid.png")
    render_atlas(load_model("tiny_cnn"), "conv2", range(4), CONFIG, tmp_path, progress=False)
    full = files.load_image(tmp_path / "conv2_grid.png")
    assert small.shape[1] < full.shape[1]
    assert files.load_image(tmp_path / "conv2" / "filter_0.png").shape == (32, 32, 3)

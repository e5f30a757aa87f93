"""The seed-recipe commands (dream, features, weights, cam): the files they promise, one-line errors.

Run on the tiny random CNN so that they take seconds; the real-weights behaviour is tested in
test_dream / test_features / test_weights / test_cam.
"""

import json

import cv2
import numpy as np
import pytest

from jaxvis.cli import main
from jaxvis.output import files

TINY = ["--model", "tiny_cnn"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory, sample_photos):
    """sklearn's china photo, shrunk to 48x64, as a PNG file."""
    path = tmp_path_factory.mktemp("photo") / "china.png"
    small = cv2.resize((sample_photos[0] * 255).astype(np.uint8), (64, 48), interpolation=cv2.INTER_AREA)
    files.save_image(path, small)
    return str(path)


def test_dream_writes_the_image_and_its_record(photo, tmp_path, capsys):
    out = tmp_path / "dream.png"
    args = [
        "dream",
        photo,
        *TINY,
        "--layers",
        "conv2",
        "--steps",
        "3",
        "--octaves=-1,0",
        "--tile-size",
        "0",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert files.load_image(out).shape == (48, 64, 3)
    record = json.loads((tmp_path / "dream.json").read_text())
    assert record["layers"] == ["conv2"] and len(record["octaves"]) == 2
    assert "dreamed" in capsys.readouterr().out


def test_features_writes_npy_png_and_manifest(photo, tmp_path):
    assert main(["features", *TINY, "--image", photo, "--layers", "conv1,conv3", "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "features.json").read_text())
    assert [r["layer"] for r in manifest["layers"]] == ["conv1", "conv3"]
    for record in manifest["layers"]:
        array = np.load(tmp_path / record["npy"], allow_pickle=False)
        assert list(array.shape) == record["shape"] and array.dtype == np.float32
        assert (tmp_path / record["png"]).is_file()


def test_weights_writes_table_histograms_and_kernels(tmp_path, capsys):
    assert main(["weights", *TINY, "--out", str(tmp_path), "--bins", "20"]) == 0
    tensors = [
        "conv1.kernel",
        "conv1.bias",
        "conv2.kernel",
        "conv2.bias",
        "conv3.kernel",
        "conv3.bias",
        "logits.kernel",
        "logits.bias",
    ]
    with open(tmp_path / "weights.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == tensors
    manifest = json.loads((tmp_path / "weights.json").read_text())
    assert manifest["bins"] == 20 and [t["name"] for t in manifest["tensors"]] == tensors
    assert (
        manifest["files"]["histograms"] == ["histograms_01.png"] and manifest["files"]["first_conv"] == "first_conv.png"
    )
    assert (
        files.load_image(tmp_path / "histograms_01.png").ndim == 3
        and files.load_image(tmp_path / "first_conv.png").ndim == 3
    )
    out = capsys.readouterr().out
    assert all(name in out for name in tensors) and "8 tensors of tiny_cnn" in out


@pytest.mark.parametrize("method", ["gradcam", "saliency", "guided"])
def test_cam_writes_a_figure_per_image(photo, tmp_path, method):
    assert main(["cam", photo, *TINY, "--class", "3", "--method", method, "--out", str(tmp_path)]) == 0
    stem = f"china_{method}_class3"
    expected = {f"{stem}.png", f"{stem}.npy", f"china_{method}.png", "cam.json"} | (
        {f"{stem}_gradient.png"} if method != "gradcam" else set()
    )
    assert {p.name for p in tmp_path.iterdir()} == expected
    manifest = json.loads((tmp_path / "cam.json").read_text())
    assert manifest["method"] == method and manifest["images"][0]["classes"][0]["class"] == 3
    heat = np.load(tmp_path / f"{stem}.npy")
    assert heat.shape == (48, 64) and 0 <= heat.min() and 0.5 < heat.max() <= 1  # at the photo's size
    assert files.load_image(tmp_path / f"{stem}.png").shape == (48, 64, 3)


@pytest.mark.parametrize("args,message", [
    (["dream", "missing.png", *TINY, "--layers", "conv2"], "missing.png"),
    (["dream", "{photo}", *TINY, "--layers", "conv9"], "valid: conv1, conv2, conv3, logits"),
    (["dream", "{photo}", *TINY, "--layers", "conv2", "--steps", "x"], "--steps"),
    (["features", *TINY, "--image", "missing.png"], "missing.png"),
    (["features", *TINY, "--image", "{photo}", "--layers", "nope"], "nope"),
    (["cam", "{photo}", *TINY, "--class", "10"], "class 10 is out of range: logits has 10 classes (0-9)"),
    (["cam", "missing.png", *TINY], "missing.png"),
    (["weights", "--model", "nope"], "unknown model"),
])
def test_bad_input_is_one_line_and_exit_2(photo, tmp_path, capsys, args, message):
    args = [a.replace("{photo}", photo) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / ("out.png" if args[0] == "dream" else "out"))]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err

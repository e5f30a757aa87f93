"""Dataset examples: the top patches are where the units really fire most (checked by brute force)."""

import shutil

import cv2
import numpy as np
import pytest

from jaxvis.cli import main
from jaxvis.errors import JaxvisError
from jaxvis.models import load_model
from jaxvis.optvis.render import RenderConfig
from jaxvis.output import files
from jaxvis.recipes.atlas import render_atlas
from jaxvis.recipes.examples import dataset_examples, find_top_examples, patch_box

SIZE = 64  # images are resized to 64x64: conv2 of tiny_cnn is then a 32x32 map


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Eight crops / flips of sklearn's china and flower photos, of different sizes, jpg and png."""
    from sklearn.datasets import load_sample_images

    folder = tmp_path_factory.mktemp("photos")
    (folder / "sub").mkdir()
    for i, image in enumerate(load_sample_images().images):
        variants = [image, image[::-1], image[:, ::-1, :][:300, 100:500], image[100:400, 200:640:2]]
        for j, variant in enumerate(variants):
            name = (folder / "sub" if j == 3 else folder) / f"photo_{i}_{j}.{'png' if j % 2 else 'jpg'}"
            cv2.imwrite(str(name), np.ascontiguousarray(variant[:, :, ::-1]))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas")
    spec = load_model("tiny_cnn")
    config = RenderConfig(size=32, steps=12, batch=4)  # test_atlas.CONFIG: its programs, compiled once
    render_atlas(spec, "conv2", range(8), config, out, progress=False)
    render_atlas(spec, "logits", range(3), config, out, progress=False)
    return out


@pytest.fixture
def atlas(rendered, tmp_path):
    shutil.copytree(rendered, tmp_path / "atlas")
    return tmp_path / "atlas"


def brute_force(spec, layer, photos):
    """Every image resized as the search does, all activations at once in NumPy: [N, h, w, C]."""
    paths = sorted(p for p in photos.rglob("*") if p.suffix in (".jpg", ".png"))
    images = np.stack([cv2.resize(files.load_image(p), (SIZE, SIZE), interpolation=cv2.INTER_AREA) for p in paths])
    acts = np.asarray(spec.activations(images, [layer])[layer])
    return paths, images, acts if acts.ndim == 4 else acts[:, None, None, :]


@pytest.mark.parametrize("layer", ["conv2", "logits"])
def test_top_example_is_the_true_maximum(atlas, photos, layer):
    spec = load_model("tiny_cnn")
    manifest = dataset_examples(spec, layer, None, photos, atlas, top=3, size=SIZE, batch=3, progress=False)
    paths, images, acts = brute_force(spec, layer, photos)
    n, h, w, _ = acts.shape
    assert manifest["examples_settings"]["count"] == len(paths) == 8 and manifest["examples_settings"]["map_shape"] == [
        h,
        w,
    ]
    for record in manifest["filters"]:
        unit, examples = record["index"], record["examples"]
        channel = acts[..., unit]
        per_image = channel.reshape(n, -1).max(axis=1)
        assert len(examples) == 3
        np.testing.assert_allclose(
            [e["activation"] for e in examples], np.sort(per_image)[::-1][:3], rtol=1e-4, atol=1e-5
        )
        top = examples[0]
        index = [p.relative_to(photos).as_posix() for p in paths].index(top["image"])
        # the recorded image and position hold the largest activation of the whole folder
        assert channel[index, top["y"], top["x"]] >= channel.max() - 1e-5 * max(1.0, abs(channel.max()))
        flat = np.unravel_index(np.argmax(channel), channel.shape)
        assert (index, top["y"], top["x"]) == tuple(int(v) for v in flat)
        # the patch file is exactly that region of the resized image
        t, left, ph, pw = top["box"]
        if (h, w) == (1, 1):  # a dense layer: the whole image
            assert (t, left, ph, pw) == (0, 0, SIZE, SIZE)
        else:  # a third of the image, inside it, centred (to half a pixel) on the cell's centre unless at a border
            assert ph == pw == round(SIZE / 3)
            for start, centre in ((t, (top["y"] + 0.5) * SIZE / h), (left, (top["x"] + 0.5) * SIZE / w)):
                assert 0 <= start <= SIZE - ph and start <= centre <= start + ph
                assert abs(start + ph / 2 - centre) <= 0.5 or start in (0, SIZE - ph), (top, centre)
        np.testing.assert_array_equal(
            files.to_uint8(files.load_image(atlas / top["file"])),
            files.to_uint8(images[index, t : t + ph, left : left + pw]),
        )
    on_disk = files.read_json(atlas / "manifest.json")["layers"]
    assert [layer_manifest["layer"] for layer_manifest in on_disk] == ["conv2", "logits"]
    assert (
        on_disk[[m["layer"] for m in on_disk].index(layer)]
        == files.read_json(atlas / layer / "manifest.json")
        == manifest
    )
    assert not list(atlas.rglob("*.tmp"))


def test_batching_does_not_change_the_result(photos):
    spec = load_model("tiny_cnn")
    one = find_top_examples(spec, "conv2", [0, 5, 7], photos, top=4, size=SIZE, batch=8)
    many = find_top_examples(spec, "conv2", [0, 5, 7], photos, top=4, size=SIZE, batch=3)
    np.testing.assert_array_equal(one.images, many.images)
    np.testing.assert_array_equal(one.positions, many.positions)
    np.testing.assert_allclose(one.values, many.values, rtol=1e-5)
    assert one.values.shape == (4, 3) and np.all(np.diff(one.values, axis=0) <= 0)


def test_patch_box_is_centred_and_stays_inside():
    assert patch_box(0, (32, 32), (64, 64), 21) == (0, 0, 21, 21)  # shifted inside at the corner
    assert patch_box(16 * 32 + 16, (32, 32), (64, 64), 21) == (23, 23, 21, 21)  # centre 33 -> 33 - 10.5
    assert patch_box(32 * 32 - 1, (32, 32), (64, 64), 21) == (43, 43, 21, 21)
    assert patch_box(0, (1, 1), (64, 48), 21) == (0, 0, 64, 48)  # dense layer: the whole image
    assert patch_box(5, (4, 4), (16, 16), 99) == (0, 0, 16, 16)


def test_fewer_top_on_a_rerun_removes_stale_patches(atlas, photos):
    spec = load_model("tiny_cnn")
    dataset_examples(spec, "conv2", [1, 2], photos, atlas, top=4, size=SIZE, progress=False)
    manifest = dataset_examples(spec, "conv2", [1, 2], photos, atlas, top=2, size=SIZE, progress=False)
    assert sorted(p.name for p in (atlas / "conv2" / "examples").iterdir()) == [
        f"filter_{u}_{r}.png" for u in (1, 2) for r in (0, 1)
    ]
    assert [len(f.get("examples", [])) for f in manifest["filters"]] == [0, 2, 2, 0, 0, 0, 0, 0]


def test_unreadable_files_are_skipped_and_counted(atlas, photos, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(photos, mixed)
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    manifest = dataset_examples(load_model("tiny_cnn"), "conv2", [0], mixed, atlas, top=2, size=SIZE, progress=False)
    assert manifest["examples_settings"]["count"] == 8 and manifest["examples_settings"]["skipped"] == 1
    assert "skipped 1 unreadable" in capsys.readouterr().err


def _folder(tmp_path, kind):
    folder = tmp_path / kind
    if kind == "missing":
        return folder
    if kind == "a_file":
        folder.write_text("x")
        return folder
    folder.mkdir()
    if kind == "no_images":
        (folder / "readme.txt").write_text("x")
        (folder / ".hidden.png").write_bytes(b"x")
    if kind == "all_broken":
        (folder / "a.png").write_bytes(b"\x89PNG broken")
        (folder / "b.jpg").write_bytes(b"")
    return folder


@pytest.mark.parametrize("kind,message", [
    ("missing", "image folder not found"),
    ("a_file", "not a folder"),
    ("empty", "no JPEG/PNG images in"),
    ("no_images", "no JPEG/PNG images in"),
    ("all_broken", "none of the 2 image files"),
])
def test_bad_folders_are_one_line_errors(atlas, tmp_path, capsys, kind, message):
    folder = _folder(tmp_path, kind)
    with pytest.raises(JaxvisError, match=message):
        dataset_examples(load_model("tiny_cnn"), "conv2", None, folder, atlas, progress=False)
    args = [
        "examples",
        "--model",
        "tiny_cnn",
        "--layer",
        "conv2",
        "--images",
        str(folder),
        "--out",
        str(atlas),
        "--quiet",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert "examples" not in files.read_json(atlas / "conv2" / "manifest.json")["filters"][0]  # nothing half-recorded


def test_examples_need_the_layer_and_filters_in_the_atlas(atlas, photos, tmp_path, capsys):
    spec = load_model("tiny_cnn")
    with pytest.raises(JaxvisError, match="no atlas of layer conv3"):
        dataset_examples(spec, "conv3", None, photos, atlas, progress=False)
    with pytest.raises(JaxvisError, match="filters 9 of conv2 are not in the atlas"):
        dataset_examples(spec, "conv2", [1, 9], photos, atlas, progress=False)
    with pytest.raises(JaxvisError, match="atlas .* is of model tiny_cnn"):
        dataset_examples(load_model("tiny_cnn", seed=1), "conv2", None, photos, atlas, progress=False)
    assert (
        main(["examples", "--model", "tiny_cnn", "--layer", "conv3", "--images", str(photos), "--out", str(tmp_path)])
        == 2
    )
    assert "render it first" in capsys.readouterr().err


def test_cli_writes_examples_and_updates_the_page(atlas, photos, capsys):
    assert main(["page", str(atlas)]) == 0
    args = ["examples", "--model", "tiny_cnn", "--layer", "conv2", "--filters", "0-1", "--images", str(photos),
            "--top", "2", "--size", str(SIZE), "--out", str(atlas), "--quiet"]
    assert main(args) == 0
    assert "page updated" in capsys.readouterr().out
    assert sorted(p.name for p in (atlas / "conv2" / "examples").iterdir()) == [
        f"filter_{u}_{r}.png" for u in (0, 1) for r in (0, 1)
    ]
    assert "conv2/examples/filter_1_1.png" in (atlas / "index.html").read_text()

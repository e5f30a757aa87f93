"""The command line: files it promises, reproducibility, one-line errors."""

import os
import sys

import pytest

from jaxvis.cli import main

# tests/recipes/test_atlas.py CONFIG (size 32, 12 steps, 2 octaves, batch 4): the same conv2 programs, compiled once
# per session (the persistent compilation cache).
TINY = [
    "--model",
    "tiny_cnn",
    "--layer",
    "conv2",
    "--size",
    "32",
    "--steps",
    "12",
    "--octaves",
    "2",
    "--batch",
    "4",
    "--quiet",
]


def test_atlas_twice_with_the_same_seed_gives_identical_images(tmp_path):
    for name in ("a", "b"):
        assert main(["atlas", *TINY, "--filters", "0-5", "--out", str(tmp_path / name)]) == 0
    for i in range(6):
        assert (tmp_path / "a" / "conv2" / f"filter_{i}.png").read_bytes() == (
            tmp_path / "b" / "conv2" / f"filter_{i}.png"
        ).read_bytes()
    assert (tmp_path / "a" / "conv2_grid.png").is_file() and (tmp_path / "a" / "manifest.json").is_file()


def test_models_and_layers(capsys):
    assert main(["models"]) == 0
    assert "tiny_cnn" in capsys.readouterr().out
    assert main(["layers", "tiny_cnn"]) == 0
    out = capsys.readouterr().out
    assert "conv2" in out and "(16, 16, 16)" in out


def test_output_into_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    """`jaxvis layers M | head`: the reader is gone before the table is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        assert main(["layers", "tiny_cnn"]) == 141
        closed_pipe.write("flushing at exit must not fail either\n")
        closed_pipe.flush()
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["atlas", "--model", "nope"], "unknown model (a zoo name or a model file) 'nope'; valid:"),
    (["atlas", *TINY, "--layer", "conv7"], "valid: conv1, conv2, conv3, logits"),
    (["atlas", *TINY, "--filters", "0-99"], "16 channels"),
    (["atlas", *TINY, "--size", "-4"], "size"),
    (["atlas", *TINY, "--steps", "0"], "steps"),
    (["atlas", *TINY, "--init-range", "x"], "init-range"),
    (["layers", "nope"], "unknown model"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path)] if args[0] == "atlas" else args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and len(err.splitlines()) == 1


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["atlas", *TINY, "--out", str(blocker / "sub")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_atlas_run_loads_its_programs_from_the_compilation_cache(tmp_path):
    """Two processes, one `--cache-dir`: the second compiles (XLA backend compile) nothing and loads
    every program from the cache; the images are the same bytes."""
    import json
    import subprocess

    env = {**os.environ, "JAXVIS_CACHE_DIR": str(tmp_path / "unused")}  # --cache-dir wins over the variable
    manifests = []
    for name in ("cold", "cached"):
        command = [sys.executable, "-m", "jaxvis.cli", "atlas", *TINY, "--steps", "6", "--octaves", "1",
                   "--filters", "0-3", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / name)]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        manifests.append(json.loads((tmp_path / name / "manifest.json").read_text())["layers"][0])
    cold, cached = manifests
    assert any((tmp_path / "cache").iterdir()) and not (tmp_path / "unused").exists()
    assert cold["cache_load_seconds"] == 0 and cached["cache_load_seconds"] > 0
    assert cached["compile_seconds"] < 0.5 * cold["compile_seconds"], (cold, cached)
    for i in range(4):
        assert (tmp_path / "cold" / "conv2" / f"filter_{i}.png").read_bytes() == (
            tmp_path / "cached" / "conv2" / f"filter_{i}.png").read_bytes()

"""The prepared GPU check: correctness tests, the published VGG16 comparison, a whole-model atlas, `jaxvis bench`.

Run through `benchmarks/gpu_check.sh` (one call on a lent GPU; `--smoke` runs the same code paths at
toy sizes on the CPU, and the test suite does so). Parts, each timed and written to one JSON file
(`benchmarks/results/gpu_check.json`, or `--out`):

1. `tests`: the tests whose code paths differ on GPU (conv formulations, render, parameterizations,
   transforms) — skipped with `--smoke`, which itself runs inside the tests;
2. `block5_conv3`: Keras VGG16 `block5_conv3`, all 512 filters at 224 px x 200 steps, one octave,
   f32 and bf16 (tf-keras-vis's published GPU figure is 8.5 s per filter; target here <= 30 s total);
3. `vgg16_conv_atlas`: every filter of every conv layer of Keras VGG16 (4,224) at the default atlas
   settings (target <= 5 min);
4. `bench`: `jaxvis bench` on three zoo models (target: >= 40% of the bf16 dot peak in conv layers).
Random Keras-default weights: the speed does not depend on them and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results  # benchmarks/_results.py: print and write benchmarks/results/<name>.json

ROOT = Path(__file__).resolve().parents[1]
GPU_TESTS = ["tests/models/test_layers.py", "tests/optvis", "tests/models/torchvision/test_mobilenet_v2.py"]


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - start, 2)


def part_tests() -> dict:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *GPU_TESTS], cwd=ROOT, capture_output=True,
                            text=True)
    return {"passed": result.returncode == 0, "summary": result.stdout.strip().splitlines()[-1:]}


def part_block5(smoke: bool, out_dir: str) -> dict:
    from jaxvis.models import load_model
    from jaxvis.optvis.render import RenderConfig
    from jaxvis.recipes.atlas import render_atlas

    # smoke: the same render_atlas path on the tiny model (compiling VGG16 twice costs minutes on a CPU)
    spec = load_model("tiny_cnn") if smoke else load_model("keras_vgg16", include_top=False)
    layer = "conv3" if smoke else "block5_conv3"
    filters = range(4) if smoke else range(512)
    runs = {}
    for precision in ("f32", "bf16"):
        config = RenderConfig(size=32 if smoke else 224, steps=2 if smoke else 200, octaves=1, precision=precision,
                              batch=4 if smoke else 128)
        manifest, seconds = _timed(lambda: render_atlas(spec, layer, filters, config,
                                                        os.path.join(out_dir, f"block5_{precision}"), progress=False))
        runs[precision] = {
            "filters": len(filters),
            "seconds": seconds,
            "seconds_per_filter": round(seconds / len(filters), 4),
            "compile_seconds": manifest["compile_seconds"],
            "batch": config.batch,
        }
    return runs


def _cli(args: list[str]) -> str:
    """Run `jaxvis ARGS` in this process (one start-up and one JAX runtime for every part); its stdout."""
    from jaxvis.cli import main as jaxvis_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = jaxvis_main(args)
    if code:
        raise SystemExit(f"jaxvis {' '.join(args)} failed ({code}):\n{err.getvalue()[-3000:]}")
    return out.getvalue()


def part_conv_atlas(smoke: bool, out_dir: str) -> dict:
    args = ["atlas", "--quiet", "--out", os.path.join(out_dir, "vgg16_atlas")]
    # smoke: the same whole-model CLI path on the tiny model (a random VGG16 with its classifier is 138M weights);
    # one octave, so that conv3's render is block5's f32 program (a compilation cache hit, not a compile)
    args += ["--model", "tiny_cnn", "--layers", "conv2,conv3", "--filters", "0-3", "--size", "32", "--steps", "2",
             "--octaves", "1"] if smoke else ["--model", "keras_vgg16", "--layers", "block*_conv*"]
    _, seconds = _timed(lambda: _cli(args))
    manifest = json.loads(Path(out_dir, "vgg16_atlas", "manifest.json").read_text())
    filters = sum(len(layer["filters"]) for layer in manifest["layers"])
    return {"layers": len(manifest["layers"]), "filters": filters, "seconds": seconds,
            "filters_per_s": round(filters / seconds, 2)}


def part_bench(smoke: bool) -> list:
    models = ["tiny_cnn"] if smoke else ["keras_vgg16", "resnet50", "mobilenet_v2"]
    rows = []
    for model in models:
        for precision in ("f32", "bf16"):
            args = ["--model", model, "--precision", precision, "--json"]
            # smoke: block5's chunk (tiny_cnn conv3, 4 filters, 32 px, 2 steps), so the render is a cache hit
            args += ["--batch", "4", "--size", "32", "--steps", "2"] if smoke else ["--batch", "64", "--size", "224"]
            rows.append(json.loads(_cli(["bench", *args])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="toy sizes on the CPU: the same code paths, seconds not minutes"
    )
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/gpu_check.json)")
    args = parser.parse_args()
    result = {"smoke": args.smoke}
    if args.smoke:  # as the CLI does: the persistent compilation cache (the test session's, via JAXVIS_CACHE_DIR)
        from jaxvis.optvis import compile_cache

        compile_cache.enable()
    with tempfile.TemporaryDirectory() as out_dir:
        if not args.smoke:
            result["tests"], result["tests_seconds"] = _timed(part_tests)
        result["block5_conv3"], result["block5_conv3_seconds"] = _timed(lambda: part_block5(args.smoke, out_dir))
        result["vgg16_conv_atlas"] = part_conv_atlas(args.smoke, out_dir)
        result["bench"], result["bench_seconds"] = _timed(lambda: part_bench(args.smoke))
    _results.write("gpu_check_smoke" if args.smoke else "gpu_check", result, out=args.out)


if __name__ == "__main__":
    main()

"""The generic graph executor against the zoo: a ResNet50 imported from `.pt2` and the zoo's `resnet50`.

Both get the same random weights (tests/support/torch_zoo_reference.py's torchvision-layout ResNet50:
`torch.save` of its state_dict for the zoo, `torch.export.save` of the exported program for the
graph front-end) and do the same work: `render(spec, "layer3", units 0..batch-1,
RenderConfig(size, steps, batch, octaves=1))`, the render's defaults otherwise. Each is run once
(compilation) and then `--repeats` times, taking turns; the ratio of medians is the executor's
cost (target <= 1.1). Loading: `load_model(file.pt2)` (reading, lowering, weights on the device)
against merely reading the file's bytes, page cache warm, best and median of `--repeats` each
(target <= 2). The two specs' `layer3` activations on one batch are compared too (max relative
difference), so the timed programs are known to compute the same thing.

    python benchmarks/bench_graph.py [--repeats 3] [--steps 64] [--batch 8] [--size 128]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import _results  # benchmarks/_results.py: print and write benchmarks/results/<name>.json
import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxvis.models.load import load_model
from jaxvis.optvis.render import RenderConfig, render

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))  # the torch reference modules are test fixtures

LAYER = "layer3"


def write_files(folder: pathlib.Path, size: int) -> tuple[pathlib.Path, pathlib.Path]:
    """(`resnet50.pth`, `resnet50.pt2`) of one randomly initialized torchvision-layout ResNet50."""
    import torch_zoo_reference as zoo

    torch.manual_seed(0)
    model = zoo.resnet50().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as trained weights have
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    pth, pt2 = folder / "resnet50.pth", folder / "resnet50.pt2"
    torch.save(model.state_dict(), pth)
    program = torch.export.export(model, (torch.zeros(1, 3, size, size),))
    torch.export.save(program, pt2)
    return pth, pt2


def read_bytes(path: pathlib.Path) -> int:
    with open(path, "rb") as f:
        return len(f.read())


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads while exporting")
    parser.add_argument("--out", default=None, help="where to write the JSON (default: results/bench_graph.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        pth, pt2 = write_files(pathlib.Path(tmp), args.size)
        read_bytes(pt2)  # page cache warm for both
        load_s = timed(lambda: jax.block_until_ready(load_model(pt2, preprocess="torch").variables), args.repeats)
        read_s = timed(lambda: read_bytes(pt2), args.repeats)
        file_bytes = pt2.stat().st_size
        zoo = load_model("resnet50", weights=pth)
        graph = load_model(pt2, preprocess="torch")

    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, args.size, args.size, 3)), jnp.float32)
    want = np.asarray(zoo.apply_preprocessed(x, (LAYER,))[LAYER])
    got = np.asarray(graph.apply_preprocessed(x, (LAYER,))[LAYER])
    agreement = float(np.abs(got - want).max() / np.abs(want).max())

    config = RenderConfig(size=args.size, steps=args.steps, batch=args.batch, octaves=1)
    units = np.arange(args.batch)
    runs = {name: (lambda spec=spec: jax.block_until_ready(render(spec, LAYER, units, config, progress=False).images))
            for name, spec in (("zoo", zoo), ("graph", graph))}
    compile_s = {name: timed(run, 1)[0] for name, run in runs.items()}  # the first run compiles
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].extend(timed(run, 1))
    median = {name: statistics.median(t) for name, t in times.items()}
    _results.write("bench_graph", {
        "settings": {"layer": LAYER, "batch": args.batch, "size": args.size, "steps": args.steps, "octaves": 1,
                     "repeats": args.repeats},
        "file_mb": round(file_bytes / 1e6, 1),
        "load_s": [round(t, 3) for t in load_s], "read_s": [round(t, 4) for t in read_s],
        "load_over_read_median": round(statistics.median(load_s) / statistics.median(read_s), 2),
        "load_over_read_best": round(min(load_s) / min(read_s), 2),
        "layer3_max_relative_difference": agreement,
        "first_run_s": {k: round(v, 2) for k, v in compile_s.items()},
        "render_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "graph_over_zoo_median": round(median["graph"] / median["zoo"], 3),
        "graph_over_zoo_best": round(min(times["graph"]) / min(times["zoo"]), 3),
    }, out=args.out)


if __name__ == "__main__":
    main()

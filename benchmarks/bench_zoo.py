"""Every zoo architecture at a mid-depth layer: jaxvis's default render against bare PyTorch, same run.

jaxvis: `jaxvis.optvis.render.render(spec, layer, units, RenderConfig(size, steps, batch, octaves=1))`,
random weights, everything else at its default (FFT param, decorrelation, transforms). PyTorch:
the bare floor of any torch-based tool -- the reference module (tests/torch_zoo_reference.py,
tests/torch_mobilenet_v2.py) cut at the same layer, pixel images, forward + input gradient + Adam,
`steps` steps, no parameterization and no transforms, `torch.set_num_threads(threads)`.

Work: XLA's cost analysis of one forward + input-gradient step through the trunk with every conv
as `lax.conv` (the direct-convolution count, the same work torch does); GFLOP/s = that x steps /
seconds. The dot peak is a jitted 2048x2048 float32 matmul in the same run. Winograd convs do fewer
multiply-adds than the direct count, so a "% of dot peak" above 100 is possible and not an error.

Each timing is the median of `--repeats` runs after one warm-up run outside the timed region
(compilation included there); jaxvis and torch take turns, so a busy machine slows them alike.
Prints one JSON object and writes it to benchmarks/results/bench_zoo.json (`--out`).

    python benchmarks/bench_zoo.py [--models vgg16,resnet18] [--steps 64] [--repeats 3] [--compare-impl lax]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxvis.models.load import load_model
from jaxvis.optvis.render import RenderConfig, render

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))  # the torch reference modules are test fixtures

# model -> (layer rendered, reference builder); one mid-depth layer each
MODELS = {
    "vgg16": "features.22",
    "vgg19": "features.26",
    "alexnet": "features.8",
    "resnet18": "layer3",
    "resnet34": "layer3",
    "resnet50": "layer3",
    "googlenet": "inception4c",
    "inception_v3": "Mixed_6b",
    "mobilenet_v2": "features.10",
}


def torch_reference(name: str) -> torch.nn.Module:
    import torch_zoo_reference as zoo

    if name == "mobilenet_v2":
        import torch_mobilenet_v2

        model = torch_mobilenet_v2.MobileNetV2()
    elif name == "googlenet":
        model = zoo.GoogLeNet(aux_logits=False, transform_input=False)
    elif name == "inception_v3":
        model = zoo.Inception3(aux_logits=False, transform_input=False)
    elif name == "alexnet":
        model = zoo.AlexNet()
    else:
        model = getattr(zoo, name)()
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class _Stop(Exception):
    pass


def torch_loop(name: str, layer: str, units, *, batch: int, size: int, steps: int):
    """A function running `steps` Adam steps on pixel images to maximize channel `units[b]` of `layer`."""
    model = torch_reference(name)
    captured = {}

    def hook(module, inputs, output):
        captured["act"] = output
        raise _Stop  # the trunk ends here, as jaxvis's `outputs=(layer,)` does

    dict(model.named_modules())[layer].register_forward_hook(hook)
    index = torch.as_tensor(np.asarray(units), dtype=torch.long)

    def run():
        x = torch.rand(batch, 3, size, size, requires_grad=True)
        optimizer = torch.optim.Adam([x], lr=0.05)
        for _ in range(steps):
            optimizer.zero_grad()
            try:
                model(x)
            except _Stop:
                pass
            act = captured.pop("act")
            loss = -act[torch.arange(batch), index].mean(dim=(-2, -1)).sum()
            loss.backward()
            optimizer.step()
        return x.detach()

    return run


def step_gflop(spec, layer: str, batch: int, size: int) -> float:
    """XLA's flop count of one forward + input-gradient step with every conv as lax.conv."""
    module = spec.module.clone(conv_impl="lax")

    def loss(x):
        return -module.apply(spec.variables, x, outputs=(layer,))[layer][..., 0].mean()

    x = jnp.zeros((batch, size, size, spec.channels), jnp.float32)
    cost = jax.jit(jax.grad(loss)).lower(x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / 1e9


def dot_peak(repeats: int = 10) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    jax.block_until_ready(matmul(a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a))
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / statistics.median(times) / 1e9


def bench_model(name: str, layer: str, args, peak: float) -> dict:
    spec = load_model(name, conv_impl=args.conv_impl)
    config = RenderConfig(size=args.size, steps=args.steps, batch=args.batch, octaves=1)
    units = np.arange(args.batch)

    def jaxvis_run(spec):
        return lambda: jax.block_until_ready(render(spec, layer, units, config, progress=False).images)

    runs = {"jaxvis": jaxvis_run(spec),
            "torch": torch_loop(name, layer, units, batch=args.batch, size=args.size, steps=args.steps)}
    if args.compare_impl:
        runs[f"jaxvis_{args.compare_impl}"] = jaxvis_run(load_model(name, conv_impl=args.compare_impl))
    times = {key: [] for key in runs}
    for run in runs.values():  # warm-up: compilation and first-touch outside the timed region
        run()
    for _ in range(args.repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    gflop = step_gflop(spec, layer, args.batch, args.size)
    jaxvis_s, torch_s = (statistics.median(times[key]) for key in ("jaxvis", "torch"))
    gflops = gflop * args.steps / jaxvis_s
    return {
        "layer": layer,
        "jaxvis_s_per_filter": round(jaxvis_s / args.batch, 4),
        "torch_s_per_filter": round(torch_s / args.batch, 4),
        "ratio_jaxvis_to_torch": round(jaxvis_s / torch_s, 3),
        "gflop_per_step": round(gflop, 2),
        "jaxvis_gflops": round(gflops, 1),
        "torch_gflops": round(gflop * args.steps / torch_s, 1),
        "jaxvis_pct_of_dot_peak": round(100 * gflops / peak, 1),
        **{f"{key}_s_runs": [round(t, 3) for t in runs_s] for key, runs_s in times.items()},
        **{f"{key}_s_per_filter": round(statistics.median(times[key]) / args.batch, 4)
           for key in times if key not in ("jaxvis", "torch")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--conv-impl", default="auto", help="jaxvis conv formulation (auto, lax, taps, winograd)")
    parser.add_argument("--compare-impl", default="", help="also time jaxvis with this conv formulation (e.g. lax)")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_zoo.json"), help="'' to skip writing")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; valid: {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)

    result = {
        "benchmark": "bench_zoo",
        "device": str(jax.devices()[0]), "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),  # other processes skew timings
        "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "settings": {"batch": args.batch, "size": args.size, "steps": args.steps, "octaves": 1,
                     "repeats": args.repeats, "torch_threads": args.threads, "conv_impl": args.conv_impl,
                     "compare_impl": args.compare_impl or None},
    }
    peak = dot_peak()
    result["dot_peak_gflops_at_start"] = round(peak, 1)
    result["models"] = {}
    for name in names:  # the file is rewritten after each model, so a long run can be cut short
        result["models"][name] = bench_model(name, MODELS[name], args, peak)
        print(json.dumps({name: result["models"][name]}), file=sys.stderr, flush=True)
        _write(result, args.out)
    result["dot_peak_gflops_at_end"] = round(dot_peak(), 1)
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))
    _write(result, args.out)


def _write(result: dict, path: str) -> None:
    if path:
        out = pathlib.Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

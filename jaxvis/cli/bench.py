"""`jaxvis bench`: how fast renders run on this device (filters/s, compile time, GFLOP/s, share of dot peak)."""

from __future__ import annotations

import json

from jaxvis.cli.options import add_cache_options, add_model_options, default_of, load_model_from, number

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    from jaxvis.optvis.render import PRECISIONS, RenderConfig

    bench = sub.add_parser("bench", help="benchmark the render of one chunk of filters on this device")
    add_model_options(bench)
    add_cache_options(bench)
    bench.add_argument("--layer", default=None, help="layer (default: as `jaxvis atlas`)")
    bench.add_argument("--batch", default=str(default_of(RenderConfig, "batch")), help="filters per compiled chunk")
    bench.add_argument("--size", default=str(default_of(RenderConfig, "size")), help="image size in pixels")
    bench.add_argument("--steps", default=str(default_of(RenderConfig, "steps")), help="steps per octave")
    bench.add_argument("--octaves", default="1", help="octaves (default 1: one program, steady-state speed)")
    bench.add_argument("--precision", default=default_of(RenderConfig, "precision"), choices=list(PRECISIONS))
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(run=run)


def run(args) -> None:
    from jaxvis.cli.atlas import DEFAULT_LAYER
    from jaxvis.optvis.render import RenderConfig
    from jaxvis.recipes.bench import bench

    config = RenderConfig(
        batch=number(args.batch, "--batch", int, 1, 4096),
        size=number(args.size, "--size", int, 8, 4096),
        steps=number(args.steps, "--steps", int, 1, 100_000),
        octaves=number(args.octaves, "--octaves", int, 1, 64),
        precision=args.precision,
    ).validate()
    spec = load_model_from(args)
    layer = args.layer or (
        DEFAULT_LAYER if DEFAULT_LAYER in spec.layer_names else spec.layer_names[len(spec.layer_names) // 2]
    )
    spec.check_layers([layer])
    result = bench(spec, layer, config).as_dict()
    if args.json:
        print(json.dumps(result, indent=1))
        return
    rows = [
        ("model", result["model"]),
        ("layer", result["layer"]),
        ("device", result["device"]),
        ("batch x size x steps", f"{config.batch} x {config.size} px x {config.steps} ({config.precision})"),
        ("filters / s (warm)", f"{result['filters_per_s']:.2f}"),
        ("first run (s)", f"{result['first_run_s']:.1f}"),
        ("compile (s)", f"{result['compile_s']:.1f}"),
        ("GFLOP per step", f"{result['gflop_per_step']:.1f}"),
        ("GFLOP / s", f"{result['gflop_per_s']:.1f}"),
        ("dot peak GFLOP / s", f"{result['dot_peak_gflop_per_s']:.1f}"),
        ("fraction of dot peak", f"{result['fraction_of_peak']:.0%}"),
    ]
    for name, value in rows:
        print(f"{name:24s} {value}")

"""Filters per second of the default atlas job, against the bare gradient work it cannot avoid.

The default job is `jaxvis atlas` with no options: every filter of features.10 of MobileNetV2
(torchvision ImageNet weights), the CLI's default render settings. The bare cost is the same number
of forward + input-gradient backward passes through the same truncated network, at the same batch
and image size, in one jitted `lax.scan`, with nothing else (no parameterization, transforms,
optimizer or octave bookkeeping). Both are compiled first and then timed in the same run, `--repeats`
times each, interleaved; the ratio of medians is the engine's overhead (`overhead_ratio`). On a
noisy machine two more estimates of the same ratio are steadier and are printed beside it: the
median of each repeat's atlas time over the bare time measured right after it
(`overhead_ratio_paired_median`), and the ratio of the fastest repeats (`overhead_ratio_best`).
The first run of each, compilation included, gives `overhead_ratio_cold`. Prints JSON.

    python benchmarks/bench_render.py [--layer features.10] [--filters 0-63] [--repeats 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import _results  # benchmarks/_results.py: print and write benchmarks/results/<name>.json
import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.cli import build_parser
from jaxvis.cli.atlas import DEFAULT_LAYER, render_config
from jaxvis.models import DEFAULT_MODEL, load_model
from jaxvis.optvis.render import render
from jaxvis.recipes.atlas import parse_units


def bare_gradient_passes(spec, layer: str, batch: int, size: int, steps: int):
    """A jitted function doing `steps` forward + input-gradient passes on a [batch, size, size, C] batch.

    The weights are an argument, as in the render's programs: closed over, XLA embeds them as
    constants, which measured ~3% slower per step and ~10 ms more per call (a flattering baseline)."""

    def score(variables, images, units):
        acts = spec.module.apply(variables, spec.preprocess(images), outputs=(layer,))[layer]
        return jnp.sum(jnp.take_along_axis(acts.mean(axis=(1, 2)), units[:, None], axis=1))

    @jax.jit
    def run(variables, images, units):
        def step(images, _):
            return images + 0.01 * jax.grad(score, argnums=1)(variables, images, units), None

        return jax.lax.scan(step, images, None, length=steps)[0]

    return lambda images, units: run(spec.variables, images, units)


def timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default=DEFAULT_LAYER)
    parser.add_argument("--filters", default="all")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--atlas-args", default="", help="extra `jaxvis atlas` options, e.g. '--param pixel --transforms jitter'"
    )
    options = parser.parse_args()

    # exactly the CLI's defaults, plus any --atlas-args
    config = render_config(build_parser().parse_args(["atlas", *options.atlas_args.split()]))
    spec = load_model(DEFAULT_MODEL)
    units = parse_units(options.filters, spec.channel_count(options.layer, (config.size, config.size)))
    sizes = config.octave_sizes()
    steps_total = config.steps * len(sizes)
    chunks = -(-len(units) // config.batch)

    def atlas_job():
        return render(spec, options.layer, units, config, progress=False).images

    bare_fns = [bare_gradient_passes(spec, options.layer, config.batch, size, config.steps) for size in sizes]
    rng = np.random.default_rng(0)
    bare_inputs = [jnp.asarray(rng.uniform(0, 1, (config.batch, s, s, spec.channels)), jnp.float32) for s in sizes]
    bare_units = jnp.asarray(np.resize(units, config.batch), jnp.int32)

    def bare_job():
        out = None
        for _ in range(chunks):
            for fn, images in zip(bare_fns, bare_inputs):
                out = fn(images, bare_units)
        return out

    cold_atlas = timed(atlas_job)  # what a user's first `jaxvis atlas` pays: compilation included
    cold_bare = timed(bare_job)
    render_times, bare_times = [], []
    for _ in range(options.repeats):
        render_times.append(timed(atlas_job))
        bare_times.append(timed(bare_job))
    render_s, bare_s = statistics.median(render_times), statistics.median(bare_times)
    _results.write(
        "bench_render",
        {
            "model": DEFAULT_MODEL,
            "layer": options.layer,
            "atlas_args": options.atlas_args,
            "param": config.param,
            "transforms": config.transforms,
            "filters": len(units),
            "batch": config.batch,
            "sizes": sizes,
            "steps_per_octave": config.steps,
            "total_steps": steps_total,
            "backend": jax.default_backend(),
            "devices": len(jax.local_devices()),
            "cpu": platform.processor() or platform.machine(),
            "atlas_cold_s": round(cold_atlas, 2),
            "bare_cold_s": round(cold_bare, 2),
            "atlas_s": [round(t, 2) for t in render_times],
            "bare_s": [round(t, 2) for t in bare_times],
            "filters_per_s": round(len(units) / render_s, 3),
            "filters_per_s_cold": round(len(units) / cold_atlas, 3),
            "overhead_ratio": round(render_s / bare_s, 3),
            "overhead_ratio_paired_median": round(
                statistics.median(r / b for r, b in zip(render_times, bare_times)), 3
            ),
            "overhead_ratio_best": round(min(render_times) / min(bare_times), 3),
            "overhead_ratio_cold": round(cold_atlas / cold_bare, 3),
        },
    )


if __name__ == "__main__":
    main()

"""Atlas throughput (filters per second) with the filter batch sharded over 1, 2 and 4 devices.

On CPU the devices are XLA host-platform devices (`--xla_force_host_platform_device_count`), one
process per count, run one after another in this one invocation so that they share the machine's
state. Each child compiles first (one chunk), then times rendering `--filters` filters of `--layer`
of the default model. Prints JSON. On a machine with N accelerators, `--counts` may list up to N.

    python benchmarks/bench_devices.py [--counts 1,2,4] [--filters 32] [--size 96] [--steps 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import _results  # benchmarks/_results.py: print and write benchmarks/results/<name>.json

CHILD = r"""
import json, sys, time
import jax
from jaxvis.models import load_model
from jaxvis.optvis.render import RenderConfig, render

count, layer, filters, size, steps, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
devices = jax.local_devices()[: int(count)]
spec = load_model("mobilenet_v2")
config = RenderConfig(size=size, steps=steps, octaves=1, batch=batch)
render(spec, layer, range(batch), config, progress=False, devices=devices)  # compile
start = time.perf_counter()
render(spec, layer, range(filters), config, progress=False, devices=devices)
seconds = time.perf_counter() - start
print(json.dumps({"devices": len(devices), "platform": devices[0].platform, "seconds": round(seconds, 2),
                  "filters_per_s": round(filters / seconds, 3)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,2,4")
    parser.add_argument("--layer", default="features.10")
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="filters per chunk; a multiple of every count")
    options = parser.parse_args()
    counts = [int(c) for c in options.counts.split(",")]
    runs = []
    for count in counts:
        env = dict(
            os.environ,
            XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={max(counts)}".strip(),
        )
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(count),
                options.layer,
                str(options.filters),
                str(options.size),
                str(options.steps),
                str(options.batch),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = runs[0]["filters_per_s"]
    for run in runs:
        run["speedup_vs_first"] = round(run["filters_per_s"] / base, 3)
    _results.write("bench_devices", {"layer": options.layer, "filters": options.filters, "size": options.size,
                                       "steps": options.steps, "batch": options.batch, "runs": runs})


if __name__ == "__main__":
    main()

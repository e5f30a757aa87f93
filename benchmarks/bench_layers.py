"""Conv formulations on MobileNetV2: the default ("auto") against every conv through lax.

One jitted step = forward to `features.10` + the gradient of a channel score w.r.t. the input
(what a render step costs, minus the optimizer), batch 8 at 128x128, random weights. Then the
same for single layers of each kind. Prints one JSON object.

    python benchmarks/bench_layers.py [--batch 8] [--size 128] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import _results  # benchmarks/_results.py: print and write benchmarks/results/<name>.json
import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.models.layers import choose_impl, conv2d
from jaxvis.models.torchvision.mobilenet_v2 import MobileNetV2


def _time(fns: dict, *args, repeats: int) -> dict:
    """Median / min ms of each jitted fn; the fns take turns, so a busy machine slows them alike."""
    result, times = {}, {name: [] for name in fns}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))  # compile + first run, outside the timed region
        result[name] = {"first_call_s": round(time.perf_counter() - start, 2)}
        jax.block_until_ready(fn(*args))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - start)
    for name in fns:
        result[name].update(ms=round(1e3 * statistics.median(times[name]), 3), min_ms=round(1e3 * min(times[name]), 3))
    return result


def model_steps(impls, variables, x, layer: str, repeats: int) -> dict:
    def step(impl):
        module = MobileNetV2(conv_impl=impl)

        def loss(images, redirect):
            act = module.apply(variables, images, outputs=(layer,), relu_redirect=redirect)[layer]
            return -act[..., 3].mean()

        return jax.jit(jax.value_and_grad(loss))

    return _time({impl: step(impl) for impl in impls}, x, jnp.float32(0.0), repeats=repeats)


LAYER_CASES = [  # name, input shape (for batch 8 at 128 px), kernel shape, stride, padding, groups
    ("features.0 stem 3x3 s2", (128, 128, 3), (3, 3, 3, 32), 2, 1, 1),
    ("features.2 expand 1x1", (64, 64, 16), (1, 1, 16, 96), 1, 0, 1),
    ("features.2 depthwise 3x3 s2", (64, 64, 96), (3, 3, 1, 96), 2, 1, 96),
    ("features.3 depthwise 3x3 s1", (32, 32, 144), (3, 3, 1, 144), 1, 1, 144),
    ("features.8 depthwise 3x3 s1", (8, 8, 384), (3, 3, 1, 384), 1, 1, 384),
    ("features.8 project 1x1", (8, 8, 384), (1, 1, 384, 64), 1, 0, 1),
]


def layer_steps(impls, batch: int, shape, kernel_shape, stride, padding, groups, repeats: int) -> dict:
    kx, kk = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (batch,) + tuple(shape))
    kernel = jax.random.normal(kk, kernel_shape) * 0.1

    def step(impl):
        def loss(x):
            return 0.5 * jnp.square(conv2d(x, kernel, stride=stride, padding=padding, groups=groups, impl=impl)).sum()

        return jax.jit(jax.value_and_grad(loss))

    return _time({impl: step(impl) for impl in impls}, x, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--layer", default="features.10")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-layers", action="store_true", help="only the model step")
    args = parser.parse_args()

    load_at_start = round(os.getloadavg()[0], 2)  # other processes on a shared machine skew the timings
    x = jax.random.uniform(jax.random.PRNGKey(1), (args.batch, args.size, args.size, 3))
    variables = MobileNetV2().init(jax.random.PRNGKey(0), x[:1])
    steps = model_steps(("auto", "lax"), variables, x, args.layer, args.repeats)
    result = {
        "benchmark": "bench_layers",
        "device": str(jax.devices()[0]), "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(), "load_average_1min_at_start": load_at_start,
        "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "step": f"value_and_grad w.r.t. input of -mean({args.layer}[..., 3]), batch {args.batch}, "
                f"{args.size}x{args.size}, jitted",
        "auto_ms_per_step": steps["auto"]["ms"],
        "lax_ms_per_step": steps["lax"]["ms"],
        "speedup": round(steps["lax"]["ms"] / steps["auto"]["ms"], 2),
        "speedup_of_min": round(steps["lax"]["min_ms"] / steps["auto"]["min_ms"], 2),
        "model_step": steps,
    }
    if not args.no_layers:
        layers = {}
        for name, shape, kernel_shape, stride, padding, groups in LAYER_CASES:
            shape = (round(shape[0] * args.size / 128), round(shape[1] * args.size / 128), shape[2])
            timed = layer_steps(("taps", "lax"), args.batch, shape, kernel_shape, stride, padding, groups, args.repeats)
            layers[name] = {"auto_is": choose_impl(kernel_shape, groups),
                            **{f"{impl}_ms": timed[impl]["ms"] for impl in timed},
                            **{f"{impl}_min_ms": timed[impl]["min_ms"] for impl in timed}}
        result["layers_forward_and_input_grad"] = layers
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    _results.write("bench_layers", result)


if __name__ == "__main__":
    main()

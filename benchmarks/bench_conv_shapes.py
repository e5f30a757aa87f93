"""Per conv shape: forward + input gradient of 0.5*|conv(x)|^2 in each formulation, and torch.

The zoo's conv shapes (VGG's 3x3 stride-1 layers, stride-2 3x3, 5x5, 7x7 / 11x11 stems, 1xn / nx1,
grouped, depthwise) at batch 8, NHWC, jitted; the formulations ("auto", "lax", "onednn", ...; see
jaxvis.models.layers) take turns, as does torch's F.conv2d + autograd.grad (torch.set_num_threads =
the core count), so a busy machine slows them alike. Medians and minima in ms, and ratios to "lax".

    python benchmarks/bench_conv_shapes.py [--impls auto,lax,onednn] [--repeats 7] [--shapes vgg] [--torch]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import _results  # benchmarks/_results.py: print and write benchmarks/results/<name>.json
import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.models.layers import choose_impl, conv2d

# name: (H (= W), Cin, Cout, kh, kw, stride, padding, groups)
SHAPES = {
    "vgg 3x3 128px x 64": (128, 64, 64, 3, 3, 1, 1, 1),
    "vgg 3x3 64px 64->128": (64, 64, 128, 3, 3, 1, 1, 1),
    "vgg 3x3 64px x 128": (64, 128, 128, 3, 3, 1, 1, 1),
    "vgg 3x3 32px 128->256": (32, 128, 256, 3, 3, 1, 1, 1),
    "vgg 3x3 32px x 256": (32, 256, 256, 3, 3, 1, 1, 1),
    "vgg 3x3 16px 256->512": (16, 256, 512, 3, 3, 1, 1, 1),
    "vgg 3x3 16px x 512": (16, 512, 512, 3, 3, 1, 1, 1),
    "vgg 3x3 8px x 512": (8, 512, 512, 3, 3, 1, 1, 1),
    "vgg stem 3x3 128px 3->64": (128, 3, 64, 3, 3, 1, 1, 1),
    "resnet 3x3 16px x 256": (16, 256, 256, 3, 3, 1, 1, 1),
    "resnet 3x3 s2 32px 128->256": (32, 128, 256, 3, 3, 2, 1, 1),
    "resnet stem 7x7 s2 128px": (128, 3, 64, 7, 7, 2, 3, 1),
    "alexnet stem 11x11 s4 128px": (128, 3, 64, 11, 11, 4, 2, 1),
    "alexnet 5x5 15px 64->192": (15, 64, 192, 5, 5, 1, 2, 1),
    "googlenet 5x5 8px 16->48": (8, 16, 48, 5, 5, 1, 2, 1),
    "inception 1x7 8px 128->128": (8, 128, 128, 1, 7, 1, (0, 3), 1),
    "inception 7x1 8px 128->192": (8, 128, 192, 7, 1, 1, (3, 0), 1),
    "resnext grouped 3x3 16px 256 g32": (16, 256, 256, 3, 3, 1, 1, 32),
    "grouped 3x3 32px 128 g4": (32, 128, 128, 3, 3, 1, 1, 4),
    "mobilenet depthwise 3x3 32px 144": (32, 144, 144, 3, 3, 1, 1, 144),
    "mobilenet depthwise 3x3 s2 64px 96": (64, 96, 96, 3, 3, 2, 1, 96),
    "1x1 16px 384->64": (16, 384, 64, 1, 1, 1, 0, 1),
    "3x3 asymmetric pad 32px 128": (32, 128, 128, 3, 3, 2, ((0, 1), (0, 1)), 1),
}
GROUPS = {"vgg": [k for k in SHAPES if k.startswith("vgg")], "all": list(SHAPES)}


def _padding(p):
    if isinstance(p, int):
        return ((p, p), (p, p))
    if all(isinstance(v, int) for v in p):
        return ((p[0], p[0]), (p[1], p[1]))
    return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default="auto,lax,onednn")
    parser.add_argument("--shapes", default="all", help="all, vgg, or comma-separated names")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--torch", action="store_true", help="time torch's F.conv2d + autograd.grad too")
    parser.add_argument("--out", default="bench_conv_shapes")
    args = parser.parse_args()
    impls = args.impls.split(",")
    names = GROUPS.get(args.shapes) or args.shapes.split(",")
    if args.torch:
        import torch

        torch.set_num_threads(os.cpu_count())
    load_at_start = round(os.getloadavg()[0], 2)
    rows = {}
    for name in names:
        size, cin, cout, kh, kw, stride, padding, groups = SHAPES[name]
        padding = _padding(padding)
        kx, kk = jax.random.split(jax.random.PRNGKey(0))
        x = jax.random.normal(kx, (args.batch, size, size, cin))
        kernel = jax.random.normal(kk, (kh, kw, cin // groups, cout)) / np.sqrt(kh * kw * cin / groups)
        fns = {}
        for impl in impls:
            def loss(x, kernel, impl=impl):
                return 0.5 * jnp.square(conv2d(x, kernel, stride=stride, padding=padding, groups=groups,
                                               impl=impl)).sum()
            fns[impl] = jax.jit(jax.value_and_grad(loss))
        if args.torch:
            import torch
            import torch.nn.functional as F

            tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()).requires_grad_(True)
            tk = torch.from_numpy(np.asarray(kernel).transpose(3, 2, 0, 1).copy())
            (t, b), (l_, r) = padding
            def torch_step(*_):
                xin = F.pad(tx, (l_, r, t, b)) if (t, l_) != (b, r) else tx
                y = F.conv2d(xin, tk, stride=stride, padding=0 if (t, l_) != (b, r) else (t, l_), groups=groups)
                loss = 0.5 * y.square().sum()
                return torch.autograd.grad(loss, tx)[0]
            fns["torch"] = torch_step
        times = {impl: [] for impl in fns}
        for fn in fns.values():  # compile, warm up
            jax.block_until_ready(fn(x, kernel))
            jax.block_until_ready(fn(x, kernel))
        for _ in range(args.repeats):
            for impl, fn in fns.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(x, kernel))
                times[impl].append(1e3 * (time.perf_counter() - start))
        row = {"shape (H, Cin, Cout, kh, kw, stride, padding, groups)": str(SHAPES[name]),
               "auto_is": choose_impl((kh, kw, cin // groups, cout), groups, stride=stride),
               "auto_without_onednn_is": choose_impl((kh, kw, cin // groups, cout), groups, stride=stride,
                                                     onednn=False),
               "gflop": round(2 * args.batch * cout * (kh * kw * cin // groups)
                              * ((size + sum(padding[0]) - kh) // stride + 1)
                              * ((size + sum(padding[1]) - kw) // stride + 1) * 2 / 1e9, 3)}
        for impl in fns:
            row[f"{impl}_ms_median_min"] = [round(statistics.median(times[impl]), 2), round(min(times[impl]), 2)]
        if "lax" in fns:
            for impl in fns:
                row[f"lax_over_{impl}"] = round(statistics.median(times["lax"]) / statistics.median(times[impl]), 2)
        rows[name] = row
        print(name, {k: v for k, v in row.items() if k.endswith("median_min")}, flush=True)
    _results.write(args.out, {
        "benchmark": "bench_conv_shapes: forward + input gradient of 0.5*|conv(x)|^2, NHWC, jitted",
        "batch": args.batch, "repeats": args.repeats, "impls": impls,
        "gflop_note": "direct-convolution count of forward + input gradient (2 * MACs * 2)",
        "load_average_1min_at_start": load_at_start, "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "shapes": rows,
    })


if __name__ == "__main__":
    main()

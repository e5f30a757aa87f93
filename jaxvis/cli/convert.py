"""`jaxvis convert`: any model source into one `.jaxvis` file that loads fast."""

from __future__ import annotations

import os
import time

from jaxvis.cli.options import add_model_options, load_model_from
from jaxvis.errors import JaxvisError

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    convert = sub.add_parser("convert", help="convert a model or weight file (or a zoo model) into one .jaxvis file")
    convert.add_argument(
        "source", metavar="SRC", help="zoo name, .pth/.safetensors (with --arch), .h5, .keras or .jaxvis"
    )
    add_model_options(convert, weights=False, model=False)
    convert.add_argument("--out", required=True, help="the .jaxvis file to write")
    convert.set_defaults(run=run)


def run(args) -> None:
    from jaxvis.models.converted import SUFFIX, save_converted

    if not args.out.endswith(SUFFIX):
        raise JaxvisError(f"--out must end with {SUFFIX}, got {args.out!r}")
    start = time.perf_counter()
    spec = load_model_from(args, args.source)
    loaded = time.perf_counter()
    save_converted(spec, args.out)
    size = os.path.getsize(args.out) / 2**20
    print(f"{spec.name}: {len(spec.layer_names)} layers, input {'x'.join(map(str, spec.input_shape))} -> {args.out} "
          f"({size:.1f} MiB; loaded in {loaded - start:.1f} s, written in {time.perf_counter() - loaded:.1f} s)")

"""`jaxvis weights`: per-tensor statistics, histograms and the first layer's kernels."""

from __future__ import annotations

import os

from jaxvis.cli.options import add_model_options, load_model_from, number

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    from jaxvis.recipes.weights import HISTOGRAMS

    weights = sub.add_parser("weights", help="weight statistics, histograms and first-layer kernels")
    add_model_options(weights)
    weights.add_argument(
        "--checkpoint",
        default=None,
        help="report the tensors of this weight file as stored (torch .pth / "
        ".safetensors names, BatchNorm statistics kept) instead of the model's",
    )
    weights.add_argument("--out", default="jaxvis_weights", help="output folder")
    weights.add_argument("--histograms", default="pages", choices=list(HISTOGRAMS),
                         help="16 histograms per PNG page, one PNG per tensor, or none")
    weights.add_argument("--bins", default="50")
    weights.set_defaults(run=run)


def run(args) -> None:
    from jaxvis.convert.torch.checkpoint import load_state_dict
    from jaxvis.output.files import check_writable_dir
    from jaxvis.recipes.weights import format_table, parameter_tensors, save_weights_report, tensor_stats

    bins = number(args.bins, "--bins", int, 1, 10_000)
    check_writable_dir(args.out)
    if args.checkpoint:
        source, name = load_state_dict(args.checkpoint), os.path.basename(args.checkpoint)
    else:
        spec = load_model_from(args)
        source, name = spec, spec.name
    manifest = save_weights_report(source, args.out, histograms=args.histograms, bins=bins, model=name)
    print(format_table(tensor_stats(parameter_tensors(source))))
    files = manifest["files"]
    print(f"{len(manifest['tensors'])} tensors of {name} -> {args.out} ({files['csv']}, {files['json']}, "
          f"{len(files['histograms'])} histogram PNGs{', ' + files['first_conv'] if files['first_conv'] else ''})")

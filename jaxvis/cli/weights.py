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
    weights.add_argument("--converted", action="store_true",
                         help="report jaxvis's converted tensors (BatchNorm folded into the convs, Flax names) instead "
                              "of the tensors as the model's file stores them")
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
    options = {}
    if args.checkpoint:
        source, name, view = load_state_dict(args.checkpoint), os.path.basename(args.checkpoint), "stored"
    else:
        source, name, view, options = _weights_view(load_model_from(args), args.converted)
    shown = "tensors as stored in the file" if view == "stored" else \
        "CONVERTED tensors (jaxvis variables; BatchNorm folded into the convs)"
    print(f"{name}: {shown}")
    manifest = save_weights_report(source, args.out, histograms=args.histograms, bins=bins, model=name, view=view,
                                   **options)
    print(format_table(tensor_stats(parameter_tensors(source))))
    files = manifest["files"]
    print(f"{len(manifest['tensors'])} tensors of {name} -> {args.out} ({files['csv']}, {files['json']}, "
          f"{len(files['histograms'])} histogram PNGs{', ' + files['first_conv'] if files['first_conv'] else ''})")


def _weights_view(spec, converted: bool):
    """(tensors, name, view, report options): the file's tensors as stored unless `converted` or the
    model has no source file (then jaxvis's converted variables)."""
    from jaxvis.recipes.weights import stored_tensors

    stored = None if converted else stored_tensors(spec)
    if stored is None:
        return spec, spec.name, "converted", {}
    options = {"in_channels": spec.channels, "bgr": spec.preprocess.bgr}
    return stored, f"{spec.name} ({os.path.basename(spec.source)})", "stored", options

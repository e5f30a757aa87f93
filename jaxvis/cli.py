"""The `jaxvis` command line: thin argparse front-ends over the library's jobs.

Every `JaxvisError` becomes one line on stderr and exit status 2; progress goes to stderr (tqdm).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from jaxvis.errors import JaxvisError

DEFAULT_ATLAS_LAYER = "features.10"  # a mid layer of the default model: parts of objects, 64 filters


def _add_model_argument(parser):
    parser.add_argument("--model", default=None, help="zoo name (see `jaxvis models`); default: mobilenet_v2")
    parser.add_argument("--weights", default=None, help="weight file for the zoo model (default: its packaged weights)")


def _load(args):
    from jaxvis.models import DEFAULT_MODEL, load_model

    name = args.model or DEFAULT_MODEL
    return load_model(name, **({"weights": args.weights} if args.weights else {}))


def _render_config(args):
    from jaxvis.render import RenderConfig

    init_range = None
    if args.init_range:
        try:
            low, high = (float(v) for v in args.init_range.split(","))
        except ValueError:
            raise JaxvisError(f"--init-range takes LOW,HIGH in [0, 1], got {args.init_range!r}") from None
        init_range = (low, high)
    return RenderConfig(
        size=args.size, steps=args.steps, octaves=args.octaves, octave_scale=args.octave_scale,
        start_size=args.start_size, octave_blur=args.octave_blur, param=args.param,
        decorrelate=not args.no_decorrelate, valid_range=args.valid_range, init_range=init_range,
        transforms=args.transforms, optimizer=args.optimizer, learning_rate=args.lr,
        weight_decay=args.weight_decay, relu_redirect_steps=args.relu_redirect_steps,
        batch=args.batch or 16, seed=args.seed, precision=getattr(args, "precision", "f32"),
    ).validate()


def cmd_models(args):
    from jaxvis.models import describe_models

    for name, description in describe_models().items():
        print(f"{name:24s} {description}")


def cmd_layers(args):
    spec = _load(args)
    size = (args.size, args.size) if args.size else None
    shapes = spec.output_shapes(size)
    h, w = size or spec.input_shape[:2]
    print(f"{spec.name}: input {h}x{w}x{spec.channels}, {len(shapes)} layers")
    print(f"{'layer':28s} {'output shape':22s} channels")
    for name, shape in shapes.items():
        print(f"{name:28s} {str(tuple(shape[1:])):22s} {shape[-1]}")


def cmd_atlas(args):
    from jaxvis import distributed
    from jaxvis.atlas import parse_units, render_atlas, select_layers
    from jaxvis.io import check_writable_dir
    from jaxvis.render import auto_batch

    check_writable_dir(args.out)
    process = distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    spec = _load(args)
    config = _render_config(args)
    if args.all_layers or args.layers:
        layers = select_layers(spec, "*" if args.all_layers else args.layers)
    else:
        layers = [args.layer or (DEFAULT_ATLAS_LAYER if DEFAULT_ATLAS_LAYER in spec.layer_names else spec.layer_names[len(spec.layer_names) // 2])]
    spec.check_layers(layers)
    size = (config.octave_sizes()[0],) * 2
    plan = {}
    for layer in layers:
        count = spec.channel_count(layer, size)
        if args.filters:
            plan[layer] = parse_units(args.filters, count)
        else:  # one layer: the first 64 filters; a whole-model atlas: every filter
            plan[layer] = list(range(count if len(layers) > 1 else min(64, count)))
    from tqdm.auto import tqdm

    total = 0
    for layer in tqdm(layers, desc="layers", unit="layer", disable=args.quiet or len(layers) == 1):
        layer_config = config
        if args.batch is None:
            layer_config = dataclasses.replace(config, batch=auto_batch(spec, layer, config, len(plan[layer])))
        manifest = render_atlas(spec, layer, plan[layer], layer_config, args.out, progress=not args.quiet, process=process)
        total += len(plan[layer])
        print(f"{len(plan[layer])} filters of {spec.name} {layer} ({manifest['rendered']} rendered, {manifest['resumed']} reused) "
              f"in {manifest['render_seconds']:.1f} s -> {os.path.join(args.out, manifest['grid'])}")


# --- the atlas page and dataset examples (jaxvis.page, jaxvis.examples) ----------------------

def cmd_page(args):
    from jaxvis.page import write_atlas_page

    print(f"atlas page -> {write_atlas_page(args.out_dir)}")


def cmd_examples(args):
    from jaxvis.atlas import layer_dirname, parse_units
    from jaxvis.examples import dataset_examples
    from jaxvis.io import read_json
    from jaxvis.page import write_atlas_page

    layer_manifest = os.path.join(args.out, layer_dirname(args.layer), "manifest.json")
    if not os.path.isfile(layer_manifest):
        raise JaxvisError(f"no atlas of layer {args.layer} in {args.out}: render it first (jaxvis atlas --layer {args.layer} --out {args.out})")
    spec = _load(args)
    spec.check_layers([args.layer])
    rendered = [f["index"] for f in read_json(layer_manifest)["filters"]]
    units = parse_units(args.filters, max(rendered) + 1) if args.filters else None
    manifest = dataset_examples(spec, args.layer, units, args.images, args.out, top=args.top, size=args.size,
                                patch=args.patch, batch=args.batch, progress=not args.quiet)
    settings = manifest["examples_settings"]
    page = write_atlas_page(args.out) if os.path.exists(os.path.join(args.out, "index.html")) else None
    print(f"top {settings['top']} examples of {len(units or rendered)} filters of {spec.name} {args.layer} from "
          f"{settings['count']} images -> {os.path.join(args.out, layer_dirname(args.layer), 'examples')}"
          + (f" (page updated: {page})" if page else ""))


def _add_page_commands(sub):
    page = sub.add_parser("page", help="(re)write the atlas's browsable index.html (static; opens from file://)")
    page.add_argument("out_dir", metavar="OUT_DIR", help="an atlas folder (the --out of `jaxvis atlas`)")
    page.set_defaults(run=cmd_page)

    examples = sub.add_parser("examples", help="find the image patches of a folder that excite each filter most")
    _add_model_argument(examples)
    examples.add_argument("--layer", required=True, help="a layer already rendered into the atlas at --out")
    examples.add_argument("--filters", default=None, help="e.g. 0-63, 3,7,9 or all (default: every filter of the atlas)")
    examples.add_argument("--images", required=True, help="folder of JPEG/PNG images (searched recursively)")
    examples.add_argument("--top", type=int, default=6, help="examples per filter")
    examples.add_argument("--size", type=int, default=None, help="images are resized to SIZE x SIZE (default: the model's input size)")
    examples.add_argument("--patch", type=int, default=None, help="patch side in pixels (default: a third of the image)")
    examples.add_argument("--batch", type=int, default=16, help="images per compiled batch")
    examples.add_argument("--out", default="jaxvis_atlas", help="the atlas folder")
    examples.add_argument("--quiet", action="store_true", help="no progress bar")
    examples.set_defaults(run=cmd_examples)


# --- end of the page / examples block -------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxvis", description="Compiled, batched feature visualization for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list the model zoo").set_defaults(run=cmd_models)

    layers = sub.add_parser("layers", help="list a model's layers with output shapes and channel counts")
    layers.add_argument("model_name", nargs="?", default=None, metavar="MODEL")
    layers.add_argument("--weights", default=None)
    layers.add_argument("--size", type=int, default=None, help="input size for the shapes (default: the model's)")
    layers.set_defaults(run=cmd_layers)

    atlas = sub.add_parser("atlas", help="render the filters of a layer into an atlas")
    _add_model_argument(atlas)
    atlas.add_argument("--layer", default=None, help=f"layer name (default: {DEFAULT_ATLAS_LAYER} for the default model)")
    atlas.add_argument("--layers", default=None, help="comma-separated layer globs, e.g. 'features.*' (every filter of each)")
    atlas.add_argument("--all-layers", action="store_true", help="every layer of the model")
    atlas.add_argument("--filters", default=None, help="e.g. 0-63, 3,7,9 or all (default: the first 64)")
    atlas.add_argument("--size", type=int, default=128, help="final image size in pixels")
    atlas.add_argument("--steps", type=int, default=64, help="optimization steps per octave")
    atlas.add_argument("--octaves", type=int, default=2)
    atlas.add_argument("--octave-scale", type=float, default=1.2)
    atlas.add_argument("--start-size", type=int, default=None, help="size of the first octave (then x octave-scale each)")
    atlas.add_argument("--octave-blur", type=int, default=0, help="box blur kernel after each upscale (odd; 0 = none)")
    atlas.add_argument("--param", default="fft", choices=["fft", "pixel"])
    atlas.add_argument("--no-decorrelate", action="store_true", help="optimize RGB directly")
    atlas.add_argument("--valid-range", default="sigmoid", choices=["sigmoid", "offset"])
    atlas.add_argument("--init-range", default=None, help="uniform initial image LOW,HIGH (seed 000: 0.588,0.706)")
    atlas.add_argument("--transforms", default="standard", choices=["standard", "jitter", "none"])
    atlas.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    atlas.add_argument("--lr", type=float, default=0.05)
    atlas.add_argument("--weight-decay", type=float, default=0.0)
    atlas.add_argument("--relu-redirect-steps", type=int, default=16, help="steps using lucid's redirected ReLU gradient")
    atlas.add_argument("--batch", type=int, default=None,
                       help="filters optimized together in one compiled program (default: from device memory; 16 on CPU)")
    atlas.add_argument("--precision", default="f32", choices=["f32", "bf16"], help="network compute precision")
    atlas.add_argument("--coordinator", default=None, help="multi-process run: coordinator HOST:PORT (or JAXVIS_COORDINATOR)")
    atlas.add_argument("--num-processes", type=int, default=None, help="multi-process run: number of processes")
    atlas.add_argument("--process-id", type=int, default=None, help="multi-process run: this process's id")
    atlas.add_argument("--seed", type=int, default=0)
    atlas.add_argument("--out", default="jaxvis_atlas", help="output folder")
    atlas.add_argument("--quiet", action="store_true", help="no progress bars")
    atlas.set_defaults(run=cmd_atlas)
    _add_page_commands(sub)  # page, examples
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "model_name", None) is not None:
        args.model = args.model_name
    elif not hasattr(args, "model"):
        args.model = None
    try:
        args.run(args)
    except JaxvisError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished filters are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `jaxvis` command line: thin argparse front-ends over the library's jobs.

Every `JaxvisError` becomes one line on stderr and exit status 2; progress goes to stderr (tqdm).
"""

from __future__ import annotations

import argparse
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
        batch=args.batch, seed=args.seed,
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
    from jaxvis.atlas import parse_units, render_atlas

    from jaxvis.io import check_writable_dir

    check_writable_dir(args.out)
    spec = _load(args)
    config = _render_config(args)
    layer = args.layer or (DEFAULT_ATLAS_LAYER if DEFAULT_ATLAS_LAYER in spec.layer_names else spec.layer_names[len(spec.layer_names) // 2])
    spec.check_layers([layer])
    count = spec.channel_count(layer, (config.octave_sizes()[0],) * 2)
    units = parse_units(args.filters, count) if args.filters else list(range(min(64, count)))
    manifest = render_atlas(spec, layer, units, config, args.out, progress=not args.quiet)
    print(f"{len(units)} filters of {spec.name} {layer} ({manifest['rendered']} rendered, {manifest['resumed']} reused) "
          f"in {manifest['render_seconds']:.1f} s -> {os.path.join(args.out, manifest['grid'])}")


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
    atlas.add_argument("--batch", type=int, default=16, help="filters optimized together in one compiled program")
    atlas.add_argument("--seed", type=int, default=0)
    atlas.add_argument("--out", default="jaxvis_atlas", help="output folder")
    atlas.add_argument("--quiet", action="store_true", help="no progress bars")
    atlas.set_defaults(run=cmd_atlas)
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

"""`jaxvis atlas`: render the filters of one layer, of several, or of the whole model into an atlas."""

from __future__ import annotations

import dataclasses
import os

from jaxvis.cli.options import add_cache_options, add_model_options, default_of, load_model_from, pair

__all__ = ["DEFAULT_LAYER", "add_parser", "render_config", "run"]

DEFAULT_LAYER = "features.10"  # a mid layer of the default model: parts of objects, 64 filters


def _render_default(field: str):
    from jaxvis.optvis.render import RenderConfig

    return default_of(RenderConfig, field)


def add_parser(sub) -> None:
    from jaxvis.optvis import transforms
    from jaxvis.optvis.param import SPATIAL, VALID_RANGES
    from jaxvis.optvis.presets import PRESETS
    from jaxvis.optvis.render import OPTIMIZERS, PRECISIONS
    from jaxvis.optvis.space import SPACES

    d = _render_default
    atlas = sub.add_parser("atlas", help="render the filters of a layer into an atlas")
    add_model_options(atlas)
    add_cache_options(atlas)
    atlas.add_argument("--layer", default=None, help=f"layer name (default: {DEFAULT_LAYER} for the default model)")
    atlas.add_argument(
        "--layers", default=None, help="comma-separated layer globs, e.g. 'features.*' (every filter of each)"
    )
    atlas.add_argument("--all-layers", action="store_true", help="every layer of the model")
    atlas.add_argument("--filters", default=None, help="e.g. 0-63, 3,7,9 or all (default: the first 64)")
    atlas.add_argument("--preset", default=None, choices=list(PRESETS),
                       help="a named recipe (jaxvis.optvis.presets; default lucid); render options given beside it "
                            "replace its values")
    atlas.add_argument("--size", type=int, default=None, help=f"final image size in pixels (lucid: {d('size')})")
    atlas.add_argument("--steps", type=int, default=None, help=f"optimization steps per octave (lucid: {d('steps')})")
    atlas.add_argument("--octaves", type=int, default=None, help=f"(lucid: {d('octaves')})")
    atlas.add_argument("--octave-scale", type=float, default=None, help=f"(lucid: {d('octave_scale')})")
    atlas.add_argument("--start-size", type=int, default=None,
                       help="size of the first octave (then x octave-scale each)")
    atlas.add_argument("--octave-blur", type=int, default=None,
                       help="box blur kernel after each upscale (odd; 0 = none)")
    atlas.add_argument("--param", default=None, choices=sorted(SPATIAL), help=f"(lucid: {d('param')})")
    atlas.add_argument("--space", default=None, choices=list(SPACES),
                       help=f"optimize the display image or the model's input after its preprocessing "
                            f"(lucid: {d('space')})")
    atlas.add_argument("--no-decorrelate", action="store_true", help="optimize RGB directly")
    atlas.add_argument("--valid-range", default=None, choices=sorted(VALID_RANGES), help=f"(lucid: {d('valid_range')})")
    atlas.add_argument("--init-range", default=None,
                       help="uniform initial image LOW,HIGH in display units (fastai's FilterVisualizer: 0.588,0.706)")
    atlas.add_argument("--transforms", default=None, choices=list(transforms.NAMED), help=f"(lucid: {d('transforms')})")
    atlas.add_argument("--optimizer", default=None, choices=list(OPTIMIZERS), help=f"(lucid: {d('optimizer')})")
    atlas.add_argument("--lr", type=float, default=None,
                       help=f"learning rate, in the units of --space (lucid: {d('learning_rate')})")
    atlas.add_argument("--weight-decay", type=float, default=None, help=f"(lucid: {d('weight_decay')})")
    atlas.add_argument("--relu-redirect-steps", type=int, default=None,
                       help=f"steps using lucid's redirected ReLU gradient (lucid: {d('relu_redirect_steps')})")
    atlas.add_argument("--batch", type=int, default=None,
                       help=f"filters optimized together in one compiled program (default: from device memory; "
                            f"{d('batch')} on CPU)")
    atlas.add_argument(
        "--precision", default=d("precision"), choices=list(PRECISIONS), help="network compute precision"
    )
    atlas.add_argument(
        "--coordinator", default=None, help="multi-process run: coordinator HOST:PORT (or JAXVIS_COORDINATOR)"
    )
    atlas.add_argument("--num-processes", type=int, default=None, help="multi-process run: number of processes")
    atlas.add_argument("--process-id", type=int, default=None, help="multi-process run: this process's id")
    atlas.add_argument("--seed", type=int, default=d("seed"))
    atlas.add_argument("--grid-tile", type=int, default=None,
                       help="tile side in the grid image (default: the render size; filter PNGs keep it)")
    atlas.add_argument("--out", default="jaxvis_atlas", help="output folder")
    atlas.add_argument("--quiet", action="store_true", help="no progress bars")
    atlas.set_defaults(run=run)


# `jaxvis atlas` render options (argparse dest -> RenderConfig field). They default to None: an option
# given replaces the preset's value, one not given keeps it.
PRESET_FLAGS = {"size": "size", "steps": "steps", "octaves": "octaves", "octave_scale": "octave_scale",
                "start_size": "start_size", "octave_blur": "octave_blur", "param": "param", "space": "space",
                "valid_range": "valid_range", "transforms": "transforms", "optimizer": "optimizer",
                "lr": "learning_rate", "weight_decay": "weight_decay", "relu_redirect_steps": "relu_redirect_steps"}


def render_config(args):
    """The `RenderConfig` the atlas options describe: the preset (lucid by default) with the options given."""
    from jaxvis.optvis.render import RenderConfig

    overrides = {
        field: getattr(args, dest) for dest, field in PRESET_FLAGS.items() if getattr(args, dest, None) is not None
    }
    if args.init_range:
        overrides["init_range"] = pair(args.init_range, "--init-range", "LOW,HIGH in [0, 1]")
    if args.no_decorrelate:
        overrides["decorrelate"] = False
    return RenderConfig.preset(args.preset or "lucid", batch=args.batch or _render_default("batch"), seed=args.seed,
                               precision=args.precision, **overrides)


def run(args) -> None:
    from tqdm.auto import tqdm

    from jaxvis.optvis.render import auto_batch
    from jaxvis.output.files import check_writable_dir
    from jaxvis.recipes import distributed
    from jaxvis.recipes.atlas import parse_units, render_atlas, select_layers

    check_writable_dir(args.out)
    process = distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    spec = load_model_from(args)
    config = render_config(args)
    if args.all_layers or args.layers:
        layers = select_layers(spec, "*" if args.all_layers else args.layers)
    else:
        middle = spec.layer_names[len(spec.layer_names) // 2]
        layers = [args.layer or (DEFAULT_LAYER if DEFAULT_LAYER in spec.layer_names else middle)]
    spec.check_layers(layers)
    size = (config.octave_sizes()[0],) * 2
    plan = {}
    for layer in layers:
        count = spec.channel_count(layer, size)
        if args.filters:
            plan[layer] = parse_units(args.filters, count)
        else:  # one layer: the first 64 filters; a whole-model atlas: every filter
            plan[layer] = list(range(count if len(layers) > 1 else min(64, count)))
    for layer in tqdm(layers, desc="layers", unit="layer", disable=args.quiet or len(layers) == 1):
        layer_config = config
        if args.batch is None:
            layer_config = dataclasses.replace(config, batch=auto_batch(spec, layer, config, len(plan[layer])))
        manifest = render_atlas(spec, layer, plan[layer], layer_config, args.out, progress=not args.quiet,
                                process=process, grid_tile=args.grid_tile)
        print(f"{len(plan[layer])} filters of {spec.name} {layer} ({manifest['rendered']} rendered, "
              f"{manifest['resumed']} reused) in {manifest['render_seconds']:.1f} s "
              f"({manifest['compile_seconds']:.1f} s compiling) -> {os.path.join(args.out, manifest['grid'])}")

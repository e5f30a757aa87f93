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
    from jaxvis.optvis.render import OPTIMIZERS, PRECISIONS

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
    atlas.add_argument("--size", type=int, default=d("size"), help="final image size in pixels")
    atlas.add_argument("--steps", type=int, default=d("steps"), help="optimization steps per octave")
    atlas.add_argument("--octaves", type=int, default=d("octaves"))
    atlas.add_argument("--octave-scale", type=float, default=d("octave_scale"))
    atlas.add_argument(
        "--start-size", type=int, default=d("start_size"), help="size of the first octave (then x octave-scale each)"
    )
    atlas.add_argument(
        "--octave-blur", type=int, default=d("octave_blur"), help="box blur kernel after each upscale (odd; 0 = none)"
    )
    atlas.add_argument("--param", default=d("param"), choices=sorted(SPATIAL))
    atlas.add_argument("--no-decorrelate", action="store_true", help="optimize RGB directly")
    atlas.add_argument("--valid-range", default=d("valid_range"), choices=sorted(VALID_RANGES))
    atlas.add_argument("--init-range", default=None,
                       help="uniform initial image LOW,HIGH in [0, 1] (fastai's FilterVisualizer: 0.588,0.706)")
    atlas.add_argument("--transforms", default=d("transforms"), choices=list(transforms.NAMED))
    atlas.add_argument("--optimizer", default=d("optimizer"), choices=list(OPTIMIZERS))
    atlas.add_argument("--lr", type=float, default=d("learning_rate"))
    atlas.add_argument("--weight-decay", type=float, default=d("weight_decay"))
    atlas.add_argument("--relu-redirect-steps", type=int, default=d("relu_redirect_steps"),
                       help="steps using lucid's redirected ReLU gradient")
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


def render_config(args):
    """The `RenderConfig` the atlas options describe (validated)."""
    from jaxvis.optvis.render import RenderConfig

    init_range = pair(args.init_range, "--init-range", "LOW,HIGH in [0, 1]") if args.init_range else None
    return RenderConfig(
        size=args.size, steps=args.steps, octaves=args.octaves, octave_scale=args.octave_scale,
        start_size=args.start_size, octave_blur=args.octave_blur, param=args.param,
        decorrelate=not args.no_decorrelate, valid_range=args.valid_range, init_range=init_range,
        transforms=args.transforms, optimizer=args.optimizer, learning_rate=args.lr,
        weight_decay=args.weight_decay, relu_redirect_steps=args.relu_redirect_steps,
        batch=args.batch or _render_default("batch"), seed=args.seed, precision=args.precision,
    ).validate()


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

"""`jaxvis dream`: DeepDream a photo (TensorFlow's DeepDream tutorial: octaves, std-normalized steps)."""

from __future__ import annotations

import dataclasses
import os

from jaxvis.cli.options import add_cache_options, add_model_options, default_of, load_model_from, names, number
from jaxvis.errors import JaxvisError

__all__ = ["DEFAULT_LAYERS", "IMAGE_SUFFIXES", "add_parser", "config_from", "run"]

DEFAULT_LAYERS = ("features.10", "features.13")  # mid layers of the default model
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _default(field: str) -> str:
    from jaxvis.recipes.dream import DreamConfig

    value = default_of(DreamConfig, field)
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_parser(sub) -> None:
    d = _default
    dream = sub.add_parser("dream", help="DeepDream a photo (TensorFlow's DeepDream tutorial)")
    dream.add_argument("image", metavar="IMAGE")
    add_model_options(dream)
    add_cache_options(dream)
    dream.add_argument("--layers", default=None, help=f"comma-separated layers (default: {','.join(DEFAULT_LAYERS)})")
    dream.add_argument("--out", default=None, help="output image file (.png/.jpg; default: <image>_dream.png); "
                                                   "a .json with the settings and losses is written beside it")
    dream.add_argument("--steps", default=d("steps"), help="steps per octave")
    dream.add_argument(
        "--step-size", default=d("step_size"), help="step on the std-normalized gradient (model input units)"
    )
    dream.add_argument("--octave-scale", default=d("octave_scale"))
    dream.add_argument("--octaves", default=d("octave_power_factors"),
                       help="octave power factors, e.g. --octaves=-2,-1,0,1,2 (with =, as they start with -)")
    dream.add_argument("--tile-size", default=d("tile_size"), help="gradient tile in pixels (0: no tiling)")
    dream.add_argument("--tile-overlap", default=d("tile_overlap"), help="context pixels around each tile")
    dream.add_argument("--align", default=d("align"), help="tile windows start at multiples of this (the net's stride)")
    dream.add_argument("--seed", default=d("seed"), help="seeds the random rolls")
    dream.add_argument("--quiet", action="store_true", help="no progress bar")
    dream.set_defaults(run=run)


def config_from(args):
    """The `DreamConfig` the options describe (validated)."""
    from jaxvis.recipes.dream import DreamConfig

    return DreamConfig(
        steps=number(args.steps, "--steps", int, 1, 100_000),
        step_size=number(args.step_size, "--step-size", float, 1e-12),
        octave_scale=number(args.octave_scale, "--octave-scale", float, 1.0, 10.0),
        octave_power_factors=tuple(number(p, "--octaves", int, -16, 16) for p in names(args.octaves, "--octaves")),
        tile_size=number(args.tile_size, "--tile-size", int, 0),
        tile_overlap=number(args.tile_overlap, "--tile-overlap", int, 0),
        align=number(args.align, "--align", int, 1),
        seed=number(args.seed, "--seed", int),
    ).validate()


def run(args) -> None:
    from jaxvis.output.files import check_writable_dir, load_image, save_picture, write_json
    from jaxvis.recipes.dream import dream

    out = args.out or os.path.splitext(os.path.basename(args.image))[0] + "_dream.png"
    if os.path.splitext(out)[1].lower() not in IMAGE_SUFFIXES:
        raise JaxvisError(f"--out must name an image file ({', '.join(IMAGE_SUFFIXES)}), got {out!r}")
    config = config_from(args)
    check_writable_dir(os.path.dirname(os.path.abspath(out)))
    spec = load_model_from(args)
    if args.layers:
        layers = spec.check_layers(names(args.layers, "--layers"))
    elif all(name in spec.layer_names for name in DEFAULT_LAYERS):
        layers = DEFAULT_LAYERS
    else:
        raise JaxvisError(f"name the layers to dream on with --layers (see `jaxvis layers {spec.name}`)")
    image = load_image(args.image, channels=1 if spec.channels == 1 else 3)
    result = dream(spec, image, layers, config, progress=not args.quiet)
    save_picture(out, result.image)
    record = {
        "image": args.image,
        "output": out,
        "model": spec.name,
        "layers": list(layers),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
        "octaves": [
            {"size": list(size), "loss_first": float(losses[0].mean()), "loss_last": float(losses[-1].mean())}
            for size, losses in zip(result.sizes, result.losses)
        ],
    }
    write_json(os.path.splitext(out)[0] + ".json", record)
    summary = ", ".join(f"{o['loss_first']:.3f}->{o['loss_last']:.3f}" for o in record["octaves"])
    print(
        f"dreamed {args.image} on {spec.name} {','.join(layers)} ({len(result.sizes)} octaves, loss {summary}) -> {out}"
    )

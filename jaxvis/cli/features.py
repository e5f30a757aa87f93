"""`jaxvis features`: feature-map grids of chosen layers for one image, and the raw activations as `.npy`."""

from __future__ import annotations

import os

from jaxvis.cli.options import add_cache_options, add_model_options, load_model_from, number

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    from jaxvis.recipes.features import FITS, GRIDS

    features = sub.add_parser("features", help="feature maps of chosen layers for an image")
    add_model_options(features)
    add_cache_options(features)
    features.add_argument("--image", required=True)
    features.add_argument("--layers", default="all", help="comma-separated layers, or all (default)")
    features.add_argument("--out", default="jaxvis_features", help="output folder")
    features.add_argument("--fit", default="resize", choices=list(FITS),
                          help="resize to the model input, torchvision-style centre crop, or keep the image size")
    features.add_argument("--grid", default="first", choices=list(GRIDS),
                          help="first: the first --count channels (3x4); all: every channel, standardized, 16 per row")
    features.add_argument("--count", default="12", help="channels shown by --grid first")
    features.add_argument("--columns", default=None, help="grid columns (default 4 for first, 16 for all)")
    features.add_argument("--cmap", default="viridis", help="matplotlib colormap (e.g. viridis, gray)")
    features.set_defaults(run=run)


def run(args) -> None:
    from jaxvis.output.files import check_writable_dir, load_image
    from jaxvis.recipes.features import resolve_layers, save_feature_maps

    count = number(args.count, "--count", int, 1, 100_000)
    columns = number(args.columns, "--columns", int, 1, 1024) if args.columns is not None else None
    check_writable_dir(args.out)
    spec = load_model_from(args)
    layers = resolve_layers(spec, args.layers)
    image = load_image(args.image, channels=1 if spec.channels == 1 else 3)
    manifest = save_feature_maps(spec, image, args.out, layers, fit=args.fit, grid=args.grid, count=count,
                                 columns=columns, cmap=args.cmap, source=args.image)
    for record in manifest["layers"]:
        print(f"{record['layer']:28s} {str(tuple(record['shape'])):20s} -> {os.path.join(args.out, record['png'])}")
    print(f"{len(manifest['layers'])} layers of {spec.name} -> {args.out} (features.json, <layer>.npy, <layer>.png)")

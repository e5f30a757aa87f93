"""`jaxvis examples`: the image patches of a folder that excite each filter of an atlas layer most."""

from __future__ import annotations

import os

from jaxvis.cli.options import add_cache_options, add_model_options, load_model_from
from jaxvis.errors import JaxvisError

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    examples = sub.add_parser("examples", help="find the image patches of a folder that excite each filter most")
    add_model_options(examples)
    add_cache_options(examples)
    examples.add_argument("--layer", required=True, help="a layer already rendered into the atlas at --out")
    examples.add_argument(
        "--filters", default=None, help="e.g. 0-63, 3,7,9 or all (default: every filter of the atlas)"
    )
    examples.add_argument("--images", required=True, help="folder of JPEG/PNG images (searched recursively)")
    examples.add_argument("--top", type=int, default=6, help="examples per filter")
    examples.add_argument(
        "--size", type=int, default=None, help="images are resized to SIZE x SIZE (default: the model's input size)"
    )
    examples.add_argument(
        "--patch", type=int, default=None, help="patch side in pixels (default: a third of the image)"
    )
    examples.add_argument("--batch", type=int, default=16, help="images per compiled batch")
    examples.add_argument("--out", default="jaxvis_atlas", help="the atlas folder")
    examples.add_argument("--quiet", action="store_true", help="no progress bar")
    examples.set_defaults(run=run)


def run(args) -> None:
    from jaxvis.output.files import read_json
    from jaxvis.recipes.atlas import layer_dirname, parse_units
    from jaxvis.recipes.examples import dataset_examples
    from jaxvis.recipes.page import write_atlas_page

    layer_manifest = os.path.join(args.out, layer_dirname(args.layer), "manifest.json")
    if not os.path.isfile(layer_manifest):
        raise JaxvisError(f"no atlas of layer {args.layer} in {args.out}: render it first "
                          f"(jaxvis atlas --layer {args.layer} --out {args.out})")
    spec = load_model_from(args)
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

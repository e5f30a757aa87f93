"""`jaxvis models` (the zoo) and `jaxvis layers` (a model's layers, shapes and channel counts)."""

from __future__ import annotations

from jaxvis.cli.options import add_model_options, load_model_from
from jaxvis.errors import JaxvisError

__all__ = ["add_parser", "run_layers", "run_models"]


def add_parser(sub) -> None:
    sub.add_parser("models", help="list the model zoo").set_defaults(run=run_models)
    layers = sub.add_parser("layers", help="list a model's layers with output shapes and channel counts")
    layers.add_argument("model_name", nargs="?", default=None, metavar="MODEL", help="the same as --model")
    add_model_options(layers)
    layers.add_argument("--size", type=int, default=None, help="input size for the shapes (default: the model's)")
    layers.set_defaults(run=run_layers)


def run_models(args) -> None:
    from jaxvis.models import describe_models

    for name, description in describe_models().items():
        print(f"{name:24s} {description}")


def run_layers(args) -> None:
    if args.model_name is not None and args.model is not None and args.model_name != args.model:
        raise JaxvisError(f"name the model once: MODEL {args.model_name!r} and --model {args.model!r} differ")
    spec = load_model_from(args, args.model_name)
    size = (args.size, args.size) if args.size else None
    shapes = spec.output_shapes(size)
    h, w = size or spec.input_shape[:2]
    print(f"{spec.name}: input {h}x{w}x{spec.channels}, {len(shapes)} layers")
    print(f"{'layer':28s} {'output shape':22s} channels")
    for name, shape in shapes.items():
        print(f"{name:28s} {str(tuple(shape[1:])):22s} {shape[-1]}")

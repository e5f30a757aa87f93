"""What every command shares: how a model is named, how numbers and lists are read, how errors look.

Contract: `add_model_options(parser)` adds `--model` / `--weights` / `--arch` (`--model` also
accepts zoo names and model files, as `load_model` does) and `load_model_from(args)` loads it.
Numbers and lists are parsed here, not by argparse, so a bad value becomes one `error:` line
(exit 2) naming the option; defaults come from the library's config dataclasses via `default_of`.
"""

from __future__ import annotations

import dataclasses
import math

from jaxvis.errors import JaxvisError

__all__ = ["add_cache_options", "add_model_options", "default_of", "load_model_from", "names", "number", "pair"]


def add_model_options(parser, *, weights: bool = True, model: bool = True) -> None:
    """`--model`, `--weights` (zoo names only), `--arch` (weights-only files), and what the file may not
    say: `--preprocess`, `--labels`, `--input-size`."""
    from jaxvis.models.registry import DEFAULT_MODEL

    if model:
        parser.add_argument("--model", default=None,
                            help=f"zoo name (see `jaxvis models`) or a model file (.pth/.safetensors with --arch, .h5, "
                                 f".keras, .jaxvis); default: {DEFAULT_MODEL}")
    if weights:
        parser.add_argument(
            "--weights", default=None, help="weight file for the zoo model (default: its packaged weights)"
        )
    parser.add_argument(
        "--arch", default=None, help="zoo architecture of a weights-only file (torch state_dict, Keras weights)"
    )
    parser.add_argument("--preprocess", default=None,
                        help="the model's input: unit ([0,1]), raw (0..255), tf ([-1,1]), torch (ImageNet mean/std), "
                             "caffe (BGR 0..255 - ImageNet mean) or mean=...,std=...[,scale=...][,bgr] "
                             "(default: what the file or zoo entry says, else unit)")
    parser.add_argument("--labels", default=None, help="class names: a file with one per line, or a,b,c")
    parser.add_argument("--input-size", default=None, help="H,W the model takes, for files that leave it open")


def add_cache_options(parser) -> None:
    """`--cache-dir` / `--no-cache`: JAX's persistent compilation cache, on by default for commands that compile."""
    parser.add_argument("--cache-dir", default=None,
                        help="compilation cache folder (default: $JAXVIS_CACHE_DIR, else ~/.cache/jaxvis/xla)")
    parser.add_argument("--no-cache", action="store_true", help="compile everything afresh and keep nothing")


def load_model_from(args, model: str | None = None):
    """The `ModelSpec` that `args` (`--model` / `--weights` / `--arch`, or `model`) name."""
    from jaxvis.models.load import load_model

    return load_model(model if model is not None else args.model, weights=getattr(args, "weights", None),
                      arch=getattr(args, "arch", None), preprocess=getattr(args, "preprocess", None),
                      labels=getattr(args, "labels", None), input_size=getattr(args, "input_size", None))


def default_of(config_class, field: str):
    """The default of a config dataclass's field, so the CLI and the library agree."""
    return next(f.default for f in dataclasses.fields(config_class) if f.name == field)


def number(text, option: str, kind=int, low=None, high=None):
    """`text` as an int / float within [low, high], or a one-line JaxvisError naming the option."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise JaxvisError(f"{option} takes {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise JaxvisError(f"{option} must be finite, got {text!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else (f"<= {high}" if low is None else f"in [{low}, {high}]")
        raise JaxvisError(f"{option} must be {bounds}, got {text!r}")
    return value


def names(text, option: str) -> list[str]:
    """A comma-separated list with at least one non-empty item."""
    items = [name.strip() for name in (text or "").split(",") if name.strip()]
    if not items:
        raise JaxvisError(f"{option} needs at least one value, got {text!r}")
    return items


def pair(text, option: str, form: str = "A,B", kind=float) -> tuple:
    """'A,B' as two numbers (`form` describes them in the error line)."""
    try:
        first, second = (kind(v) for v in str(text).split(","))
    except ValueError:
        raise JaxvisError(f"{option} takes {form}, got {text!r}") from None
    return first, second

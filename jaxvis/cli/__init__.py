"""The `jaxvis` command line: one module per command, each with `add_parser(sub)` and `run(args)`.

Every `JaxvisError` becomes one line on stderr and exit status 2; progress goes to stderr (tqdm).
Options shared by the commands (how a model is named, how numbers are read) live in `options`.
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxvis.errors import JaxvisError

__all__ = ["COMMANDS", "build_parser", "main"]

# The command modules, in the order `jaxvis --help` lists them.
COMMANDS = ("models", "atlas", "page", "examples", "dream", "features", "weights", "cam", "convert", "bench")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="jaxvis", description="Compiled, batched feature visualization for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"jaxvis.cli.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "no_cache") and not args.no_cache:
            from jaxvis.optvis import compile_cache

            compile_cache.enable(args.cache_dir)
        args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
    except JaxvisError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished filters are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `jaxvis layers M | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())

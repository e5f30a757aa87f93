"""The one exception type users see: every bad input becomes a `JaxvisError` with one clear line.

The CLI prints `error: <message>` and exits 2 for these; anything else is a bug and keeps its traceback.
"""

__all__ = ["JaxvisError", "WeightFileError", "one_line", "unknown_name"]


class JaxvisError(Exception):
    """A user-facing error: bad input, missing file, unknown name. The message is one line."""


class WeightFileError(JaxvisError):
    """A weight file that is missing, truncated, corrupt, foreign or unsafe to load."""


def one_line(text) -> str:
    """`text` (or an exception's message) with every run of whitespace as one space: error lines stay one line."""
    return " ".join(str(text).split())


def unknown_name(kind: str, name: str, valid) -> JaxvisError:
    """An error for an unknown model / layer / option that lists the valid names."""
    valid = list(valid)
    shown = ", ".join(valid[:60]) + (f", ... ({len(valid)} in all)" if len(valid) > 60 else "")
    return JaxvisError(f"unknown {kind} {name!r}; valid: {shown}")

"""matplotlib figures for the jobs (features, weights, cam), made without pyplot and saved atomically.

Contract: figures are `matplotlib.figure.Figure` objects built directly (no pyplot, so no global
state, no display and no backend switch in the caller's process); `save_figure` writes one as PNG
through `jaxvis.output.files.atomic_write_bytes` and closes nothing global. `colorize` maps values in [0, 1]
to float RGB in [0, 1] with a named colormap.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.output.files import atomic_write_bytes

__all__ = ["MAX_INCHES", "check_cmap", "colorize", "new_figure", "save_figure"]

MAX_INCHES = 200.0  # matplotlib refuses figures beyond 2^16 pixels a side; stay well below at 100 dpi


def new_figure(width: float, height: float, *, dpi: int = 100) -> Figure:
    """A figure of `width` x `height` inches (each clamped to [1, MAX_INCHES])."""
    return Figure(figsize=(min(max(width, 1.0), MAX_INCHES), min(max(height, 1.0), MAX_INCHES)), dpi=dpi)


def save_figure(fig: Figure, path, *, dpi: int | None = None):
    """Write `fig` as a PNG at `path` atomically; returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi, bbox_inches="tight", facecolor="white")
    return atomic_write_bytes(path, buffer.getvalue())


def check_cmap(name: str) -> str:
    """`name` if matplotlib knows the colormap, else a JaxvisError listing some valid ones."""
    if name not in colormaps:
        raise unknown_name("colormap", name, sorted(n for n in colormaps if not n.endswith("_r")))
    return name


def colorize(values, cmap: str = "jet") -> np.ndarray:
    """Values in [0, 1] (any shape) -> float32 RGB (shape + (3,)) in [0, 1] through `cmap`."""
    values = np.asarray(values, np.float32)
    if values.size and not np.isfinite(values).all():
        raise JaxvisError("cannot colour a map holding NaN or infinite values")
    return colormaps[check_cmap(cmap)](np.clip(values, 0.0, 1.0))[..., :3].astype(np.float32)

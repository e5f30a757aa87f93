"""Conv kernels from torch / ONNX layout into jaxvis's, in C++ (`jaxvis._core.oihw_to_hwio`).

Contract: `oihw_to_hwio(kernel)` returns `kernel.transpose(2, 3, 1, 0)` -- [O, I, kh, kw] to
[kh, kw, I, O] -- as a new aligned C-contiguous array (`jaxvis.convert.host_buffers`), equal to
NumPy's copy bit for bit. float32 kernels (read-only views of a mapped file included) go through
the tiled C++ copy with the GIL released; other dtypes, non-contiguous views and a build without
the extension fall back to NumPy. Why by hand: NumPy's copy of the transposed view strides through
the source one float per cache line, and changing the layout of every conv weight was most of
loading a model (`benchmarks/bench_graph.py`).
"""

from __future__ import annotations

import importlib

import numpy as np

from jaxvis.convert.host_buffers import aligned_copy, aligned_empty

__all__ = ["oihw_to_hwio"]


def _core():
    try:
        return importlib.import_module("jaxvis._core")
    except ImportError:  # pragma: no cover -- the extension is part of every build; NumPy is the fallback
        return None


def oihw_to_hwio(kernel, num_threads: int = 0) -> np.ndarray:
    """[O, I, kh, kw] -> a new aligned [kh, kw, I, O] (see the module docstring)."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"a conv kernel must have 4 dimensions (O, I, kh, kw), got shape {kernel.shape}")
    core = _core()
    if core is None or kernel.dtype != np.float32 or not kernel.flags.c_contiguous or kernel.size == 0:
        return aligned_copy(kernel.transpose(2, 3, 1, 0))
    o, i, kh, kw = kernel.shape
    out = aligned_empty((kh, kw, i, o), np.float32)
    core.oihw_to_hwio(kernel, out, num_threads)
    return out

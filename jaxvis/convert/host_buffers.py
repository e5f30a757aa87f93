"""Host arrays that XLA's CPU client adopts without a copy: every loader reads weights into these.

Contract: every array made here is C-contiguous and its data starts on a 64-byte boundary, which
is what the CPU client needs to wrap a NumPy array as a device buffer in place (`jax.device_put`
then costs nothing; a misaligned array is copied, 0.25 s per 400 MB on the CI machine). The
functions never keep a reference to what they return, so the loader that asked owns the memory.

* `aligned_empty(shape, dtype)`: an uninitialized array;
* `aligned_copy(array, dtype)`: a contiguous copy of any view (a transposed one included), so a
  layout change costs one pass over the memory instead of a copy and then a transpose;
* `read_aligned(file, offset, nbytes)`: `nbytes` of a file as a uint8 array, read straight into
  its buffer with one `readinto` (no intermediate `bytes`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALIGN", "aligned_copy", "aligned_empty", "is_aligned", "read_aligned"]

ALIGN = 64  # bytes


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts on a 64-byte boundary."""
    shape = tuple(int(n) for n in shape) if np.iterable(shape) else (int(shape),)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    buffer = np.empty(nbytes + ALIGN, np.uint8)
    offset = (-buffer.ctypes.data) % ALIGN
    return buffer[offset:offset + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray) -> bool:
    """Whether `array` is C-contiguous and starts on a 64-byte boundary (or is empty)."""
    return array.flags.c_contiguous and (array.size == 0 or array.ctypes.data % ALIGN == 0)


def aligned_copy(array, dtype=None) -> np.ndarray:
    """`array` (any strides) as a new aligned C-contiguous array of `dtype` (default: its own)."""
    array = np.asarray(array)
    out = aligned_empty(array.shape, array.dtype if dtype is None else dtype)
    np.copyto(out, array, casting="unsafe" if dtype is not None else "no")
    return out


def read_aligned(file, offset: int, nbytes: int) -> np.ndarray | None:
    """Bytes `offset .. offset + nbytes` of the binary `file` as an aligned uint8 array, or None if
    the file ends first."""
    out = aligned_empty((nbytes,), np.uint8)
    file.seek(offset)
    view, done = memoryview(out), 0
    while done < nbytes:  # a raw file may return fewer bytes than asked for
        got = file.readinto(view[done:])
        if not got:
            return None
        done += got
    return out

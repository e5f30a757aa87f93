"""Aligned host arrays: aligned, contiguous, right values, and adopted by XLA's CPU client without a copy."""

import io

import jax
import numpy as np
import pytest

from jaxvis.convert.host_buffers import ALIGN, aligned_copy, aligned_empty, is_aligned, read_aligned


@pytest.mark.parametrize(
    "shape, dtype", [((3, 5), np.float32), ((7,), np.uint8), ((2, 0, 3), np.float64), ((), np.int32)]
)
def test_aligned_empty_is_aligned_and_contiguous(shape, dtype):
    for _ in range(5):  # different allocations, different raw offsets
        array = aligned_empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype and is_aligned(array)
        assert array.size == 0 or array.ctypes.data % ALIGN == 0


def test_aligned_copy_of_a_transposed_view_equals_numpy():
    source = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    view = source.transpose(2, 0, 1)
    out = aligned_copy(view, np.float32)
    assert is_aligned(out) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.ascontiguousarray(view).astype(np.float32))
    assert not np.shares_memory(out, source)
    assert not is_aligned(source[:, :, 1:])  # a strided view is not


def test_read_aligned_reads_the_window_and_detects_the_end():
    data = bytes(range(256)) * 3
    out = read_aligned(io.BytesIO(data), 5, 300)
    assert is_aligned(out) and out.tobytes() == data[5:305]
    assert read_aligned(io.BytesIO(data), 700, 100) is None


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="zero-copy adoption is a CPU client property")
def test_device_put_adopts_an_aligned_array_on_cpu():
    """What every loader relies on: the CPU client wraps the aligned array in place. A misaligned
    one is copied (this documents the reason for the module; if XLA changes, loads get slower, not wrong)."""
    array = aligned_copy(np.ones((256, 256), np.float32))
    assert jax.device_put(array).unsafe_buffer_pointer() == array.ctypes.data

"""`jaxvis.convert.kernel_layout.oihw_to_hwio`: the C++ tiled copy equals NumPy's transpose bit for bit."""

import mmap

import numpy as np
import pytest

from jaxvis import _core
from jaxvis.convert.host_buffers import is_aligned
from jaxvis.convert.kernel_layout import oihw_to_hwio

SHAPES = [(64, 3, 7, 7), (256, 64, 1, 1), (33, 17, 3, 3), (17, 33, 1, 7), (5, 4, 7, 1), (1, 1, 1, 1), (16, 1, 3, 3),
          (2048, 512, 1, 1), (40, 24, 5, 5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads", [1, 0, 3])
def test_equals_numpys_transpose(shape, threads):
    kernel = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    out = oihw_to_hwio(kernel, num_threads=threads)
    assert out.shape == (shape[2], shape[3], shape[1], shape[0]) and is_aligned(out)
    np.testing.assert_array_equal(out, kernel.transpose(2, 3, 1, 0))


def test_reads_a_read_only_mapping(tmp_path):
    kernel = np.random.default_rng(1).normal(size=(24, 8, 3, 3)).astype(np.float32)
    path = tmp_path / "k.bin"
    path.write_bytes(kernel.tobytes())
    with open(path, "rb") as f:
        mapped = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.float32).reshape(kernel.shape)
    assert not mapped.flags.writeable
    np.testing.assert_array_equal(oihw_to_hwio(mapped), kernel.transpose(2, 3, 1, 0))


@pytest.mark.parametrize("kernel", [
    np.arange(2 * 3 * 3 * 3, dtype=np.float64).reshape(2, 3, 3, 3),
    np.arange(2 * 3 * 3 * 3, dtype=np.float16).reshape(2, 3, 3, 3),
    np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(3, 2, 3, 3).transpose(1, 0, 2, 3),  # a strided view
    np.zeros((0, 3, 3, 3), np.float32),
])
def test_other_dtypes_and_views_fall_back_to_numpy(kernel):
    out = oihw_to_hwio(kernel)
    assert out.dtype == kernel.dtype
    np.testing.assert_array_equal(out, kernel.transpose(2, 3, 1, 0))


def test_the_extension_refuses_misuse():
    kernel = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        _core.oihw_to_hwio(kernel, np.zeros((3, 3, 4, 3), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        _core.oihw_to_hwio(np.zeros((4, 27), np.float32), np.zeros((3, 3, 3, 4), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        square = np.zeros((2, 2, 1, 1), np.float32)
        _core.oihw_to_hwio(square, square.reshape(1, 1, 2, 2))
    with pytest.raises(ValueError, match="4 dimensions"):
        oihw_to_hwio(np.zeros((3, 3), np.float32))

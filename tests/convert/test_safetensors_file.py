"""The safetensors container reader agrees with the safetensors package and refuses malformed files."""

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxvis.convert.host_buffers import is_aligned
from jaxvis.convert.safetensors_file import read_header, read_records
from jaxvis.errors import WeightFileError

SIZES = {"F32": 4, "I64": 8, "U8": 1}


def _read(path):
    with open(path, "rb") as file:
        header, start = read_header(file, str(path), "a safetensors file")
        return read_records(file, header, start, str(path), "a safetensors file", SIZES)


def test_records_match_what_was_saved(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"b": rng.standard_normal((3, 5)).astype(np.float32), "a": np.arange(7, dtype=np.int64),
               "empty": np.zeros((0, 4), np.float32), "mask": np.ones(3, np.uint8)}
    save_file(tensors, tmp_path / "t.safetensors")
    records = _read(tmp_path / "t.safetensors")
    assert set(records) == set(tensors)
    for name, array in tensors.items():
        record = records[name]
        assert record.shape == array.shape and is_aligned(record.data)
        np.testing.assert_array_equal(record.data.view(array.dtype).reshape(record.shape), array)


def _raw(tmp_path, header: dict, data: bytes):
    text = json.dumps(header).encode()
    path = tmp_path / "raw.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize("header, data, match", [
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
    ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "does not fit its 8 bytes"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "overlaps"),
    ({"x": {"dtype": "C128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16, "C128 tensors"),
    ({"x": {"dtype": "F32", "shape": "two", "data_offsets": [0, 8]}}, b"\0" * 8, "malformed"),
])
def test_malformed_files_are_one_line_errors(tmp_path, header, data, match):
    with pytest.raises(WeightFileError, match=match) as error:
        _read(_raw(tmp_path, header, data))
    assert "\n" not in str(error.value)


def test_a_foreign_file_has_no_header(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"PK\3\4" + b"\0" * 100)
    with pytest.raises(WeightFileError, match="not a safetensors file"):
        _read(path)

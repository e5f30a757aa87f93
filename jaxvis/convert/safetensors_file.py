"""The safetensors container, read into aligned host buffers: shared by `.safetensors` weights and `.jaxvis` files.

Contract: `read_header(file, path, kind)` gives the JSON header and the offset where the data
starts; `read_records(file, header, start, path, kind, itemsizes)` gives `{name: Record}` in the
file's order, each record's bytes read with one `readinto` straight into a 64-byte-aligned buffer
(see `host_buffers`). Both raise `WeightFileError` with one line naming the file and `kind` ("a
safetensors file", "a converted jaxvis model"). What the bytes mean (dtype widening, byte order)
is the caller's: this module checks only the container, i.e. that every record's dtype is one the
caller reads, that its offsets fit its shape and the file, and that no two records overlap.

The format: an 8-byte little-endian header length, a JSON object `{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then the data; offsets count from the
end of the header. The `safetensors` package would read it too, but into `bytes` (one more copy of
every tensor, and misaligned for XLA), hence this reader.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import numpy as np

from jaxvis.convert.host_buffers import read_aligned
from jaxvis.errors import WeightFileError

__all__ = ["DTYPE_NAMES", "ITEMSIZES", "MAX_HEADER", "Record", "read_header", "read_records"]

MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header

# safetensors dtype names -> the element type's name, as NumPy / ml_dtypes and torch spell it.
DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "C64": "complex64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32",
    "U16": "uint16", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
ITEMSIZES = {name: {"F64": 8, "C64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                    "I16": 2, "U16": 2}.get(name, 1) for name in DTYPE_NAMES}


@dataclasses.dataclass(frozen=True)
class Record:
    """One tensor's raw bytes (aligned uint8), its safetensors dtype name and shape."""

    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray


def read_header(file, path: str, kind: str) -> tuple[dict, int]:
    """The JSON header of the safetensors `file` and the offset where its data starts."""
    head = file.read(8)
    if len(head) < 8:
        raise WeightFileError(f"{path} is not {kind}: it is shorter than a safetensors header")
    length = int.from_bytes(head, "little")
    size = os.fstat(file.fileno()).st_size
    if not 2 <= length <= min(MAX_HEADER, size - 8):
        raise WeightFileError(f"{path} is not {kind} (no safetensors header; truncated or foreign)")
    raw = file.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightFileError(f"{path} is a corrupt {_noun(kind)} (its header is not JSON: {err})") from None
    if not isinstance(header, dict):
        raise WeightFileError(f"{path} is a corrupt {_noun(kind)} (its header is not a JSON object)")
    return header, 8 + length


def _noun(kind: str) -> str:
    """'a safetensors file' -> 'safetensors file', for 'a corrupt ...'."""
    return kind.split(" ", 1)[1] if kind.startswith(("a ", "an ")) else kind


def _entry(name: str, info, path: str, kind: str) -> tuple[str, tuple[int, ...], int, int]:
    try:
        dtype, shape, (first, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        first, end = int(first), int(end)
    except (KeyError, TypeError, ValueError):
        raise WeightFileError(f"{path} is a corrupt {_noun(kind)} (tensor {name!r} is malformed)") from None
    if not isinstance(dtype, str) or any(d < 0 for d in shape):
        raise WeightFileError(f"{path} is a corrupt {_noun(kind)} (tensor {name!r} is malformed)")
    return dtype, shape, first, end


def read_records(file, header: Mapping, start: int, path: str, kind: str,
                 itemsizes: Mapping[str, int]) -> dict[str, Record]:
    """Every tensor of `header` (all but `__metadata__`), in the order of its data in the file.

    Args:
      file: the open binary file. header, start: from `read_header`.
      path, kind: for error lines.
      itemsizes: the bytes per element of every dtype name the caller reads; any other dtype is an
        error naming it.
    """
    size = os.fstat(file.fileno()).st_size
    entries = [(name, *_entry(name, info, path, kind)) for name, info in header.items() if name != "__metadata__"]
    entries.sort(key=lambda entry: (entry[3], entry[4], entry[0]))
    records, data_end = {}, 0
    for name, dtype, shape, first, end in entries:
        if dtype not in itemsizes:
            raise WeightFileError(f"{path} holds {dtype} tensors ({name!r}), which jaxvis does not read")
        nbytes = int(np.prod(shape, dtype=np.int64)) * itemsizes[dtype]
        if end - first != nbytes or first < data_end:
            problem = "overlaps the one before it" if end - first == nbytes else f"does not fit its {end - first} bytes"
            raise WeightFileError(f"{path} is a corrupt {_noun(kind)} (tensor {name!r} of shape {shape} {problem})")
        if start + end > size:
            raise WeightFileError(f"{path} is truncated: tensor {name!r} needs bytes up to {start + end}, "
                                  f"the file has {size}")
        data = read_aligned(file, start + first, nbytes)
        if data is None:
            raise WeightFileError(f"{path} is truncated (tensor {name!r})")
        records[name] = Record(dtype, shape, data)
        data_end = end
    return records

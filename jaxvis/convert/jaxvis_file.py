"""The `.jaxvis` file: a safetensors file of named arrays plus JSON metadata saying what they are.

Contract: `write_file(path, tensors, metadata)` writes `{path tuple: array}` and a JSON-able dict
atomically; `read_file(path)` gives back `(metadata, {path tuple: array})` (arrays bit for bit, in
64-byte-aligned buffers that `jax.device_put` wraps without a copy on CPU), or raises a
`WeightFileError` with one line naming the file. Only JSON is parsed and bytes copied: nothing in
the file is executed. What the metadata means (which model, how to rebuild it) is
`jaxvis.models.converted`'s business; this module knows only its `format` and `version` keys.

The layout: tensors under their `/`-joined tree path (`params/features.0/kernel`) in their own
dtype (bfloat16 is widened to float32 on writing), and `__metadata__["jaxvis"]` holding the JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from jaxvis.convert.safetensors_file import DTYPE_NAMES, ITEMSIZES, read_header, read_records
from jaxvis.errors import JaxvisError, WeightFileError

__all__ = ["FORMAT", "READABLE_VERSIONS", "SUFFIX", "VERSION", "is_converted", "read_file", "read_metadata",
           "write_file"]

FORMAT = "jaxvis-converted"
# 3: models named by zoo entry ("entry") or graph kind, not Python import paths;
# 2: torchvision layouts hold `Linear` weights [out, in] (1 had `nn.Dense` kernels [in, out]).
VERSION = 3
READABLE_VERSIONS = (2, 3)
SUFFIX = ".jaxvis"
_META_KEY = "jaxvis"
_KIND = "a converted jaxvis model"
_READ_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL")


def _tensor_name(path: tuple[str, ...]) -> str:
    if any("/" in key or not key for key in path):
        raise JaxvisError(f"variable {path!r} has a key with '/' or an empty key")
    return "/".join(path)


def write_file(path, tensors: Mapping[tuple[str, ...], np.ndarray], metadata: dict) -> str:
    """Write `tensors` and `metadata` as one `.jaxvis` file; returns the path written.

    The file is written next to `path` and renamed into place, so a failed write never leaves a
    half-written file under the final name.

    Raises:
      JaxvisError: a key holding '/', metadata that is not JSON, or a file that cannot be written.
    """
    from safetensors.numpy import save_file

    path = os.fspath(path)
    arrays = {}
    for key, leaf in tensors.items():
        array = np.asarray(leaf)
        if array.dtype.name == "bfloat16":
            array = array.astype(np.float32)
        arrays[_tensor_name(key)] = np.ascontiguousarray(array)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise JaxvisError(f"cannot write {path}: no folder {folder}")
    text = json.dumps({"format": FORMAT, "version": VERSION, **metadata}, separators=(",", ":"))
    partial = f"{path}.partial"
    try:
        save_file(arrays, partial, metadata={_META_KEY: text})
        os.replace(partial, path)
    except OSError as err:
        raise JaxvisError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def _metadata(header: dict, path: str) -> dict:
    text = (header.get("__metadata__") or {}).get(_META_KEY)
    if text is None:
        raise WeightFileError(f"{path} is a safetensors file but not a converted jaxvis model (no jaxvis metadata); "
                              f"load it as weights of a zoo architecture (--arch) instead")
    try:
        meta = json.loads(text)
    except (TypeError, json.JSONDecodeError) as err:
        raise WeightFileError(f"{path} is a corrupt converted jaxvis model (its metadata is not JSON: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WeightFileError(f"{path} is not a converted jaxvis model (metadata format {meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{path} is a corrupt converted jaxvis model")
    if meta.get("version") not in READABLE_VERSIONS:
        raise WeightFileError(f"{path} is a converted jaxvis model of version {meta.get('version')!r}; this jaxvis "
                              f"reads versions {', '.join(map(str, READABLE_VERSIONS))}: convert the source again")
    return meta


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise WeightFileError(f"{path}: no such converted model file")
    if os.path.isdir(path):
        raise WeightFileError(f"{path} is a directory, not a converted model file")


def read_metadata(path) -> dict:
    """The JSON metadata of a `.jaxvis` file (name, source, layers, ...), without reading its tensors."""
    path = os.fspath(path)
    _check_file(path)
    with open(path, "rb") as file:
        header, _ = read_header(file, path, _KIND)
    return _metadata(header, path)


def is_converted(path) -> bool:
    """Whether `path` is a safetensors file carrying jaxvis metadata (cheap: reads the header only)."""
    try:
        read_metadata(path)
    except JaxvisError:
        return False
    return True


def _arrays(file, header: dict, start: int, path: str) -> dict[tuple[str, ...], np.ndarray]:
    flat = {}
    itemsizes = {name: ITEMSIZES[name] for name in _READ_DTYPES}
    for name, record in read_records(file, header, start, path, _KIND, itemsizes).items():
        if record.dtype == "BF16":
            array = (record.data.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = record.data.view(np.dtype(DTYPE_NAMES[record.dtype]).newbyteorder("<"))
        flat[tuple(name.split("/"))] = array.reshape(record.shape)
    return flat


def read_file(path) -> tuple[dict, dict[tuple[str, ...], np.ndarray]]:
    """`(metadata, {path tuple: array})` of a `.jaxvis` file.

    Raises:
      WeightFileError: a missing, truncated, corrupt or foreign file, or one of a version this
        jaxvis does not read.
    """
    path = os.fspath(path)
    _check_file(path)
    try:
        with open(path, "rb") as file:
            header, start = read_header(file, path, _KIND)
            meta = _metadata(header, path)
            return meta, _arrays(file, header, start, path)
    except OSError as err:
        raise WeightFileError(f"cannot read {path}: {err.strerror or err}") from None

"""Reads a `torch.export.save` archive (`.pt2`) without torch and without unpickling.

Contract: `read_export_archive(path)` returns an `ExportArchive`: the exported program's graph
JSON (`models/model.json`, `graph_module`) and its tensors as NumPy arrays -- parameters and
buffers from `data/weights/model_weights_config.json`, lifted tensor constants from
`data/constants/model_constants_config.json`, each stored as raw bytes (`use_pickle: false`) and
viewed with the recorded dtype, sizes, strides and storage offset. Nothing in the archive is
executed or unpickled: pickled entries (`sample_inputs`, a tensor with `use_pickle: true`) are
never read, and a tensor the graph needs that is only stored pickled is a `WeightFileError`.
Every problem -- not a zip, truncated, no `models/model.json`, a tensor whose bytes do not match
its description -- is one `WeightFileError` line, and nothing is returned half-read.

The file is memory-mapped and a tensor stored exactly as itself in native float32 (the usual case)
is a read-only view of the mapping, so reading costs no copy; the loader copies each weight once,
into the executor's layout (`jaxvis.models.graph.build`). Keep views only while loading: the
mapping follows the file, and a file truncated under a live view faults on access.
"""

from __future__ import annotations

import json
import math
import mmap
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from jaxvis.convert.zip_members import mapped_member
from jaxvis.errors import WeightFileError

__all__ = ["ExportArchive", "read_export_archive", "SCALAR_TYPES"]

# torch/_export/serde/schema.py ScalarType -> NumPy dtype (bfloat16 is widened by hand below).
SCALAR_TYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float16, 7: np.float32,
                8: np.float64, 12: np.bool_, 13: "bfloat16", 28: np.uint16, 34: np.uint32, 35: np.uint64}


class ExportArchive(NamedTuple):
    """A `.pt2` archive's contents: `program` is `model.json`'s `graph_module` (graph, signature,
    module_call_graph); `tensors` maps parameter / buffer / constant names (`features.0.weight`,
    `lifted_tensor_0`) to arrays; `meta` holds the other top-level fields (torch_version, ...)."""

    program: Mapping[str, Any]
    tensors: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]


def _fail(path: str, message: str) -> WeightFileError:
    return WeightFileError(f"{path}: {message}")


def _prefix(names: list[str], path: str) -> str:
    """The archive's root folder (`<name>/` before `models/model.json`)."""
    for name in names:
        if name.endswith("models/model.json"):
            return name[: -len("models/model.json")]
    raise _fail(path, "not a torch.export archive (no models/model.json); save it with torch.export.save")


def _int(value) -> int:
    if isinstance(value, Mapping):
        if "as_int" in value:
            return int(value["as_int"])
        raise ValueError(f"symbolic size {value}")
    return int(value)


def _tensor(data: np.ndarray, meta: Mapping, byteorder: str) -> np.ndarray:
    """View raw storage bytes (a uint8 view of the mapped file) as the tensor `meta` describes
    (dtype, sizes, strides, storage offset): the storage itself when it is exactly that tensor,
    C-contiguous and in native float32 (no copy), else a new array."""
    code = int(meta["dtype"])
    if code not in SCALAR_TYPES:
        raise ValueError(f"unsupported dtype code {code}")
    dtype = SCALAR_TYPES[code]
    bfloat16 = dtype == "bfloat16"
    np_dtype = np.dtype(np.uint16 if bfloat16 else dtype).newbyteorder("<" if byteorder == "little" else ">")
    sizes = tuple(_int(s) for s in meta["sizes"])
    contiguous = tuple(math.prod(sizes[i + 1:]) for i in range(len(sizes)))
    strides = tuple(_int(s) for s in meta.get("strides", ())) or contiguous
    offset = _int(meta.get("storage_offset", 0))
    count = data.size // np_dtype.itemsize
    storage = data[:count * np_dtype.itemsize].view(np_dtype)
    if sizes and min(sizes) == 0:
        return np.zeros(sizes, np_dtype.newbyteorder("="))
    last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
    if offset < 0 or last >= storage.size or min(strides, default=0) < 0:
        raise ValueError(f"its {storage.size} stored elements do not hold sizes {sizes} with strides {strides}")
    if (offset == 0 and strides == contiguous and storage.size == math.prod(sizes)
            and np_dtype == np.dtype(np.float32) and np_dtype.isnative):
        return storage.reshape(sizes)
    array = np.lib.stride_tricks.as_strided(storage[offset:], sizes, [s * np_dtype.itemsize for s in strides])
    array = np.array(array, dtype=np_dtype.newbyteorder("="))
    if bfloat16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _read_tensors(archive: zipfile.ZipFile, mapped: np.ndarray, prefix: str, folder: str, byteorder: str,
                  path: str) -> dict:
    config_name = f"{prefix}data/{folder}/model_{folder}_config.json"
    if config_name not in archive.namelist():
        return {}
    config = json.loads(archive.read(config_name)).get("config", {})
    tensors, names = {}, set(archive.namelist())
    for name, entry in config.items():
        if entry.get("use_pickle"):
            raise _fail(path, f"tensor {name!r} is stored pickled (use_pickle: true); jaxvis never unpickles "
                              f"archive data -- re-save the program with tensors as plain torch.Tensor values")
        member = f"{prefix}data/{folder}/{entry['path_name']}"
        if member not in names:
            raise _fail(path, f"tensor {name!r} names {entry['path_name']!r}, which the archive lacks")
        try:
            data = mapped_member(archive, mapped, archive.getinfo(member))
            tensors[name] = _tensor(data, entry["tensor_meta"], byteorder)
        except (ValueError, KeyError, TypeError) as error:
            raise _fail(path, f"tensor {name!r} cannot be read: {error}") from None
    return tensors


def read_export_archive(path: str) -> ExportArchive:
    """Read a `.pt2` archive (see the module docstring). Raises `WeightFileError`."""
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as file:
            mapped = np.frombuffer(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
            names = archive.namelist()
            prefix = _prefix(names, path)
            byteorder = "little"
            if f"{prefix}byteorder" in names:
                byteorder = archive.read(f"{prefix}byteorder").decode().strip() or "little"
            model = json.loads(archive.read(f"{prefix}models/model.json"))
            tensors = _read_tensors(archive, mapped, prefix, "weights", byteorder, path)
            for name, array in _read_tensors(archive, mapped, prefix, "constants", byteorder, path).items():
                tensors.setdefault(name, array)
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not a .pt2 archive") from None
    except zipfile.BadZipFile as error:
        raise _fail(path, f"not a readable .pt2 zip archive (truncated or corrupt: {error})") from None
    except (EOFError, OSError) as error:
        raise _fail(path, f"the .pt2 archive is truncated or unreadable ({error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _fail(path, f"the archive's JSON is corrupt ({error})") from None
    if not isinstance(model, Mapping) or "graph_module" not in model:
        raise _fail(path, "models/model.json holds no exported program (no graph_module)")
    meta = {k: v for k, v in model.items() if k != "graph_module"}
    return ExportArchive(model["graph_module"], tensors, meta)

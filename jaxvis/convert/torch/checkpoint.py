"""PyTorch checkpoints (and safetensors files) into NumPy, without torch and without running the file.

Contract: `load_state_dict(path)` maps a weight file to a flat, ordered `{name: np.ndarray}` --
C-contiguous, native byte order, in the file's order, bfloat16 (and float8) widened to float32,
every other dtype kept -- or raises `WeightFileError` with one line that names the file. Nothing in
a file is ever imported, called or executed.

The formats are told apart by their first bytes, not by the extension:

* zip (the `torch.save` default since 1.6): `<prefix>/data.pkl` is a pickle in which each tensor is
  a call `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` and each storage is a
  persistent id `("storage", <Storage class>, key, location, numel)`; the storage's bytes are the
  record `<prefix>/data/<key>`, in the byte order named by `<prefix>/byteorder` (little if absent).
* legacy (`_use_new_zipfile_serialization=False`; torchvision's MobileNetV2 is one): five pickles in
  a row -- a magic number, protocol version 1001, a sys_info dict, the object (its storage ids carry a
  sixth field, an old-style storage view), the list of storage keys -- then, for each key in that
  order, its element count as a little-endian int64 followed by its raw little-endian bytes.
* safetensors: an 8-byte header length, a JSON header, raw bytes (`jaxvis.convert.safetensors_file`).

Every storage is read with one `readinto` into 64-byte-aligned memory (`host_buffers`), and a
tensor that is its storage in C order is a view of it, not a copy: `jax.device_put` then adopts
the array as it is on CPU, so loading costs little more than reading the bytes.

Safety: the pickles are read by `RestrictedUnpickler`, whose `find_class` answers from a fixed
table of harmless stand-ins written here (tensor rebuilders that only record offsets, storage classes
and dtypes that only name an element type, `collections.OrderedDict`). torch is never imported. A
pickle can call (REDUCE, NEWOBJ) only what `find_class` hands it, so every other global is refused
before anything runs, and the stand-ins are frozen so a BUILD opcode cannot re-wire them.
Tensors become arrays only after the whole pickle is read, because a legacy file stores its bytes
after the pickle.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

from jaxvis.convert.host_buffers import read_aligned
from jaxvis.convert.safetensors_file import DTYPE_NAMES, ITEMSIZES, read_header, read_records
from jaxvis.convert.torch.unpickler import (
    DTYPES,
    Blob,
    Corrupt,
    RestrictedUnpickler,
    StorageRef,
    finish,
    index,
    materialize,
    storage_fields,
)
from jaxvis.convert.zip_members import read_stored_member
from jaxvis.errors import WeightFileError, one_line

__all__ = ["load_pickled_object", "load_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_DATAPARALLEL_PREFIX = "module."

# Exceptions that malformed bytes raise inside pickle, zipfile, struct or numpy; each becomes a
# WeightFileError. Anything else escaping the reader is a bug in it and keeps its traceback.
_BAD_BYTES = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
    OverflowError, MemoryError, RecursionError, zipfile.BadZipFile, zlib.error, struct.error,
    NotImplementedError, OSError,
)


# ---------------------------------------------------------------------------------------------
# The three formats.


def _load_zip(path: str):
    try:
        archive = zipfile.ZipFile(path)
    except _BAD_BYTES as err:
        raise WeightFileError(f"{path} is a truncated or corrupt zip archive ({one_line(err)})") from None
    with archive:
        names = set(archive.namelist())
        pickles = sorted(n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1))
        if not pickles:
            raise WeightFileError(f"{path} is a zip archive without data.pkl, not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "constants.pkl" in names:
            raise WeightFileError(
                f"{path} is a TorchScript archive (torch.jit.save), not a state_dict: in PyTorch, run "
                "torch.save(torch.jit.load(path).state_dict(), new_path) and load that")
        byteorder = "<"
        if prefix + "byteorder" in names:
            marker = archive.read(prefix + "byteorder")
            if marker not in (b"little", b"big"):
                raise Corrupt(f"its byteorder record says {marker[:20]!r}")
            byteorder = "<" if marker == b"little" else ">"
        blobs: dict[str, Blob] = {}

        def storage(fields):
            cls, key = storage_fields(fields, 4)
            if key not in blobs:
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise Corrupt(f"storage {key!r} is missing from the archive")
                blobs[key] = Blob(key, _read_member(archive, file, archive.getinfo(record)))
            return StorageRef(blobs[key], cls.dtype)

        data_pkl = archive.read(pickles[0])
        with open(path, "rb") as file:
            obj = RestrictedUnpickler(io.BytesIO(data_pkl), path, storage, lambda: data_pkl).load()
    return materialize(obj, byteorder, {})


def _read_member(archive: zipfile.ZipFile, file, info: zipfile.ZipInfo) -> np.ndarray:
    try:
        return read_stored_member(archive, file, info)
    except zipfile.BadZipFile as error:
        raise Corrupt(str(error)) from None


def _load_legacy(path: str, file):
    def pickle_bytes():
        with open(path, "rb") as f:
            return f.read(1 << 24)  # a pickled model's attribute names sit near the start

    def load(storage=None):
        return RestrictedUnpickler(file, path, storage, pickle_bytes).load()

    magic = load()
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise WeightFileError(f"{path} is a pickle, but not one written by torch.save (no magic number)")
    version = load()
    if version != _LEGACY_PROTOCOL:
        raise WeightFileError(
            f"{path} is a legacy PyTorch checkpoint of protocol {version!r}; jaxvis reads {_LEGACY_PROTOCOL}")
    load()  # sys_info: sizes and byte order of the writer; the storage bytes are little-endian regardless
    blobs: dict[str, Blob] = {}

    def storage(fields):
        cls, key = storage_fields(fields, 5)
        blob = blobs.setdefault(key, Blob(key, count_dtype=cls.dtype))  # counts are in the first dtype's elements
        view = fields[4]
        if view is None:
            return StorageRef(blob, cls.dtype)
        if not isinstance(view, tuple) or len(view) != 3:
            raise Corrupt(f"malformed storage view {view!r}")
        item = np.dtype(cls.dtype.code or "u1").itemsize
        start, size = index(view[1], "view offset"), index(view[2], "view size")
        return StorageRef(blob, cls.dtype, start * item, size * item)

    obj = load(storage)
    keys = load()
    if not isinstance(keys, list):
        raise Corrupt("the list of storage keys is missing")
    left = os.fstat(file.fileno()).st_size - file.tell()
    for key in keys:
        blob = blobs.get(str(key))
        if blob is None:
            raise Corrupt(f"storage {key!r} is listed but no tensor uses it")
        head = file.read(8)
        left -= 8
        if len(head) < 8:
            raise WeightFileError(f"{path} is truncated: the element count of storage {key!r} is missing")
        count = int.from_bytes(head, "little", signed=True)
        nbytes = count * np.dtype(blob.count_dtype.code or "u1").itemsize
        if count < 0:
            raise Corrupt(f"storage {key!r} has {count} elements")
        if nbytes > left:
            raise WeightFileError(f"{path} is truncated: storage {key!r} needs {nbytes} bytes, {left} remain")
        blob.data = read_aligned(file, file.tell(), nbytes)
        left -= nbytes
    return materialize(obj, "<", {})


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as file:
        header, start = read_header(file, path, "a safetensors file")
        records = read_records(file, header, start, path, "a safetensors file", ITEMSIZES)
    out = {}
    for name, record in records.items():
        dtype = DTYPES[DTYPE_NAMES[record.dtype]]
        stored = record.data.view(np.dtype(dtype.code).newbyteorder("<")).reshape(record.shape)
        native = stored.dtype.isnative and dtype.widen is None
        out[name] = stored if native else finish(stored, dtype)  # the buffer is our own, aligned
    return out


_FOREIGN = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras weights?)"), (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x1f\x8b", "a gzip file"), (b"%PDF", "a PDF"),
)


def _sniff(path: str) -> str:
    """'zip', 'pickle' or 'safetensors' from the first bytes, or a WeightFileError naming what the file is."""
    if not os.path.exists(path):
        raise WeightFileError(f"{path}: no such weight file")
    if os.path.isdir(path):
        raise WeightFileError(f"{path} is a directory, not a weight file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as err:
        raise WeightFileError(f"cannot read {path}: {one_line(err.strerror or err)}") from None
    if size == 0:
        raise WeightFileError(f"{path} is empty")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if path.endswith(".safetensors") or (head[8:9] == b"{" and 2 <= header_len <= size - 8):
        return "safetensors"
    if head[257:262] == b"ustar":
        raise WeightFileError(f"{path} is a tar-format checkpoint from PyTorch < 0.4, which jaxvis does not read: "
                              "load it in PyTorch and torch.save it again")
    for magic, what in _FOREIGN:
        if head.startswith(magic):
            raise WeightFileError(f"{path} is {what}, not a PyTorch checkpoint or a safetensors file")
    raise WeightFileError(f"{path} is not a PyTorch checkpoint (zip or legacy pickle) or a safetensors file: "
                          f"it starts with {head[:8]!r}")


# ---------------------------------------------------------------------------------------------
# Public API.


def load_pickled_object(path):
    """The object a `torch.save` file holds, with every tensor as a NumPy array; nothing is executed.

    Args:
      path: a `.pth` / `.pt` / `.bin` file in the zip or the legacy format (a `.safetensors` file gives
        its flat dict of arrays).

    Returns:
      The unpickled structure: dicts (`OrderedDict` where saved so), lists, tuples, numbers, strings
      and C-contiguous arrays in native byte order (bfloat16 and float8 read as float32).

    Raises:
      WeightFileError: with one line, for a missing, empty, truncated, corrupt or foreign file, and for
        a pickle that names anything but tensors, storages, dtypes and `OrderedDict`.

    Example:
      >>> ckpt = load_pickled_object("resnet.pth")          # doctest: +SKIP
      >>> ckpt["epoch"], ckpt["state_dict"]["fc.bias"].shape  # doctest: +SKIP
    """
    path = os.fspath(path)
    kind = _sniff(path)
    try:
        if kind == "safetensors":
            return _load_safetensors(path)
        if kind == "zip":
            return _load_zip(path)
        with open(path, "rb") as file:
            return _load_legacy(path, file)
    except WeightFileError:
        raise
    except Corrupt as err:
        raise WeightFileError(f"{path} is corrupt: {one_line(err)}") from None
    except _BAD_BYTES as err:
        raise WeightFileError(f"{path} is truncated or corrupt ({type(err).__name__}: {one_line(err)})") from None


def load_state_dict(path) -> dict[str, np.ndarray]:
    """The flat `{name: array}` state_dict in a PyTorch checkpoint or safetensors file, in the file's order.

    The tensors may sit at the top level or under `state_dict`, `model_state_dict`, `model` or `net`
    (nested containers are followed); a leading `module.` (DataParallel) is stripped from every key.
    No entry is dropped (`num_batches_tracked` included).

    Args:
      path: a zip or legacy `torch.save` file, or a `.safetensors` file.

    Returns:
      An ordered dict of C-contiguous NumPy arrays in native byte order; bfloat16 (and float8) become
      float32, every other dtype is kept.

    Raises:
      WeightFileError: as `load_pickled_object`, and when the file holds no dict of tensors.

    Example:
      >>> weights = load_state_dict("mobilenet_v2-b0353104.pth")  # doctest: +SKIP
      >>> weights["features.0.0.weight"].shape                     # doctest: +SKIP
      (32, 3, 3, 3)
    """
    path = os.fspath(path)
    obj = load_pickled_object(path)
    for _ in range(8):
        if not isinstance(obj, dict):
            raise WeightFileError(f"{path} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")
        stray = next((k for k, v in obj.items() if not isinstance(v, np.ndarray)), None)
        if stray is None:
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise WeightFileError(
                f"{path} holds no state_dict: its entry {stray!r} is a {type(obj[stray]).__name__}, and no "
                f"{', '.join(repr(k) for k in _CONTAINER_KEYS)} entry holds the tensors")
        obj = inner
    else:
        raise WeightFileError(f"{path} nests its state_dict too deeply")
    weights: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightFileError(f"{path} has a state_dict key {key!r} that is not a string")
        name = key[len(_DATAPARALLEL_PREFIX):] if key.startswith(_DATAPARALLEL_PREFIX) else key
        if name in weights:
            raise WeightFileError(f"{path} has two entries named {name!r} once the 'module.' prefix is stripped")
        weights[name] = value
    return weights

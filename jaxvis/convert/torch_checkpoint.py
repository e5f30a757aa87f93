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

Safety: the pickles are read by `_RestrictedUnpickler`, whose `find_class` answers from a fixed
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
import sys
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from jaxvis.convert.host_buffers import aligned_copy, read_aligned
from jaxvis.convert.safetensors_file import read_header, read_records
from jaxvis.errors import WeightFileError

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


class _Corrupt(Exception):
    """Raised inside the reader for a malformed file; `load_pickled_object` adds the path."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------
# Stand-ins for the torch objects a checkpoint's pickle names.


def _refuse_setstate(self, state):
    raise AttributeError(f"{type(self).__name__} takes no pickled state")


def _sealed(cls):
    """No BUILD opcode may change a stand-in: frozen slotted dataclasses would otherwise accept any state."""
    cls.__setstate__ = _refuse_setstate
    return cls


@_sealed
@dataclass(frozen=True, slots=True)
class _DType:
    """A torch dtype: the NumPy type code of one stored element, and how to widen it if NumPy lacks it."""

    name: str
    code: str | None  # None: torch has it, jaxvis cannot read it (quantized, complex32, ...)
    widen: str | None = None  # "bfloat16" or an ml_dtypes float8 name: stored as uint, read as float32


_DTYPE_LIST = (
    _DType("float64", "f8"), _DType("float32", "f4"), _DType("float16", "f2"),
    _DType("bfloat16", "u2", "bfloat16"),
    _DType("complex128", "c16"), _DType("complex64", "c8"), _DType("complex32", None),
    _DType("int64", "i8"), _DType("int32", "i4"), _DType("int16", "i2"), _DType("int8", "i1"),
    _DType("uint64", "u8"), _DType("uint32", "u4"), _DType("uint16", "u2"), _DType("uint8", "u1"),
    _DType("bool", "b1"),
    _DType("float8_e4m3fn", "u1", "float8_e4m3fn"), _DType("float8_e5m2", "u1", "float8_e5m2"),
    _DType("float8_e4m3fnuz", "u1", "float8_e4m3fnuz"), _DType("float8_e5m2fnuz", "u1", "float8_e5m2fnuz"),
    _DType("qint8", None), _DType("quint8", None), _DType("qint32", None),
)
_DTYPES = {d.name: d for d in _DTYPE_LIST}
_DTYPE_ALIASES = {
    "float": "float32", "double": "float64", "half": "float16", "cfloat": "complex64",
    "cdouble": "complex128", "chalf": "complex32", "long": "int64", "int": "int32", "short": "int16",
}


@_sealed
@dataclass(frozen=True, slots=True)
class _StorageClass:
    """`torch.FloatStorage` and friends: in a pickle they only say which dtype a storage holds."""

    name: str
    dtype: _DType


_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}


@_sealed
@dataclass(frozen=True, slots=True)
class _TensorType:
    """`torch.Tensor` / `torch.nn.Parameter` as the class argument of `_rebuild_from_type_v2`."""

    name: str


class _Blob:
    """The bytes of one storage key (an aligned uint8 array); they arrive with the persistent id (zip)
    or after the pickle (legacy)."""

    __slots__ = ("key", "data", "count_dtype")

    def __init__(self, key: str, data: np.ndarray | None = None, count_dtype: _DType | None = None):
        self.key, self.data, self.count_dtype = key, data, count_dtype


@_sealed
@dataclass(frozen=True, slots=True)
class _StorageRef:
    """What a persistent id becomes: a storage's bytes seen as `dtype` (an old storage view: a byte window)."""

    blob: _Blob
    dtype: _DType
    start: int = 0
    nbytes: int | None = None

    def data(self) -> memoryview:
        if self.blob.data is None:
            raise _Corrupt(f"storage {self.blob.key!r} has no data")
        view = memoryview(self.blob.data)
        end = len(view) if self.nbytes is None else self.start + self.nbytes
        return view[self.start:end]


@_sealed
@dataclass(frozen=True, slots=True)
class _TensorRecord:
    """A tensor as the pickle describes it; it becomes an array once every storage has its bytes."""

    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple
    dtype: _DType
    conj: bool = False
    neg: bool = False


class _Call:
    """A function the pickle may call by name. Frozen: a BUILD opcode cannot set attributes on it."""

    __slots__ = ("_fn", "qualname")

    def __init__(self, fn, qualname: str):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "qualname", qualname)

    def __setattr__(self, name, value):
        raise AttributeError(f"{self.qualname} is read-only")

    __setstate__ = _refuse_setstate

    def __call__(self, *args):
        return self._fn(*args)


def _index(value, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _Corrupt(f"a tensor's {what} is {value!r}, not a non-negative int")
    return value


def _shape(value, what: str) -> tuple:
    if not isinstance(value, (tuple, list)):
        raise _Corrupt(f"a tensor's {what} is a {type(value).__name__}, not a tuple")
    return tuple(_index(v, what) for v in value)


def _record(storage, offset, size, stride, dtype=None, metadata=None) -> _TensorRecord:
    if not isinstance(storage, _StorageRef):
        raise _Corrupt(f"a tensor is built on a {type(storage).__name__}, not on a storage")
    if dtype is not None and not isinstance(dtype, _DType):
        raise _Corrupt(f"a tensor's dtype is a {type(dtype).__name__}")
    size, stride = _shape(size, "size"), _shape(stride, "stride")
    if len(size) != len(stride):
        raise _Corrupt(f"a tensor has size {size} but stride {stride}")
    flags = metadata if isinstance(metadata, dict) else {}
    return _TensorRecord(storage, _index(offset, "storage offset"), size, stride,
                         dtype or storage.dtype, bool(flags.get("conj")), bool(flags.get("neg")))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _record(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _record(storage, storage_offset, size, stride, None, metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    return _record(storage, storage_offset, size, stride, dtype, metadata)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    if not isinstance(data, _TensorRecord):
        raise _Corrupt(f"a Parameter wraps a {type(data).__name__}, not a tensor")
    return data


_REBUILDERS: dict[str, object] = {}


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in _REBUILDERS.values() or not isinstance(new_type, _TensorType):
        raise _Corrupt("a tensor subclass is rebuilt with something other than a tensor rebuilder")
    if not isinstance(args, tuple):
        raise _Corrupt("a tensor subclass has no argument tuple")
    return func(*args)


def _size(dims=()):
    return _shape(dims, "size")


def _device(kind="cpu", index=None):
    return str(kind) if index is None else f"{kind}:{index}"


def _allowed_globals() -> dict[tuple[str, str], object]:
    """(module, name) -> stand-in: everything a state_dict pickle from torch 0.4 to 2.x names."""
    table: dict[tuple[str, str], object] = {("collections", "OrderedDict"): OrderedDict}
    for name, fn in (("_rebuild_tensor", _rebuild_tensor), ("_rebuild_tensor_v2", _rebuild_tensor_v2),
                     ("_rebuild_tensor_v3", _rebuild_tensor_v3), ("_rebuild_parameter", _rebuild_parameter),
                     ("_rebuild_parameter_with_state", _rebuild_parameter)):
        _REBUILDERS[name] = table[("torch._utils", name)] = _Call(fn, f"torch._utils.{name}")
    table[("torch._tensor", "_rebuild_from_type_v2")] = _Call(_rebuild_from_type_v2,
                                                              "torch._tensor._rebuild_from_type_v2")
    table[("torch", "Tensor")] = _TensorType("torch.Tensor")
    table[("torch.nn.parameter", "Parameter")] = _TensorType("torch.nn.parameter.Parameter")
    table[("torch", "Size")] = _Call(_size, "torch.Size")
    table[("torch", "device")] = _Call(_device, "torch.device")
    for module in ("torch", "torch.cuda", "torch.storage"):  # torch.cuda.*: legacy files saved from a GPU
        for name, dtype in _STORAGE_DTYPES.items():
            table[(module, name)] = _StorageClass(name, _DTYPES[dtype])
    for name in (*_DTYPES, *_DTYPE_ALIASES):
        table[("torch", name)] = _DTYPES[_DTYPE_ALIASES.get(name, name)]
    return table


_ALLOWED = _allowed_globals()

# A class from these packages in a checkpoint is a pickled nn.Module.
_MODEL_PACKAGES = ("torch.nn", "torchvision", "timm", "torchaudio", "__main__")


def _refusal(path: str, module: str, name: str, pickle_bytes) -> WeightFileError:
    """The one-line error for a global that is not allow-listed, worded by what it most likely is."""
    root = module.partition(".")[0]
    is_class = name[:1].isupper()
    in_model_package = any(module == p or module.startswith(p + ".") for p in _MODEL_PACKAGES)
    user_module = root not in sys.stdlib_module_names and root not in ("torch", "numpy", "__builtin__")
    if is_class and (in_model_package or (user_module and _has_module_attributes(pickle_bytes()))):
        return WeightFileError(
            f"{path} holds a pickled whole model ({module}.{name}), not a state_dict: in PyTorch, "
            "run torch.save(model.state_dict(), path) and load that")
    if root == "torch" and (name.startswith("_rebuild") or name.endswith("Storage")):
        return WeightFileError(
            f"{path} holds tensors of a kind jaxvis does not read ({module}.{name}); it reads dense tensors "
            "of the usual dtypes: in PyTorch, convert them (e.g. .dequantize(), .to_dense()) and save again")
    return WeightFileError(
        f"refused to load {path}: its pickle asks for {module}.{name}, which jaxvis never executes")


def _has_module_attributes(data: bytes) -> bool:
    """Whether a pickle carries the instance attributes every pickled torch.nn.Module has."""
    return b"_parameters" in data and b"_modules" in data


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles with `_ALLOWED` only; `storage(fields)` turns a storage persistent id into a `_StorageRef`."""

    def __init__(self, file, path: str, storage=None, pickle_bytes=lambda: b""):
        super().__init__(file, encoding="utf-8")
        self._path, self._storage, self._pickle_bytes = path, storage, pickle_bytes

    def find_class(self, module, name):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _refusal(self._path, str(module), str(name), self._pickle_bytes)
        return found

    def persistent_load(self, pid):
        kind = pid[0] if isinstance(pid, tuple) and pid else None
        kind = kind.decode("ascii", "replace") if isinstance(kind, bytes) else kind
        if kind == "storage" and self._storage is not None:
            return self._storage(pid[1:])
        if kind == "module":
            raise WeightFileError(
                f"{self._path} holds a pickled whole model, not a state_dict: in PyTorch, "
                "run torch.save(model.state_dict(), path) and load that")
        raise _Corrupt(f"its pickle has a persistent id of kind {kind!r}; only storages are read")


def _storage_fields(fields: tuple, count: int) -> tuple[_StorageClass, str]:
    if len(fields) != count or not isinstance(fields[0], _StorageClass):
        raise _Corrupt(f"malformed storage id {fields!r}")
    key = fields[1].decode("ascii") if isinstance(fields[1], bytes) else fields[1]
    if not isinstance(key, (str, int)):
        raise _Corrupt(f"malformed storage key {key!r}")
    return fields[0], str(key)


# ---------------------------------------------------------------------------------------------
# Records into arrays.


def _finish(stored: np.ndarray, dtype: _DType) -> np.ndarray:
    """`stored` (elements as in the file) as an aligned C-contiguous copy in native order; float32
    where NumPy lacks the type."""
    if dtype.widen == "bfloat16":  # the top half of a float32; in place, since `x << 16` makes 0-d arrays scalars
        wide = aligned_copy(stored, np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    if dtype.widen is not None:
        try:
            import ml_dtypes
        except ImportError:
            raise _Corrupt(f"reading torch.{dtype.name} tensors needs the ml_dtypes package") from None
        return aligned_copy(stored.view(getattr(ml_dtypes, dtype.widen)), np.float32)
    return aligned_copy(stored, stored.dtype.newbyteorder("="))


def _to_array(rec: _TensorRecord, byteorder: str) -> np.ndarray:
    """The tensor `rec` describes. A tensor that is its storage's bytes in C order (the usual case)
    is a view of the storage buffer, which is our own aligned memory: no copy. Any other layout,
    byte order or dtype is copied once into a new aligned array."""
    dtype = rec.dtype
    if dtype.code is None:
        raise _Corrupt(f"it holds torch.{dtype.name} tensors, which jaxvis does not read")
    stored = np.dtype(dtype.code).newbyteorder(byteorder)
    item = stored.itemsize
    if 0 in rec.size:
        out = _finish(np.empty(rec.size, stored), dtype)
    else:
        extent = 1 + sum((n - 1) * s for n, s in zip(rec.size, rec.stride))
        first, end = rec.offset * item, (rec.offset + extent) * item
        data = rec.storage.data()
        if end > len(data):
            raise _Corrupt(f"storage {rec.storage.blob.key!r} holds {len(data)} bytes, but a tensor of shape "
                           f"{rec.size} at offset {rec.offset} needs {end}")
        flat = np.frombuffer(data, np.uint8, count=end - first, offset=first).view(stored)
        strides = tuple(s * item for s in rec.stride)
        view = np.lib.stride_tricks.as_strided(flat, rec.size, strides, writeable=flat.flags.writeable)
        if view.flags.c_contiguous and view.flags.writeable and stored.isnative and dtype.widen is None \
                and not (rec.conj or rec.neg):
            return view
        out = _finish(view, dtype)
    if rec.conj:
        np.conjugate(out, out=out)
    if rec.neg:
        np.negative(out, out=out)
    return out


def _materialize(obj, byteorder: str, memo: dict):
    """`obj` with every tensor record (and bare storage) replaced by an array; dicts and lists in place."""
    if id(obj) in memo:
        return memo[id(obj)][1]
    if isinstance(obj, _TensorRecord):
        out = _to_array(obj, byteorder)
    elif isinstance(obj, _StorageRef):  # a storage saved on its own: its elements, 1-D
        n = len(obj.data()) // np.dtype(obj.dtype.code or "u1").itemsize
        out = _to_array(_TensorRecord(obj, 0, (n,), (1,), obj.dtype), byteorder)
    elif isinstance(obj, dict):
        memo[id(obj)] = (obj, obj)
        out = obj
        for key in obj:
            obj[key] = _materialize(obj[key], byteorder, memo)
    elif isinstance(obj, list):
        memo[id(obj)] = (obj, obj)
        out = obj
        obj[:] = [_materialize(v, byteorder, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_materialize(v, byteorder, memo) for v in obj)
    else:
        out = obj
    memo[id(obj)] = (obj, out)  # holding obj keeps its id from being reused while we walk
    return out


# ---------------------------------------------------------------------------------------------
# The three formats.


def _load_zip(path: str):
    try:
        archive = zipfile.ZipFile(path)
    except _BAD_BYTES as err:
        raise WeightFileError(f"{path} is a truncated or corrupt zip archive ({_one_line(err)})") from None
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
                raise _Corrupt(f"its byteorder record says {marker[:20]!r}")
            byteorder = "<" if marker == b"little" else ">"
        blobs: dict[str, _Blob] = {}

        def storage(fields):
            cls, key = _storage_fields(fields, 4)
            if key not in blobs:
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise _Corrupt(f"storage {key!r} is missing from the archive")
                blobs[key] = _Blob(key, _read_member(archive, file, archive.getinfo(record)))
            return _StorageRef(blobs[key], cls.dtype)

        data_pkl = archive.read(pickles[0])
        with open(path, "rb") as file:
            obj = _RestrictedUnpickler(io.BytesIO(data_pkl), path, storage, lambda: data_pkl).load()
    return _materialize(obj, byteorder, {})


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


def _read_member(archive: zipfile.ZipFile, file, info: zipfile.ZipInfo) -> np.ndarray:
    """A zip record's bytes as an aligned uint8 array, CRC-checked like `ZipFile.read`.

    torch.save stores records uncompressed, so their bytes sit in the file as they are: read them
    with one `readinto` at the offset the record's local header gives, rather than through
    `ZipFile.read` (which makes a `bytes` object that would then be copied into aligned memory).
    """
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # compressed or encrypted
        return aligned_copy(np.frombuffer(archive.read(info), np.uint8))
    file.seek(info.header_offset)
    head = file.read(_LOCAL_HEADER.size)
    if len(head) < _LOCAL_HEADER.size:
        raise _Corrupt(f"record {info.filename!r} is cut off")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(head)
    if signature != b"PK\x03\x04":
        raise _Corrupt(f"record {info.filename!r} has no local header")
    data = read_aligned(file, info.header_offset + _LOCAL_HEADER.size + name_length + extra_length, info.file_size)
    if data is None:
        raise _Corrupt(f"record {info.filename!r} is cut off")
    if zlib.crc32(data) != info.CRC:
        raise _Corrupt(f"record {info.filename!r} fails its CRC check")
    return data


def _load_legacy(path: str, file):
    def pickle_bytes():
        with open(path, "rb") as f:
            return f.read(1 << 24)  # a pickled model's attribute names sit near the start

    def load(storage=None):
        return _RestrictedUnpickler(file, path, storage, pickle_bytes).load()

    magic = load()
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise WeightFileError(f"{path} is a pickle, but not one written by torch.save (no magic number)")
    version = load()
    if version != _LEGACY_PROTOCOL:
        raise WeightFileError(
            f"{path} is a legacy PyTorch checkpoint of protocol {version!r}; jaxvis reads {_LEGACY_PROTOCOL}")
    load()  # sys_info: sizes and byte order of the writer; the storage bytes are little-endian regardless
    blobs: dict[str, _Blob] = {}

    def storage(fields):
        cls, key = _storage_fields(fields, 5)
        blob = blobs.setdefault(key, _Blob(key, count_dtype=cls.dtype))  # counts are in the first dtype's elements
        view = fields[4]
        if view is None:
            return _StorageRef(blob, cls.dtype)
        if not isinstance(view, tuple) or len(view) != 3:
            raise _Corrupt(f"malformed storage view {view!r}")
        item = np.dtype(cls.dtype.code or "u1").itemsize
        start, size = _index(view[1], "view offset"), _index(view[2], "view size")
        return _StorageRef(blob, cls.dtype, start * item, size * item)

    obj = load(storage)
    keys = load()
    if not isinstance(keys, list):
        raise _Corrupt("the list of storage keys is missing")
    left = os.fstat(file.fileno()).st_size - file.tell()
    for key in keys:
        blob = blobs.get(str(key))
        if blob is None:
            raise _Corrupt(f"storage {key!r} is listed but no tensor uses it")
        head = file.read(8)
        left -= 8
        if len(head) < 8:
            raise WeightFileError(f"{path} is truncated: the element count of storage {key!r} is missing")
        count = int.from_bytes(head, "little", signed=True)
        nbytes = count * np.dtype(blob.count_dtype.code or "u1").itemsize
        if count < 0:
            raise _Corrupt(f"storage {key!r} has {count} elements")
        if nbytes > left:
            raise WeightFileError(f"{path} is truncated: storage {key!r} needs {nbytes} bytes, {left} remain")
        blob.data = read_aligned(file, file.tell(), nbytes)
        left -= nbytes
    return _materialize(obj, "<", {})


_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "C64": "complex64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32",
    "U16": "uint16", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as file:
        header, start = read_header(file, path, "a safetensors file")
        itemsizes = {name: np.dtype(_DTYPES[dtype].code).itemsize for name, dtype in _SAFETENSORS_DTYPES.items()}
        records = read_records(file, header, start, path, "a safetensors file", itemsizes)
    out = {}
    for name, record in records.items():
        dtype = _DTYPES[_SAFETENSORS_DTYPES[record.dtype]]
        stored = record.data.view(np.dtype(dtype.code).newbyteorder("<")).reshape(record.shape)
        native = stored.dtype.isnative and dtype.widen is None
        out[name] = stored if native else _finish(stored, dtype)  # the buffer is our own, aligned
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
        raise WeightFileError(f"cannot read {path}: {_one_line(err.strerror or err)}") from None
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
    except _Corrupt as err:
        raise WeightFileError(f"{path} is corrupt: {_one_line(err)}") from None
    except _BAD_BYTES as err:
        raise WeightFileError(f"{path} is truncated or corrupt ({type(err).__name__}: {_one_line(err)})") from None


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

"""The restricted unpickler behind the PyTorch checkpoint reader: pickles read without running them.

Contract: `RestrictedUnpickler(file, path=...).load()` reads a torch checkpoint's pickle into plain
Python containers holding `TensorRecord`s (storage, offset, size, stride, dtype) in place of
tensors; `materialize(obj, byteorder, memo)` turns the records into NumPy arrays once the storages'
bytes (`Blob`) are known. Anything else a pickle names is refused with a `WeightFileError` before
it runs.

Safety: `find_class` answers from a fixed table of harmless stand-ins written here (tensor
rebuilders that only record offsets, storage classes and dtypes that only name an element type,
`collections.OrderedDict`). torch is never imported. A pickle can call (REDUCE, NEWOBJ) only what
`find_class` hands it, so every other global is refused before anything runs, and the stand-ins
are frozen so a BUILD opcode cannot re-wire them. Before the C unpickler runs, `pickletools`
walks the opcodes once (nothing runs) and refuses memo indices the stream cannot have made, which
would otherwise make the C unpickler allocate memory for every index up to them.
"""

from __future__ import annotations

import pickle
import pickletools
import sys
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from jaxvis.convert.host_buffers import aligned_copy
from jaxvis.errors import WeightFileError

__all__ = ["Blob", "Corrupt", "DTYPES", "RestrictedUnpickler", "StorageRef", "check_memo_indices", "finish", "index",
           "materialize", "rebuild_tensor_v2", "storage_fields"]


class Corrupt(Exception):
    """Raised inside the reader for a malformed file; `load_pickled_object` adds the path."""


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
DTYPES = {d.name: d for d in _DTYPE_LIST}
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


class Blob:
    """The bytes of one storage key (an aligned uint8 array); they arrive with the persistent id (zip)
    or after the pickle (legacy)."""

    __slots__ = ("key", "data", "count_dtype")

    def __init__(self, key: str, data: np.ndarray | None = None, count_dtype: _DType | None = None):
        self.key, self.data, self.count_dtype = key, data, count_dtype


@_sealed
@dataclass(frozen=True, slots=True)
class StorageRef:
    """What a persistent id becomes: a storage's bytes seen as `dtype` (an old storage view: a byte window)."""

    blob: Blob
    dtype: _DType
    start: int = 0
    nbytes: int | None = None

    def data(self) -> memoryview:
        if self.blob.data is None:
            raise Corrupt(f"storage {self.blob.key!r} has no data")
        view = memoryview(self.blob.data)
        end = len(view) if self.nbytes is None else self.start + self.nbytes
        return view[self.start:end]


@_sealed
@dataclass(frozen=True, slots=True)
class _TensorRecord:
    """A tensor as the pickle describes it; it becomes an array once every storage has its bytes."""

    storage: StorageRef
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


def index(value, what: str) -> int:
    if type(value) is not int or value < 0:
        raise Corrupt(f"a tensor's {what} is {value!r}, not a non-negative int")
    return value


def _shape(value, what: str) -> tuple:
    if not isinstance(value, (tuple, list)):
        raise Corrupt(f"a tensor's {what} is a {type(value).__name__}, not a tuple")
    return tuple(index(v, what) for v in value)


def _record(storage, offset, size, stride, dtype=None, metadata=None) -> _TensorRecord:
    if not isinstance(storage, StorageRef):
        raise Corrupt(f"a tensor is built on a {type(storage).__name__}, not on a storage")
    if dtype is not None and not isinstance(dtype, _DType):
        raise Corrupt(f"a tensor's dtype is a {type(dtype).__name__}")
    size, stride = _shape(size, "size"), _shape(stride, "stride")
    if len(size) != len(stride):
        raise Corrupt(f"a tensor has size {size} but stride {stride}")
    flags = metadata if isinstance(metadata, dict) else {}
    return _TensorRecord(storage, index(offset, "storage offset"), size, stride,
                         dtype or storage.dtype, bool(flags.get("conj")), bool(flags.get("neg")))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _record(storage, storage_offset, size, stride)


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _record(storage, storage_offset, size, stride, None, metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    return _record(storage, storage_offset, size, stride, dtype, metadata)


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    if not isinstance(data, _TensorRecord):
        raise Corrupt(f"a Parameter wraps a {type(data).__name__}, not a tensor")
    return data


_REBUILDERS: dict[str, object] = {}


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in _REBUILDERS.values() or not isinstance(new_type, _TensorType):
        raise Corrupt("a tensor subclass is rebuilt with something other than a tensor rebuilder")
    if not isinstance(args, tuple):
        raise Corrupt("a tensor subclass has no argument tuple")
    return func(*args)


def _size(dims=()):
    return _shape(dims, "size")


def _device(kind="cpu", index=None):
    return str(kind) if index is None else f"{kind}:{index}"


def _allowed_globals() -> dict[tuple[str, str], object]:
    """(module, name) -> stand-in: everything a state_dict pickle from torch 0.4 to 2.x names."""
    table: dict[tuple[str, str], object] = {("collections", "OrderedDict"): OrderedDict}
    for name, fn in (("_rebuild_tensor", _rebuild_tensor), ("_rebuild_tensor_v2", rebuild_tensor_v2),
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
            table[(module, name)] = _StorageClass(name, DTYPES[dtype])
    for name in (*DTYPES, *_DTYPE_ALIASES):
        table[("torch", name)] = DTYPES[_DTYPE_ALIASES.get(name, name)]
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


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles with `_ALLOWED` only; `storage(fields)` turns a storage persistent id into a `StorageRef`."""

    def __init__(self, file, path: str, storage=None, pickle_bytes=lambda: b""):
        super().__init__(file, encoding="utf-8")
        self._file, self._path, self._storage, self._pickle_bytes = file, path, storage, pickle_bytes

    def load(self):
        start = self._file.tell()
        check_memo_indices(self._file)
        self._file.seek(start)
        return super().load()

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
        raise Corrupt(f"its pickle has a persistent id of kind {kind!r}; only storages are read")


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def check_memo_indices(file) -> None:
    """Walk one pickle's opcodes from `file`'s position to its STOP; raise `Corrupt` if a PUT names a
    memo index larger than the number of opcodes before it.

    Why: CPython's C unpickler keeps its memo in an array that it grows, zero-filled, to the largest
    index a PUT names. One corrupted LONG_BINPUT argument (up to 2**32 - 1) made a 3 kB checkpoint
    allocate 1-32 GB and the process was killed for memory. Picklers number memo entries 0, 1, 2, ...
    (one PUT or MEMOIZE opcode each), so a genuine index is always below the opcode count. `pickletools`
    also refuses unknown opcodes and lengths that run past the end of the data, before anything is
    allocated for them."""
    for count, (opcode, arg, position) in enumerate(pickletools.genops(file)):
        if opcode.name in _MEMO_PUTS and arg > count:
            raise Corrupt(f"its pickle stores memo entry {arg} at byte {position}, after {count} opcodes")


def storage_fields(fields: tuple, count: int) -> tuple[_StorageClass, str]:
    if len(fields) != count or not isinstance(fields[0], _StorageClass):
        raise Corrupt(f"malformed storage id {fields!r}")
    key = fields[1].decode("ascii") if isinstance(fields[1], bytes) else fields[1]
    if not isinstance(key, (str, int)):
        raise Corrupt(f"malformed storage key {key!r}")
    return fields[0], str(key)


# ---------------------------------------------------------------------------------------------
# Records into arrays.


def finish(stored: np.ndarray, dtype: _DType) -> np.ndarray:
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
            raise Corrupt(f"reading torch.{dtype.name} tensors needs the ml_dtypes package") from None
        return aligned_copy(stored.view(getattr(ml_dtypes, dtype.widen)), np.float32)
    return aligned_copy(stored, stored.dtype.newbyteorder("="))


def _to_array(rec: _TensorRecord, byteorder: str) -> np.ndarray:
    """The tensor `rec` describes. A tensor that is its storage's bytes in C order (the usual case)
    is a view of the storage buffer, which is our own aligned memory: no copy. Any other layout,
    byte order or dtype is copied once into a new aligned array."""
    dtype = rec.dtype
    if dtype.code is None:
        raise Corrupt(f"it holds torch.{dtype.name} tensors, which jaxvis does not read")
    stored = np.dtype(dtype.code).newbyteorder(byteorder)
    item = stored.itemsize
    if 0 in rec.size:
        out = finish(np.empty(rec.size, stored), dtype)
    else:
        if min(rec.stride, default=0) < 0 or rec.offset < 0 or min(rec.size, default=0) < 0:
            # a corrupt stride or offset would make the strided view read memory outside the storage
            raise Corrupt(f"a tensor of storage {rec.storage.blob.key!r} has a negative size, stride or offset "
                          f"(size {rec.size}, stride {rec.stride}, offset {rec.offset})")
        extent = 1 + sum((n - 1) * s for n, s in zip(rec.size, rec.stride))
        first, end = rec.offset * item, (rec.offset + extent) * item
        data = rec.storage.data()
        if end > len(data):
            raise Corrupt(f"storage {rec.storage.blob.key!r} holds {len(data)} bytes, but a tensor of shape "
                           f"{rec.size} at offset {rec.offset} needs {end}")
        flat = np.frombuffer(data, np.uint8, count=end - first, offset=first).view(stored)
        strides = tuple(s * item for s in rec.stride)
        view = np.lib.stride_tricks.as_strided(flat, rec.size, strides, writeable=flat.flags.writeable)
        if view.flags.c_contiguous and view.flags.writeable and stored.isnative and dtype.widen is None \
                and not (rec.conj or rec.neg):
            return view
        out = finish(view, dtype)
    if rec.conj:
        np.conjugate(out, out=out)
    if rec.neg:
        np.negative(out, out=out)
    return out


def materialize(obj, byteorder: str, memo: dict):
    """`obj` with every tensor record (and bare storage) replaced by an array; dicts and lists in place."""
    if id(obj) in memo:
        return memo[id(obj)][1]
    if isinstance(obj, _TensorRecord):
        out = _to_array(obj, byteorder)
    elif isinstance(obj, StorageRef):  # a storage saved on its own: its elements, 1-D
        n = len(obj.data()) // np.dtype(obj.dtype.code or "u1").itemsize
        out = _to_array(_TensorRecord(obj, 0, (n,), (1,), obj.dtype), byteorder)
    elif isinstance(obj, dict):
        memo[id(obj)] = (obj, obj)
        out = obj
        for key in obj:
            obj[key] = materialize(obj[key], byteorder, memo)
    elif isinstance(obj, list):
        memo[id(obj)] = (obj, obj)
        out = obj
        obj[:] = [materialize(v, byteorder, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(materialize(v, byteorder, memo) for v in obj)
    else:
        out = obj
    memo[id(obj)] = (obj, out)  # holding obj keeps its id from being reused while we walk
    return out

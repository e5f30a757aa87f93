"""What a Keras model or weight file holds, read with h5py and zipfile only: nothing in a file runs.

Contract: `read_keras_file(path)` returns a `KerasFile` (the model's JSON config, or None for a
weights-only file, and its weights as float32 NumPy arrays grouped per layer), or raises a
`WeightFileError` with one line naming the file and what is wrong with it. `file.weights.match`
lines the arrays up with a model's weighted layers. Formats are told apart by their first bytes
and their layout, not by the extension:

* legacy full model `.h5` (Keras 2, or Keras 3's `model.save("x.h5")`): root attribute
  `model_config` (the model's JSON) and group `model_weights` whose attribute `layer_names` lists
  the layers; group `model_weights/<layer>` lists its `weight_names` (e.g. `conv2d_1/kernel:0`),
  each a dataset under that group, in the layer's `layer.weights` order.
* legacy weights-only `.h5` (Keras 2 `save_weights`, and the Keras Applications downloads such as
  `vgg16_weights_tf_dim_ordering_tf_kernels.h5`): the same layer groups at the root. No
  architecture: needs `arch=`.
* Keras 3 `.keras` archive: a zip holding `config.json` (the model's JSON) and `model.weights.h5`.
* Keras 3 `.weights.h5`: groups `layers/<class path>/vars/<0, 1, ...>`, where the class path is
  the layer's snake-cased class name made unique by counting over `model.layers`
  (`conv2d`, `conv2d_1`, ..., `dense`), and `vars` carries the layer name as attribute `name`
  (recent Keras 3, e.g. 3.15); weights in `layer.weights` order. Needs `arch=`.

Weights are matched to layers the way Keras itself does: legacy files by layer name, or by position
over the layers that have weights when the names differ (Keras's `load_weights`); Keras 3 files
by the `vars` name attribute, or else by class path (Keras 3's own rule, which survives renamed
layers). Each array keeps its Keras layout. Everything becomes float32 in 64-byte-aligned
buffers, which `jax.device_put` wraps without a copy on CPU.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxvis.convert.host_buffers import aligned_empty
from jaxvis.convert.keras.names import snake_case
from jaxvis.convert.trees import shown
from jaxvis.errors import JaxvisError, WeightFileError, one_line

__all__ = ["Keras3Weights", "KerasFile", "LegacyWeights", "Misfit", "read_keras_file"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_ARCHIVE_CONFIG, _ARCHIVE_WEIGHTS = "config.json", "model.weights.h5"

# What malformed bytes raise inside h5py, zipfile, json or numpy: each becomes a WeightFileError.
_BAD_BYTES = (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, EOFError, AttributeError,
              zipfile.BadZipFile, zlib.error, struct.error, json.JSONDecodeError, UnicodeDecodeError)


def _described(err: BaseException) -> str:
    text = one_line(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# ---------------------------------------------------------------------------------------------
# Reading arrays.


def _to_f32(dataset) -> np.ndarray:
    """A dataset's values as a 64-byte-aligned float32 array, so `jax.device_put` on CPU need not copy it.

    bfloat16 (which Keras 3 stores as 2-byte opaque values, attribute dtype="bfloat16") is widened.
    """
    out = aligned_empty(dataset.shape)
    if out.size == 0:
        return out
    if dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16") or (
        dataset.dtype.kind == "V" and dataset.dtype.itemsize == 2
    ):
        raw = np.asarray(dataset[()]).view(np.uint16)
        out[...] = (raw.astype(np.uint32) << 16).view(np.float32)
    elif dataset.dtype == np.float32 and dataset.shape:
        dataset.read_direct(out)
    else:
        out[...] = np.asarray(dataset[()], dtype=np.float32)
    return out


def _attr_strings(group, name: str) -> list[str] | None:
    """A Keras string-list attribute (possibly split into `name0`, `name1`, ... when large)."""
    if name in group.attrs:
        values = [group.attrs[name]]
    elif f"{name}0" in group.attrs:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.append(group.attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    out = []
    for value in values:
        for item in np.atleast_1d(np.asarray(value)).tolist():
            out.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
    return out


class Misfit(WeightFileError):
    """Raised by `match` when the file's weights do not line up with the layers asked for; the caller
    re-raises it with the file and the model named."""


@dataclasses.dataclass
class LegacyWeights:
    """Keras 2 layout: `{layer name: [(weight name, array), ...]}` in file order."""

    layers: dict[str, list[tuple[str, np.ndarray]]]

    @classmethod
    def read(cls, group) -> LegacyWeights:
        names = _attr_strings(group, "layer_names")
        if names is None:
            raise WeightFileError("no layer_names attribute")
        layers = {}
        for name in names:
            if name not in group:
                raise WeightFileError(f"layer_names lists {name!r} but the file has no group for it")
            weight_names = _attr_strings(group[name], "weight_names") or []
            layers[name] = [(w, _to_f32(group[name][w])) for w in weight_names]
        return cls(layers)

    @property
    def weighted(self) -> list[str]:
        return [name for name, arrays in self.layers.items() if arrays]

    def _nested(self, group: str) -> dict[str, list[tuple[str, np.ndarray]]] | None:
        """A nested model's group split per inner layer path, or None for a plain layer's group.

        A nested model's group holds all its weights, each named by its layer's path inside the model
        and the weight (`inner_seq/conv/kernel`, `block1_conv1/kernel:0`, a Sequential's own name
        sometimes first); Keras 2 lists every trainable weight before the non-trainable ones
        (BatchNorm's moving statistics), so weights are grouped by path, not position.
        """
        arrays = self.layers[group]
        owners = [weight.rsplit("/", 1)[0] if "/" in weight else group for weight, _ in arrays]
        if not arrays or all(owner == group or owner.endswith("/" + group) for owner in owners):
            return None
        split: dict[str, list[tuple[str, np.ndarray]]] = {}
        for owner, item in zip(owners, arrays):
            split.setdefault(owner, []).append(item)
        return split

    def _by_name(self, wanted: Sequence[str]) -> dict[str, list[tuple[str, np.ndarray]]] | None:
        """Arrays per wanted layer by name; a nested model's layer `outer/path` is looked up by `path`
        (or the one weight path ending in `/path`) inside the group `outer`. None if any is missing."""
        out, nested = {}, {}
        for name in wanted:
            if "/" not in name:
                if name not in self.layers:
                    return None
                out[name] = self.layers[name]
                continue
            group, inner = name.split("/", 1)
            if group not in nested:
                nested[group] = self._nested(group) if group in self.layers else None
            owners = nested[group]
            if owners is None:
                return None
            found = [inner] if inner in owners else [o for o in owners if o.endswith("/" + inner)]
            if len(found) != 1:
                return None
            out[name] = owners.pop(found[0])
        leftover = [f"{group}/{owner}" for group, owners in nested.items() for owner in owners or ()]
        if leftover:
            raise Misfit(f"weights not used by the model: {shown(leftover)}")
        return out

    def match(
        self, wanted: Sequence[str], layers: Sequence[tuple[str, str]]
    ) -> dict[str, list[tuple[str, np.ndarray]]]:
        """Arrays per weighted layer (`wanted`: their names in execution order): by name, else by
        position (as Keras's `load_weights`). `layers` is unused here (see `Keras3Weights.match`)."""
        present = self.weighted
        matched = self._by_name(wanted) if any("/" in name for name in wanted) else None
        if matched is not None:
            groups = {name.split("/", 1)[0] for name in wanted}
            unused = [name for name in present if name not in groups]
            if unused:
                raise Misfit(f"layers not in the model: {shown(unused)}")
            return matched
        if all(name in self.layers for name in wanted):
            unused = [name for name in present if name not in set(wanted)]
            if unused:
                raise Misfit(f"layers not in the model: {shown(unused)}")
            return {name: self.layers[name] for name in wanted}
        if len(present) == len(wanted):
            return {name: self.layers[file_name] for name, file_name in zip(wanted, present)}
        missing = [name for name in wanted if name not in self.layers]
        raise Misfit(f"{len(present)} layers with weights in the file, {len(wanted)} in the model; "
                      f"missing by name: {shown(missing)}")


@dataclasses.dataclass
class Keras3Weights:
    """Keras 3 layout: `{group path: (layer name path or None, [array, ...])}`.

    A nested model's layers (`layers/functional/layers/conv2d/vars`) are read too: their group path is
    `functional/layers/conv2d` and their name path joins the `vars` names (`vgg16/block1_conv1`), which
    is how a flattened graph names them.
    """

    layers: dict[str, tuple[str | None, list[np.ndarray]]]

    @classmethod
    def read(cls, h5, root_name: str = "layers") -> Keras3Weights:
        layers: dict[str, tuple[str | None, list[np.ndarray]]] = {}

        def visit(root, prefix: str, name_prefix: str | None):
            for path in root:
                group = root[path]
                variables = group.get("vars")
                name = None if variables is None else variables.attrs.get("name")
                name = name.decode("utf-8") if isinstance(name, bytes) else (None if name is None else str(name))
                full_name = None if name is None or name_prefix is None else name_prefix + name
                if variables is not None and len(variables):
                    keys = sorted(variables, key=lambda k: int(k) if str(k).isdigit() else 1 << 30)
                    layers[prefix + path] = (full_name, [_to_f32(variables[k]) for k in keys])
                if "layers" in group:  # a nested model
                    visit(group["layers"], f"{prefix}{path}/layers/", None if full_name is None else full_name + "/")

        visit(h5[root_name], "", "")
        return cls(layers)

    @property
    def weighted(self) -> list[str]:
        return [path for path, (_, arrays) in self.layers.items() if arrays]

    def match(
        self, wanted: Sequence[str], layers: Sequence[tuple[str, str]]
    ) -> dict[str, list[tuple[str, np.ndarray]]]:
        """Arrays per weighted layer (`wanted`: their names in execution order): by the `vars` name
        attribute, else by group name (TF-Keras 2.13+ archives), else by class path (what Keras 3's
        own loader uses), counted over `layers`: every (name, class name) in Keras's `model.layers`
        order, a nested model's layers named by path (`inner/conv2d`) after the model itself."""
        by_name = {name: (path, arrays) for path, (name, arrays) in self.layers.items() if name is not None}
        if all(name in by_name for name in wanted):
            chosen = {name: by_name[name] for name in wanted}
        elif all(name in self.layers for name in wanted):
            chosen = {name: (name, self.layers[name][1]) for name in wanted}
        else:
            counts: dict[tuple[str, str], int] = {}
            paths: dict[str, str] = {}
            for name, class_name in layers:
                scope = name.rpartition("/")[0]
                base = snake_case(class_name)
                count = counts.get((scope, base), -1) + 1
                counts[(scope, base)] = count
                own = base if count == 0 else f"{base}_{count}"
                paths[name] = f"{paths[scope]}/layers/{own}" if scope else own
            missing = [f"{name} ({paths.get(name)})" for name in wanted if paths.get(name) not in self.layers]
            if missing:
                raise Misfit(f"no weights for layers {shown(missing)}")
            chosen = {name: (paths[name], self.layers[paths[name]][1]) for name in wanted}
        used = {path for path, _ in chosen.values()}
        unused = [path for path in self.weighted if path not in used]
        if unused:
            raise Misfit(f"weights not used by the model: {shown(unused)}")
        return {
            name: [(f"{path}/vars/{i}", a) for i, a in enumerate(arrays)] for name, (path, arrays) in chosen.items()
        }


# ---------------------------------------------------------------------------------------------
# Files.


@dataclasses.dataclass
class KerasFile:
    """What a Keras file holds: its model config (None for weights-only files) and its weights."""

    path: str
    kind: str  # "legacy-model", "legacy-weights", "keras-archive", "keras-weights"
    config: Mapping[str, Any] | None
    weights: LegacyWeights | Keras3Weights

    @property
    def what(self) -> str:
        return f"the weights in {self.path}"


class _Window(io.RawIOBase):
    """A read-only, seekable view of bytes [start, start + size) of an open binary file."""

    def __init__(self, raw, start: int, size: int):
        super().__init__()
        self._raw, self._start, self._size, self._pos = raw, start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._size - self._pos))
        if count == 0:
            return 0
        self._raw.seek(self._start + self._pos)
        got = self._raw.readinto(view[:count])
        self._pos += got or 0
        return got


def _stored_member(raw, info: zipfile.ZipInfo) -> _Window | None:
    """A window on an uncompressed zip member's bytes (Keras writes `.keras` archives uncompressed)."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != _ZIP_MAGIC:
        raise zipfile.BadZipFile(f"bad local header for {info.filename}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    raw.seek(0, io.SEEK_END)
    if start + info.file_size > raw.tell():
        raise zipfile.BadZipFile(f"{info.filename} is truncated")
    return _Window(raw, start, info.file_size)


def _read_h5(source, path: str) -> tuple[str, Mapping | None, LegacyWeights | Keras3Weights]:
    import h5py

    with h5py.File(source, "r") as h5:
        config = h5.attrs.get("model_config")
        if config is not None:
            config = json.loads(config.decode("utf-8") if isinstance(config, bytes) else str(config))
            if "model_weights" not in h5:
                raise WeightFileError(f"{path}: a Keras model file without weights (model_weights is missing)")
            return "legacy-model", config, LegacyWeights.read(h5["model_weights"])
        if _attr_strings(h5, "layer_names") is not None:
            return "legacy-weights", None, LegacyWeights.read(h5)
        if "model_weights" in h5:
            return "legacy-weights", None, LegacyWeights.read(h5["model_weights"])
        for root in ("layers", "_layer_checkpoint_dependencies"):  # Keras 3; TF-Keras 2.13-2.15 archives
            if root in h5 and isinstance(h5[root], h5py.Group):
                return "keras-weights", None, Keras3Weights.read(h5, root)
    raise WeightFileError(f"{path}: an HDF5 file but not a Keras one (no model_config, layer_names or layers/)")


def read_keras_file(path) -> KerasFile:
    """Open any Keras file (see the module docstring); every failure is a one-line `WeightFileError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError(f"no such Keras file: {path}")
    try:
        with open(path, "rb") as raw:
            magic = raw.read(8)
            if magic.startswith(_ZIP_MAGIC):
                with zipfile.ZipFile(raw) as archive:
                    names = set(archive.namelist())
                    if _ARCHIVE_CONFIG not in names or _ARCHIVE_WEIGHTS not in names:
                        raise WeightFileError(
                            f"{path}: a zip file but not a Keras .keras archive (it needs {_ARCHIVE_CONFIG} "
                            f"and {_ARCHIVE_WEIGHTS}; a PyTorch checkpoint belongs to the torch loader)")
                    config = json.loads(archive.read(_ARCHIVE_CONFIG).decode("utf-8"))
                    info = archive.getinfo(_ARCHIVE_WEIGHTS)
                    window = _stored_member(raw, info)
                    source = window if window is not None else io.BytesIO(archive.read(info))
                    _, _, weights = _read_h5(source, path)
                return KerasFile(path, "keras-archive", config, weights)
            if magic != _HDF5_MAGIC:
                raise WeightFileError(f"{path}: not a Keras file (neither HDF5 nor a .keras zip archive)")
        kind, config, weights = _read_h5(path, path)
        return KerasFile(path, kind, config, weights)
    except (WeightFileError, JaxvisError):
        raise
    except _BAD_BYTES as err:
        raise WeightFileError(f"{path}: truncated or corrupt Keras file ({_described(err)})") from None

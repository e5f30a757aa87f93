"""Converted models: one self-describing `.jaxvis` file that loads fast and never runs code.

Contract: `save_converted(spec, path)` writes a `ModelSpec` and `load_converted(path)` gives back an
equal one (same module, same variables bit for bit, same preprocessing, names and classes), or
raises a `WeightFileError` with one line naming the file. `load_converted` only parses JSON and
copies bytes: the module is rebuilt from jaxvis's own classes, never from anything in the file.

The file is a safetensors file:

* tensors: every leaf of `spec.variables` under its `/`-joined tree path (`params/features.0/kernel`,
  `params/block1_conv1/bias`), in its own dtype, in the tree's order;
* `__metadata__["jaxvis"]`: JSON with
  - `format` ("jaxvis-converted") and `version` (2),
  - `name`, `source` (the file it was converted from), `input_shape`, `layer_names`,
    `logits_layer`, `class_names` (a list, `"imagenet"` for jaxvis's ImageNet list, or null),
  - `preprocess`: the `Preprocess` fields,
  - `recipe`: how the model was built (`spec.recipe`, or `{"zoo": name}` for a builder that sets
    none): `{"zoo": name, "options": {...}}` or `{"keras_config": <the Keras model config>}`,
  - `module`: `{"class": "jaxvis.models.<module>:<Class>", "fields": {...}}`, the Flax module's
    class and its JSON-able dataclass fields. A `KerasGraph`'s `graph` is rebuilt from the recipe
    (`graph_from_keras_config`, or the Keras Applications generator for a `keras_*` zoo recipe).
    Only classes defined in `jaxvis.models` that are Flax modules are accepted.

Tensors are read straight into 64-byte-aligned buffers (one `readinto` each), which
`jax.device_put` wraps without a copy on CPU, so loading costs about as much as reading the file.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from typing import Mapping

import numpy as np

from jaxvis.convert.safetensors_file import read_header, read_records
from jaxvis.errors import JaxvisError, WeightFileError

__all__ = ["FORMAT", "SUFFIX", "VERSION", "is_converted", "load_converted", "read_metadata", "save_converted"]

FORMAT = "jaxvis-converted"
VERSION = 2  # 2: torchvision layouts hold `Linear` weights [out, in] (1 had `nn.Dense` kernels [in, out])
SUFFIX = ".jaxvis"
_META_KEY = "jaxvis"
_MODULE_PACKAGE = "jaxvis.models."

# safetensors dtype names <-> NumPy (the dtypes a variables tree holds).
_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
    "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_BF16 = "BF16"


# ---------------------------------------------------------------------------------------------
# Describing a spec.


def _jsonable(value, what: str):
    """`value` as JSON data (tuples become lists), or a JaxvisError naming `what`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, what) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, what) for k, v in value.items()}
    raise JaxvisError(f"cannot save {what}: {type(value).__name__} values are not plain data")


def _tuples(value):
    """JSON lists back to tuples (Flax module fields must be hashable)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _module_entry(spec) -> dict:
    from jaxvis.models.keras_graph import KerasGraph

    module = spec.module
    cls = type(module)
    if not cls.__module__.startswith(_MODULE_PACKAGE) or not dataclasses.is_dataclass(module):
        raise JaxvisError(f"cannot save model {spec.name}: its module {cls.__module__}.{cls.__qualname__} is not a "
                          f"jaxvis.models Flax module")
    fields = {}
    for field in dataclasses.fields(module):
        if field.name in ("parent", "name") or (cls is KerasGraph and field.name == "graph"):
            continue
        fields[field.name] = _jsonable(getattr(module, field.name), f"model {spec.name} (module field {field.name})")
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}


def _class_names_entry(class_names):
    if class_names is None:
        return None
    try:
        from jaxvis.models.imagenet import imagenet_class_names

        if tuple(class_names) == tuple(imagenet_class_names()):
            return "imagenet"
    except (ImportError, JaxvisError, OSError):
        pass
    return [str(name) for name in class_names]


def describe(spec) -> dict:
    """The metadata `save_converted` writes for `spec` (see the module docstring)."""
    from jaxvis.models.keras_graph import KerasGraph

    recipe = dict(spec.recipe) if spec.recipe is not None else {"zoo": spec.name}
    if isinstance(spec.module, KerasGraph) and "keras_config" not in recipe:
        from jaxvis.models.keras_apps import APPLICATIONS

        if recipe.get("zoo") not in APPLICATIONS:
            raise JaxvisError(f"cannot save model {spec.name}: a Keras graph without a keras_config or keras_* zoo recipe")
    return {
        "format": FORMAT, "version": VERSION, "name": spec.name, "source": str(spec.source),
        "input_shape": [int(d) for d in spec.input_shape], "layer_names": list(spec.layer_names),
        "logits_layer": spec.logits_layer, "class_names": _class_names_entry(spec.class_names),
        "preprocess": _jsonable(dataclasses.asdict(spec.preprocess), f"model {spec.name} (preprocess)"),
        "recipe": _jsonable(recipe, f"model {spec.name} (recipe)"),
        "module": _module_entry(spec),
    }


# ---------------------------------------------------------------------------------------------
# Writing.


def _tensor_name(path: tuple[str, ...], spec) -> str:
    if any("/" in key or not key for key in path):
        raise JaxvisError(f"cannot save model {spec.name}: variable {path!r} has a key with '/' or an empty key")
    return "/".join(path)


def save_converted(spec, path) -> str:
    """Write `spec` as one `.jaxvis` file (see the module docstring); returns the path written.

    The file is written next to `path` and renamed into place, so a failed write never leaves a
    half-written file under the final name.

    Raises:
      JaxvisError: the spec's module or recipe is not plain data, or the file cannot be written.
    """
    from safetensors.numpy import save_file

    from jaxvis.convert.torch_layout import flatten_tree

    path = os.fspath(path)
    meta = describe(spec)
    tensors = {}
    for key, leaf in flatten_tree(spec.variables).items():
        array = np.asarray(leaf)
        if array.dtype.name == "bfloat16":
            array = array.astype(np.float32)
        tensors[_tensor_name(key, spec)] = np.ascontiguousarray(array)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise JaxvisError(f"cannot write {path}: no folder {folder}")
    partial = f"{path}.partial"
    try:
        save_file(tensors, partial, metadata={_META_KEY: json.dumps(meta, separators=(",", ":"))})
        os.replace(partial, path)
    except OSError as err:
        raise JaxvisError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


# ---------------------------------------------------------------------------------------------
# Reading.


_KIND = "a converted jaxvis model"


def _header(file, path: str) -> tuple[dict, int]:
    """The safetensors JSON header and the offset where the data starts."""
    return read_header(file, path, _KIND)


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
    if meta.get("version") != VERSION:
        raise WeightFileError(f"{path} is a converted jaxvis model of version {meta.get('version')!r}; this jaxvis "
                              f"reads version {VERSION}: convert the source again")
    return meta


def read_metadata(path) -> dict:
    """The JSON metadata of a `.jaxvis` file (name, source, layers, ...), without reading its tensors."""
    path = os.fspath(path)
    _check_file(path)
    with open(path, "rb") as file:
        header, _ = _header(file, path)
    return _metadata(header, path)


def is_converted(path) -> bool:
    """Whether `path` is a safetensors file carrying jaxvis metadata (cheap: reads the header only)."""
    try:
        read_metadata(path)
    except JaxvisError:
        return False
    return True


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise WeightFileError(f"{path}: no such converted model file")
    if os.path.isdir(path):
        raise WeightFileError(f"{path} is a directory, not a converted model file")


_ITEMSIZES = {**{name: np.dtype(dtype).itemsize for name, dtype in _DTYPES.items()}, _BF16: 2}


def _read_tensors(file, header: dict, start: int, path: str) -> dict[tuple[str, ...], np.ndarray]:
    flat = {}
    for name, record in read_records(file, header, start, path, _KIND, _ITEMSIZES).items():
        if record.dtype == _BF16:
            array = (record.data.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = record.data.view(np.dtype(_DTYPES[record.dtype]).newbyteorder("<"))
        flat[tuple(name.split("/"))] = array.reshape(record.shape)
    return flat


def _module_class(entry, path: str):
    import flax.linen as nn

    try:
        module_name, _, class_name = str(entry["class"]).partition(":")
    except (KeyError, TypeError):
        raise WeightFileError(f"{path} is a corrupt converted jaxvis model (no module class)") from None
    if not module_name.startswith(_MODULE_PACKAGE) or not class_name.isidentifier():
        raise WeightFileError(f"{path} names module class {entry['class']!r}; jaxvis only builds its own "
                              f"jaxvis.models classes")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise WeightFileError(f"{path} needs module class {entry['class']}, which this jaxvis does not have "
                              f"(converted by a newer version?)") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise WeightFileError(f"{path} names {entry['class']}, which is not a Flax module")
    return cls


def _keras_graph(recipe: Mapping, path: str):
    from jaxvis.models.keras_apps import APPLICATIONS
    from jaxvis.models.keras_graph import graph_from_keras_config

    if "keras_config" in recipe:
        return graph_from_keras_config(recipe["keras_config"])
    app = APPLICATIONS.get(recipe.get("zoo"))
    if app is None:
        raise WeightFileError(f"{path} holds a Keras graph but neither its config nor a keras_* architecture")
    options = {k: v for k, v in (recipe.get("options") or {}).items() if k not in ("conv_impl", "seed")}
    return app.graph(**options)


def _build_module(meta: dict, path: str):
    from jaxvis.models.keras_graph import KerasGraph

    entry = meta.get("module") or {}
    cls = _module_class(entry, path)
    fields = _tuples(dict(entry.get("fields") or {}))
    try:
        if cls is KerasGraph:
            fields["graph"] = _keras_graph(_tuples(meta.get("recipe") or {}), path)
        return cls(**fields)
    except WeightFileError:
        raise
    except (JaxvisError, TypeError, ValueError, KeyError) as err:
        raise WeightFileError(f"{path}: cannot rebuild its {entry.get('class')} ({' '.join(str(err).split())})") from None


def _init_shapes(module, input_shape) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxvis.models.keras_graph import KerasGraph, init_shapes

    if isinstance(module, KerasGraph):
        return init_shapes(module.graph, input_shape)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), x)


def load_converted(path, *, check: bool = True):
    """The `ModelSpec` saved in a `.jaxvis` file by `save_converted`.

    Args:
      path: the file.
      check: compare every variable's shape with the rebuilt module's own (`jax.eval_shape` of its
        init, no compute); False skips it for the fastest load of a trusted file.

    Raises:
      WeightFileError: a missing, truncated, corrupt or foreign file, one naming a module jaxvis does
        not have, or variables that do not fit the module (key and both shapes named).
    """
    import jax

    from jaxvis.convert.torch_layout import check_against_init, unflatten_tree
    from jaxvis.models.spec import ModelSpec, Preprocess

    path = os.fspath(path)
    _check_file(path)
    try:
        with open(path, "rb") as file:
            header, start = _header(file, path)
            meta = _metadata(header, path)
            flat = _read_tensors(file, header, start, path)
    except OSError as err:
        raise WeightFileError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        input_shape = tuple(int(d) for d in meta["input_shape"])
        layer_names = tuple(str(n) for n in meta["layer_names"])
        preprocess = Preprocess(**_tuples(meta["preprocess"]))
        class_names = meta.get("class_names")
        if class_names == "imagenet":
            from jaxvis.models.imagenet import imagenet_class_names

            class_names = imagenet_class_names()
        elif class_names is not None:
            class_names = tuple(str(n) for n in class_names)
        name, source = str(meta["name"]), str(meta.get("source", ""))
    except (KeyError, TypeError, ValueError) as err:
        raise WeightFileError(f"{path} is a corrupt converted jaxvis model (metadata: {type(err).__name__}: {err})") from None
    module = _build_module(meta, path)
    variables = unflatten_tree(flat)
    if check:
        check_against_init(variables, _init_shapes(module, input_shape), what=f"the variables in {path}")
    return ModelSpec(
        name=name, module=module, variables=jax.device_put(variables), input_shape=input_shape,
        layer_names=layer_names, preprocess=preprocess, logits_layer=meta.get("logits_layer"),
        class_names=class_names, source=f"{path} (converted from {source})" if source else path,
        recipe=meta.get("recipe"),
    )

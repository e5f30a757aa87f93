"""Converted models: a `ModelSpec` saved as one `.jaxvis` file that loads fast and never runs code.

Contract: `save_converted(spec, path)` writes a `ModelSpec` and `load_converted(path)` gives back an
equal one (same module, same variables bit for bit, same preprocessing, names and classes), or
raises a `WeightFileError` with one line naming the file. The module is rebuilt from jaxvis's own
classes, chosen by name from the zoo registry, never from anything executable in the file.

The metadata (beside `format` and `version`, see `jaxvis.convert.jaxvis_file`):
`name`, `source` (the file it was converted from), `input_shape`, `layer_names`, `logits_layer`,
`class_names` (a list, `"imagenet"` for jaxvis's ImageNet list, or null), `preprocess` (the
`Preprocess` fields), `recipe` (`spec.recipe`: `{"zoo": name, "options": {...}}` or
`{"keras_config": <the Keras model config>}`) and `module`:

* version 3: `{"entry": <zoo name>, "fields": {...}}` (the entry's `module_class` with these
  dataclass fields), `{"graph": "ir", "fields": {...}}` (a `GraphModule`, its graph stored in the
  recipe as data) or `{"graph": "keras", "fields": {...}}` (a `GraphModule` whose graph is a Keras
  model's, rebuilt from the recipe: `graph_from_keras_config`, or the Keras Applications generator
  for a `keras_*` zoo recipe, lowered at `input_shape`);
* version 2 (older files, still read): `{"class": "jaxvis.models.<module>:<Class>", "fields"}`;
  the class is looked up by its name among the zoo's module classes, so the files keep loading
  wherever the classes live now (`KerasGraph`, Keras models' former module, reads as a Keras graph).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.convert import jaxvis_file
from jaxvis.convert.trees import check_against_init, flatten_tree, unflatten_tree
from jaxvis.errors import JaxvisError, WeightFileError
from jaxvis.models import registry
from jaxvis.models.graph.executor import GraphModule
from jaxvis.models.graph.ir import graph_from_data
from jaxvis.models.imagenet import imagenet_class_names
from jaxvis.models.keras.applications import APPLICATIONS
from jaxvis.models.keras.config import graph_from_keras_config
from jaxvis.models.keras.lower import lower
from jaxvis.models.keras.variables import softmax_layers
from jaxvis.models.spec import ModelSpec, Preprocess

__all__ = ["SUFFIX", "describe", "load_converted", "save_converted"]

SUFFIX = jaxvis_file.SUFFIX
_KERAS_GRAPH = "keras"
_IR_GRAPH = "ir"  # jaxvis.models.graph: .pt2 / .onnx models, the graph in the recipe as data
_LEGACY_KERAS_CLASS = "KerasGraph"  # version 2's module class of Keras models


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


# ---------------------------------------------------------------------------------------------
# Describing a spec.


def _fields(spec: ModelSpec) -> dict:
    module = spec.module
    skipped = ("parent", "name") + (("graph",) if isinstance(module, GraphModule) else ())
    return {field.name: _jsonable(getattr(module, field.name), f"model {spec.name} (module field {field.name})")
            for field in dataclasses.fields(module) if field.name not in skipped}


def _module_entry(spec: ModelSpec, recipe: Mapping) -> dict:
    if isinstance(spec.module, GraphModule):
        if spec.module.graph.source_format == "keras":
            if "keras_config" not in recipe and recipe.get("zoo") not in APPLICATIONS:
                raise JaxvisError(
                    f"cannot save model {spec.name}: a Keras graph without a keras_config or keras_* zoo recipe")
            return {"graph": _KERAS_GRAPH, "fields": _fields(spec)}
        if "graph" not in recipe:
            raise JaxvisError(f"cannot save model {spec.name}: a graph model without its graph in the recipe")
        return {"graph": _IR_GRAPH, "fields": _fields(spec)}
    name = recipe.get("zoo", spec.name)
    zoo = registry.entry(name) if name in registry.model_names() else None
    if zoo is None or type(spec.module) is not zoo.module_class:
        cls = type(spec.module)
        raise JaxvisError(f"cannot save model {spec.name}: its module {cls.__module__}.{cls.__qualname__} is not the "
                          f"architecture of a zoo entry")
    return {"entry": zoo.name, "fields": _fields(spec)}


def _class_names_entry(class_names):
    if class_names is None:
        return None
    if tuple(class_names) == tuple(imagenet_class_names()):
        return "imagenet"
    return [str(name) for name in class_names]


def describe(spec: ModelSpec) -> dict:
    """The metadata `save_converted` writes for `spec` (see the module docstring)."""
    recipe = dict(spec.recipe) if spec.recipe is not None else {"zoo": spec.name}
    return {
        "name": spec.name, "source": str(spec.source),
        "input_shape": [int(d) for d in spec.input_shape], "layer_names": list(spec.layer_names),
        "logits_layer": spec.logits_layer, "class_names": _class_names_entry(spec.class_names),
        "preprocess": _jsonable(dataclasses.asdict(spec.preprocess), f"model {spec.name} (preprocess)"),
        "recipe": _jsonable(recipe, f"model {spec.name} (recipe)"),
        "module": _module_entry(spec, recipe),
    }


def save_converted(spec: ModelSpec, path) -> str:
    """Write `spec` as one `.jaxvis` file (see the module docstring); returns the path written.

    Raises:
      JaxvisError: the spec's module or recipe is not plain data, or the file cannot be written.
    """
    meta = describe(spec)
    try:
        return jaxvis_file.write_file(path, flatten_tree(spec.variables), meta)
    except JaxvisError as err:
        raise JaxvisError(f"cannot save model {spec.name}: {err}") from None


# ---------------------------------------------------------------------------------------------
# Reading.


def _legacy_class(entry: Mapping, path: str) -> type:
    """A version-2 file's `jaxvis.models.<module>:<Class>`, found by class name among the zoo's classes."""
    module_name, _, class_name = str(entry.get("class", "")).partition(":")
    if not module_name.startswith("jaxvis.models.") or not class_name.isidentifier():
        raise WeightFileError(f"{path} names module class {entry.get('class')!r}; jaxvis only builds its own "
                              f"jaxvis.models classes")
    known = {item.module_class.__name__: item.module_class for item in registry.entries()}
    if class_name not in known:
        raise WeightFileError(f"{path} needs module class {entry['class']}, which this jaxvis does not have "
                              f"(converted by a newer version?)")
    return known[class_name]


def _is_keras(entry: Mapping) -> bool:
    """Whether a module entry is a Keras model's graph (version 3, or version 2's `KerasGraph`)."""
    return entry.get("graph") == _KERAS_GRAPH or str(entry.get("class", "")).endswith(":" + _LEGACY_KERAS_CLASS)


def _module_class(entry: Mapping, path: str) -> type:
    if _is_keras(entry) or entry.get("graph") == _IR_GRAPH:
        return GraphModule
    if "class" in entry:
        return _legacy_class(entry, path)
    name = entry.get("entry")
    if name not in registry.model_names():
        raise WeightFileError(f"{path} needs zoo model {name!r}, which this jaxvis does not have "
                              f"(converted by a newer version?)")
    return registry.entry(name).module_class


def _keras_graph(recipe: Mapping, path: str):
    if "keras_config" in recipe:
        return graph_from_keras_config(recipe["keras_config"])
    app = APPLICATIONS.get(recipe.get("zoo"))
    if app is None:
        raise WeightFileError(f"{path} holds a Keras graph but neither its config nor a keras_* architecture")
    options = {k: v for k, v in (recipe.get("options") or {}).items() if k not in ("conv_impl", "seed")}
    return app.graph(**options)


def _build_module(meta: dict, path: str, input_shape) -> tuple:
    """The module and its softmax layers (a Keras graph's; none for the others)."""
    entry = meta.get("module")
    if not isinstance(entry, Mapping):
        raise WeightFileError(f"{path} is a corrupt converted jaxvis model (no module entry)")
    cls = _module_class(entry, path)
    fields = _tuples(dict(entry.get("fields") or {}))
    try:
        if _is_keras(entry):
            graph = _keras_graph(_tuples(meta.get("recipe") or {}), path)
            return GraphModule(lower(graph, input_shape), **fields), softmax_layers(graph)
        if cls is GraphModule:
            fields["graph"] = graph_from_data((meta.get("recipe") or {})["graph"])
        return cls(**fields), ()
    except WeightFileError:
        raise
    except (JaxvisError, TypeError, ValueError, KeyError) as err:
        raise WeightFileError(f"{path}: cannot rebuild its {cls.__name__} ({' '.join(str(err).split())})") from None


def _init_shapes(module, input_shape) -> dict:
    if isinstance(module, GraphModule):  # a graph records its parameters' shapes
        graph, params = module.graph, {}
        for name, shape in graph.params.items():
            *groups, key = graph.param_path(name)
            tree = params
            for group in groups:
                tree = tree.setdefault(group, {})
            tree[key] = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
        return {"params": params}
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), x)


def load_converted(path, *, check: bool = True) -> ModelSpec:
    """The `ModelSpec` saved in a `.jaxvis` file by `save_converted`.

    Args:
      path: the file.
      check: compare every variable's shape with the rebuilt module's own (`jax.eval_shape` of its
        init, no compute); False skips it for the fastest load of a trusted file.

    Raises:
      WeightFileError: a missing, truncated, corrupt or foreign file, one naming a module jaxvis does
        not have, or variables that do not fit the module (key and both shapes named).
    """
    path = os.fspath(path)
    meta, flat = jaxvis_file.read_file(path)
    try:
        input_shape = tuple(int(d) for d in meta["input_shape"])
        layer_names = tuple(str(n) for n in meta["layer_names"])
        preprocess = Preprocess(**_tuples(meta["preprocess"]))
        class_names = meta.get("class_names")
        if class_names == "imagenet":
            class_names = imagenet_class_names()
        elif class_names is not None:
            class_names = tuple(str(n) for n in class_names)
        name, source = str(meta["name"]), str(meta.get("source", ""))
    except (KeyError, TypeError, ValueError) as err:
        raise WeightFileError(
            f"{path} is a corrupt converted jaxvis model (metadata: {type(err).__name__}: {err})"
        ) from None
    module, softmax = _build_module(meta, path, input_shape)
    variables = unflatten_tree(flat)
    if check:
        check_against_init(variables, _init_shapes(module, input_shape), what=f"the variables in {path}")
    return ModelSpec(
        softmax_layers=softmax,
        name=name, module=module, variables=jax.device_put(variables), input_shape=input_shape,
        layer_names=layer_names, preprocess=preprocess, logits_layer=meta.get("logits_layer"),
        class_names=class_names, source=f"{path} (converted from {source})" if source else path,
        recipe=meta.get("recipe"),
    )

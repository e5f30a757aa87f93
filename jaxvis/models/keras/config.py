"""Keras model JSON as a `Graph`: the `config.json` of a `.keras` archive or the `model_config` of a
legacy `.h5` file.

Contract: `graph_from_keras_config(model_config)` reads a Keras `Sequential` or `Functional`
model config: Keras 3 `inbound_nodes` (`args` / `kwargs` with `keras_history`) and the Keras 2
list form (`[[["conv1", 0, 0, {}]]]`), Sequential configs with or without an `InputLayer`, and
the Keras 2.0-2.2 list-only Sequential config. Shared (called several times) and multi-output
layers are refused with the layer named.

Nested models (a Keras Application inside a Sequential, a functional model calling a sub-model) are
flattened at parse time: the inner layers become nodes named by path (`vgg16/block5_conv3`), the
inner input an identity fed by the outer layer that calls the model, and the model's own name an
identity on its output. `Graph.keras_list` keeps Keras's per-model `model.layers` lists (what weight
files are laid out by). Keras 3 operation nodes (`x + 3.0`, module `keras.src.ops...`) keep their
constant operands.
"""

from __future__ import annotations

from collections.abc import Mapping

from jaxvis.errors import JaxvisError
from jaxvis.models.keras.graph import Graph, build_graph
from jaxvis.models.keras.parse import SUPPORTED_OPERATIONS, LayerConfig

__all__ = ["graph_from_keras_config"]


def _history_refs(value) -> list[tuple[str, int, int]]:
    """Every `keras_history` [layer, node_index, tensor_index] in a Keras 3 node's args / kwargs."""
    refs = []
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            history = value.get("config", {}).get("keras_history")
            if history is not None:
                refs.append((str(history[0]), int(history[1]), int(history[2])))
            return refs
        for item in value.values():
            refs.extend(_history_refs(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            refs.extend(_history_refs(item))
    return refs


def _operands(layer_json: Mapping, name: str) -> tuple:
    """A Keras 3 operation node's call arguments: None for each tensor, the literal for each constant."""
    nodes = layer_json.get("inbound_nodes") or []
    if len(nodes) != 1 or not isinstance(nodes[0], Mapping):
        raise JaxvisError(f"Keras operation {name!r} has no single Keras 3 call")
    if any(v is not None for v in (nodes[0].get("kwargs") or {}).values()):
        raise JaxvisError(f"Keras operation {name!r} ({layer_json.get('class_name')}) has keyword arguments "
                          f"{sorted(nodes[0]['kwargs'])}, which are not supported")

    def literal(value):
        if isinstance(value, Mapping) and value.get("class_name") == "__keras_tensor__":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, list, tuple)):
            raise JaxvisError(f"Keras operation {name!r} ({layer_json.get('class_name')}) takes an argument "
                              f"{str(value)[:80]!r}; only tensors and numbers are supported")
        if isinstance(value, (list, tuple)):
            return tuple(literal(v) for v in value)
        return value

    return tuple(literal(arg) for arg in nodes[0].get("args", []))


def _inbound(layer_json: Mapping, name: str) -> tuple[str, ...]:
    """The input layer names of one Functional layer entry (Keras 2 list or Keras 3 dict nodes)."""
    nodes = layer_json.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise JaxvisError(f"Keras layer {name!r} is called {len(nodes)} times (shared layers are not supported)")
    if not nodes:
        return ()
    node = nodes[0]
    if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
        refs = _history_refs(node.get("args", [])) + _history_refs(node.get("kwargs", {}))
    else:  # Keras 2: [["conv1", 0, 0, {}], ...]
        refs = []
        for entry in node:
            if isinstance(entry, Mapping):
                refs.extend(_history_refs(entry))
            else:
                refs.append(
                    (str(entry[0]), int(entry[1]) if len(entry) > 1 else 0, int(entry[2]) if len(entry) > 2 else 0)
                )
    for source, node_index, tensor_index in refs:
        if node_index != 0 or tensor_index != 0:
            raise JaxvisError(f"Keras layer {name!r} takes output {tensor_index} of call {node_index} of layer "
                              f"{source!r}: shared or multi-output layers are not supported")
    return tuple(source for source, _, _ in refs)


def _layer_name(layer_json: Mapping) -> str:
    name = layer_json.get("name") or (layer_json.get("config") or {}).get("name")
    if not name:
        raise JaxvisError(f"a Keras layer of class {layer_json.get('class_name')} has no name")
    return str(name)


_MODELS = ("Sequential", "Functional", "Model")


class _Flat:
    """The flattened layers of a model and its nested models, and Keras's per-model layer lists."""

    def __init__(self):
        self.layers: list[LayerConfig] = []
        self.keras_list: list[tuple[str, str]] = []  # (path name, class name) in `model.layers` order


def _sequential_entries(config) -> tuple[str, list, object]:
    if isinstance(config, list):  # Keras 2.0-2.2: the config is the list of layers
        return "sequential", config, None
    return str(config.get("name", "sequential")), config.get("layers", []), config.get("build_input_shape")


def _add_sequential(flat: _Flat, config, prefix: str, source: str | None) -> tuple[str, str]:
    """Flatten a Sequential config; returns (model name, name of its last layer)."""
    model_name, entries, build_shape = _sequential_entries(config)
    if not entries:
        raise JaxvisError(f"Keras Sequential model {model_name!r} has no layers")
    previous = None
    for entry in entries:
        class_name, layer_config = str(entry.get("class_name")), dict(entry.get("config") or {})
        name = prefix + _layer_name(entry)
        if class_name == "InputLayer":
            previous = _add_input(flat, name, layer_config, source)
            continue
        if previous is None:
            shape = layer_config.get("batch_input_shape", layer_config.get("batch_shape", build_shape))
            if shape is None and source is None:
                raise JaxvisError(f"Keras Sequential model {model_name!r} does not record its input shape")
            previous = _add_input(flat, f"{name}_input", {"batch_shape": list(shape or [])}, source)
        previous = _add_layer(flat, entry, class_name, name, layer_config, (previous,), prefix)
    return model_name, previous


def _add_input(flat: _Flat, name: str, config: Mapping, source: str | None) -> str:
    if source is None:
        flat.layers.append(LayerConfig("InputLayer", name, config))
    else:  # a nested model's input: the outer tensor it is called on
        flat.layers.append(LayerConfig("NestedModelInput", name, {}, (source,)))
    return name


def _add_layer(flat: _Flat, entry: Mapping, class_name: str, name: str, config: Mapping, inputs: tuple[str, ...],
               prefix: str) -> str:
    module = str(entry.get("module") or "")
    if class_name in _MODELS and not module.startswith(("keras.src.ops", "keras.ops")):
        if len(inputs) != 1:
            raise JaxvisError(f"nested Keras model {name!r} takes {len(inputs)} inputs; jaxvis supports one")
        flat.keras_list.append((name, class_name))
        output = _add_model(flat, class_name, entry.get("config"), name + "/", inputs[0])
        flat.layers.append(LayerConfig("NestedModelOutput", name, {}, (output,)))
        return name
    operands = ()
    if _is_operation(entry, class_name, module, config):
        module = module or "keras.src.ops"
        operands = _operands(entry, name)
    flat.layers.append(LayerConfig(class_name, name, config, inputs, module, operands))
    flat.keras_list.append((name, class_name))
    return name


def _is_operation(entry: Mapping, class_name: str, module: str, config: Mapping) -> bool:
    """A Keras 3 operation node: module `keras.src.ops...`, or in a legacy `.h5` (which drops the
    module) an operation's class with a config of just its name and a Keras 3 call."""
    if module.startswith(("keras.src.ops", "keras.ops")):
        return True
    nodes = entry.get("inbound_nodes") or []
    return (not module and class_name in SUPPORTED_OPERATIONS and set(config) <= {"name"} and len(nodes) == 1
            and isinstance(nodes[0], Mapping))


def _add_model(flat: _Flat, class_name: str, config, prefix: str, source: str | None) -> str:
    """Flatten a Sequential / Functional config under `prefix`; returns the name of its output layer."""
    if class_name == "Sequential":
        return _add_sequential(flat, config, prefix, source)[1]
    if class_name not in ("Functional", "Model"):
        raise JaxvisError(
            f"Keras model class {class_name!r} is not supported (only Sequential and Functional models; a "
            f"subclassed model stores no layer graph: save its weights and load them onto a zoo architecture)")
    name = str(config.get("name", "model"))
    inputs = config.get("input_layers")
    for entry in config.get("layers", []):
        layer_name = _layer_name(entry)
        entry_class, entry_config = str(entry.get("class_name")), dict(entry.get("config") or {})
        if entry_class == "InputLayer":
            _add_input(flat, prefix + layer_name, entry_config, source)
            flat.keras_list.append((prefix + layer_name, "InputLayer"))
            continue
        inbound = tuple(prefix + source_name for source_name in _inbound(entry, layer_name))
        _add_layer(flat, entry, entry_class, prefix + layer_name, entry_config, inbound, prefix)
    outputs = _output_names(config.get("output_layers"))
    if prefix and (outputs is None or len(outputs) != 1):
        raise JaxvisError(f"nested Keras model {name!r} has {len(outputs or [])} outputs; jaxvis supports one")
    if prefix and inputs is not None and len(_output_names(inputs) or []) != 1:
        raise JaxvisError(f"nested Keras model {name!r} has several inputs; jaxvis supports one")
    return prefix + outputs[0] if outputs else None


def _output_names(outputs) -> list[str] | None:
    if outputs is None:
        return None
    refs = _history_refs(outputs) if isinstance(outputs, Mapping) else None
    if refs is None:
        outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs
        refs = [(str(o[0]), 0, 0) for o in outputs]
    return [r[0] for r in refs]


def graph_from_keras_config(model_config: Mapping) -> Graph:
    """A `Graph` from a Keras model's serialized config (`{"class_name": ..., "config": ...}`)."""
    if not isinstance(model_config, Mapping) or "class_name" not in model_config:
        raise JaxvisError("the Keras model config has no class_name: not a Keras model")
    class_name, config = model_config["class_name"], model_config.get("config")
    flat = _Flat()
    if class_name == "Sequential":
        name, _ = _add_sequential(flat, config, "", None)
        graph = build_graph(flat.layers, name=name, sequential=True, keras_list=flat.keras_list)
    else:
        _add_model(flat, class_name, config, "", None)
        graph = build_graph(flat.layers, name=str(config.get("name", "model")),
                            outputs=_output_names(config.get("output_layers")), keras_list=flat.keras_list)
    if str(model_config.get("keras_version", "3")).startswith(("1.", "2.")):
        for node in graph.nodes:
            if node.activation.fn in _KERAS3_ONLY_ACTIVATIONS:
                raise JaxvisError(
                    f"Keras layer {node.name!r} ({node.class_name}) uses Keras {model_config['keras_version']}'s "
                    f"{node.activation.fn}, whose arithmetic differs from Keras 3's; it is not supported")
    return graph


# Activations whose Keras 2 definition differs (hard_sigmoid was clip(0.2 x + 0.5, 0, 1)).
_KERAS3_ONLY_ACTIVATIONS = ("hard_sigmoid",)

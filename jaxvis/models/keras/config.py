"""Keras model JSON as a `Graph`: the `config.json` of a `.keras` archive or the `model_config` of a
legacy `.h5` file.

Contract: `graph_from_keras_config(model_config)` reads a Keras `Sequential` or `Functional`
model config: Keras 3 `inbound_nodes` (`args` / `kwargs` with `keras_history`) and the Keras 2
list form (`[[["conv1", 0, 0, {}]]]`), Sequential configs with or without an `InputLayer`, and
the Keras 2.0-2.2 list-only Sequential config. Shared (called several times) and multi-output
layers are refused with the layer named.
"""

from __future__ import annotations

from collections.abc import Mapping

from jaxvis.errors import JaxvisError
from jaxvis.models.keras.graph import Graph, build_graph
from jaxvis.models.keras.parse import LayerConfig

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
                refs.append((str(entry[0]), int(entry[1]) if len(entry) > 1 else 0, int(entry[2]) if len(entry) > 2 else 0))
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


def _sequential_layers(config) -> tuple[str, list[LayerConfig]]:
    if isinstance(config, list):  # Keras 2.0-2.2: the config is the list of layers
        model_name, entries, build_shape = "sequential", config, None
    else:
        model_name, entries = str(config.get("name", "sequential")), config.get("layers", [])
        build_shape = config.get("build_input_shape")
    if not entries:
        raise JaxvisError(f"Keras Sequential model {model_name!r} has no layers")
    layers: list[LayerConfig] = []
    previous = None
    for entry in entries:
        class_name, layer_config = entry.get("class_name"), dict(entry.get("config") or {})
        name = _layer_name(entry)
        if previous is None and class_name != "InputLayer":
            shape = layer_config.get("batch_input_shape", layer_config.get("batch_shape", build_shape))
            if shape is None:
                raise JaxvisError(f"Keras Sequential model {model_name!r} does not record its input shape")
            previous = f"{name}_input"
            layers.append(LayerConfig("InputLayer", previous, {"batch_shape": list(shape)}))
        layers.append(LayerConfig(str(class_name), name, layer_config, (previous,) if previous else ()))
        previous = name
    return model_name, layers


def graph_from_keras_config(model_config: Mapping) -> Graph:
    """A `Graph` from a Keras model's serialized config (`{"class_name": ..., "config": ...}`)."""
    if not isinstance(model_config, Mapping) or "class_name" not in model_config:
        raise JaxvisError("the Keras model config has no class_name: not a Keras model")
    class_name, config = model_config["class_name"], model_config.get("config")
    if class_name == "Sequential":
        name, layers = _sequential_layers(config)
        return build_graph(layers, name=name, sequential=True)
    if class_name not in ("Functional", "Model"):
        raise JaxvisError(
            f"Keras model class {class_name!r} is not supported (only Sequential and Functional models; a "
            f"subclassed model stores no layer graph: save its weights and load them onto a zoo architecture)")
    name = str(config.get("name", "model"))
    layers = []
    for entry in config.get("layers", []):
        layer_name = _layer_name(entry)
        layers.append(LayerConfig(str(entry.get("class_name")), layer_name, dict(entry.get("config") or {}),
                                  _inbound(entry, layer_name)))
    outputs = config.get("output_layers")
    if outputs is not None:
        refs = _history_refs(outputs) if isinstance(outputs, Mapping) else None
        if refs is None:
            outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs
            refs = [(str(o[0]), 0, 0) for o in outputs]
        outputs = [r[0] for r in refs]
    return build_graph(layers, name=name, outputs=outputs)

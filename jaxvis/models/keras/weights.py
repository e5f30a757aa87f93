"""A Keras file's weights onto a Keras layer graph.

Contract: `variables_for_graph(file, graph)` returns the graph's variables (`keras.variables`: NumPy
float32, Keras layouts) from a `jaxvis.convert.keras.file.KerasFile`, checked key by key and shape
by shape against the module's own init shapes, or raises a `WeightFileError` naming the file, the
model and the layers (and both shapes) that do not line up.
"""

from __future__ import annotations

import numpy as np

from jaxvis.convert.keras.file import KerasFile, Misfit
from jaxvis.convert.trees import check_against_init
from jaxvis.errors import WeightFileError
from jaxvis.models.keras.graph import Graph
from jaxvis.models.keras.variables import init_shapes, param_key

__all__ = ["match_weights", "variables_for_graph"]


def match_weights(file: KerasFile, graph: Graph) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The file's arrays per weighted layer of `graph` (raises `Misfit` when they do not line up)."""
    return file.weights.match([node.name for node in graph.weighted], graph.keras_layers())


def variables_for_graph(file: KerasFile, graph: Graph, *, input_shape=None) -> dict:
    """The file's weights as the graph's variables (NumPy float32), checked against its shapes.

    Raises:
      WeightFileError: naming the layers that do not line up, or a layer's weight with both shapes.
    """
    try:
        matched = match_weights(file, graph)
    except Misfit as err:
        raise WeightFileError(f"{file.what} do not fit model {graph.name!r}: {err}") from None
    params = {}
    for node in graph.weighted:
        names, arrays = node.op.weight_names, matched[node.name]
        if len(arrays) != len(names):
            found = ", ".join(f"{n} {tuple(a.shape)}" for n, a in arrays) or "none"
            raise WeightFileError(
                f"{file.what} do not fit model {graph.name!r}: layer {node.name!r} ({node.class_name}) needs "
                f"{len(names)} weights ({', '.join(names)}) but the file has {len(arrays)} ({found})")
        params[param_key(node.name)] = {name: array for name, (_, array) in zip(names, arrays)}
    return check_against_init({"params": params}, init_shapes(graph, input_shape), what=file.what)

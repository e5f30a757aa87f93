"""Model files that carry their own architecture (`.pt2`, `.onnx`) as a `ModelSpec` on `GraphModule`.

Contract: `load_graph_model(path, input_size=None)` reads the file with its torch-free reader
(`jaxvis.convert.export_archive` / `jaxvis.convert.onnx_file`), lowers it to the graph IR and
returns a `ModelSpec` whose module is `GraphModule(graph)`; nothing in the file is executed.
`input_size=(height, width)` fixes symbolic spatial sizes (a static file size must agree with
it); the batch is always free. Layer names are the file's (module paths for `.pt2`, node names for
ONNX), plus `output` for each graph output that no layer names; `logits_layer` is the value a final
softmax reads (else the single output). Preprocessing is `UNIT` ([0, 1] inputs) until the caller
sets another with `dataclasses.replace`. Every problem is one `JaxvisError` line.
"""

from __future__ import annotations

import os

from jaxvis.errors import JaxvisError
from jaxvis.models.graph.executor import GraphModule
from jaxvis.models.graph.ir import Graph, graph_to_data
from jaxvis.models.spec import UNIT, ModelSpec

__all__ = ["GRAPH_SUFFIXES", "load_graph_model", "spec_from_graph"]

GRAPH_SUFFIXES = (".pt2", ".onnx")


def _input_size(input_size):
    if input_size is None:
        return None
    size = tuple(int(s) for s in (input_size if not isinstance(input_size, int) else (input_size, input_size)))
    if len(size) != 2 or min(size) < 1:
        raise JaxvisError(f"input_size must be (height, width) of positive ints, got {input_size!r}")
    return size


def _with_outputs(graph: Graph) -> tuple[Graph, str | None]:
    """Name every unnamed graph output, and find the logits layer."""
    import dataclasses

    by_value: dict[str, str] = {}
    for layer, value in graph.layers:  # the innermost module names a value several modules return
        by_value.setdefault(value, layer)
    producers = graph.producers()
    layers = list(graph.layers)
    logits = None
    for i, value in enumerate(graph.outputs):
        if value not in by_value:
            name = "output" if i == 0 else f"output_{i}"
            while name in dict(layers):
                name += "_"
            layers.append((name, value))
            by_value[value] = name
    if len(graph.outputs) == 1:
        value = graph.outputs[0]
        node = graph.nodes[producers[value]] if value in producers else None
        if node is not None and node.op in ("softmax", "log_softmax") and isinstance(node.inputs[0], str):
            value = node.inputs[0]
            if value not in by_value:
                layers.append(("logits", value))
                by_value[value] = "logits"
        logits = by_value[value]
    return dataclasses.replace(graph, layers=tuple(layers)), logits


def spec_from_graph(graph: Graph, variables, *, source: str = "") -> ModelSpec:
    """A `ModelSpec` for a lowered graph (see the module docstring). Its recipe is
    `{"graph": ir.graph_to_data(graph)}`: the architecture without weights, as JSON-able data."""
    graph, logits = _with_outputs(graph)
    recipe = {"graph": graph_to_data(graph)}
    return ModelSpec(
        name=graph.name, module=GraphModule(graph), variables=variables, input_shape=graph.image_shape,
        layer_names=graph.layer_names, preprocess=UNIT, logits_layer=logits, source=source, recipe=recipe)


def load_graph_model(path: str, *, input_size=None) -> ModelSpec:
    """A `.pt2` (torch.export archive) or `.onnx` file as a `ModelSpec` (see the module docstring)."""
    size = _input_size(input_size)
    name = os.path.splitext(os.path.basename(path))[0] or "model"
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".pt2":
        from jaxvis.convert.export_archive import read_export_archive
        from jaxvis.models.graph.from_export import graph_from_export

        graph, variables = graph_from_export(read_export_archive(path), name=name, input_size=size)
    elif suffix == ".onnx":
        from jaxvis.convert.onnx_file import read_onnx
        from jaxvis.models.graph.from_onnx import graph_from_onnx

        graph, variables = graph_from_onnx(read_onnx(path), name=name, input_size=size)
    else:
        raise JaxvisError(f"{path}: not a graph model file (expected one of {', '.join(GRAPH_SUFFIXES)})")
    return spec_from_graph(graph, variables, source=path)

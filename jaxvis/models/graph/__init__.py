"""One graph IR and one executor for models whose files carry their architecture (.pt2, .onnx, and
Keras files, lowered by `jaxvis.models.keras.lower`).

`ir` (the data), `ops` (the op library, NHWC), `executor` (`GraphModule`, with the op families
`values`, `elementwise`, `spatial`, `axis_ops`, `shape_ops`), `build` (lowering
helper with shape inference and folding), `from_export` / `from_onnx` (front-ends), `load`
(`load_graph_model(path, input_size=None) -> ModelSpec`).
"""

from jaxvis.models.graph.executor import GraphModule
from jaxvis.models.graph.ir import Graph, Node
from jaxvis.models.graph.load import GRAPH_SUFFIXES, load_graph_model, spec_from_graph

__all__ = ["GRAPH_SUFFIXES", "Graph", "GraphModule", "Node", "load_graph_model", "spec_from_graph"]

"""One graph IR and one executor for models whose files carry their architecture.

`ir` (the data), `ops` (the op library, NHWC), `executor` (`GraphModule`), `build` (the lowering
helper: shape inference and constant folding).
"""

from jaxvis.models.graph.executor import GraphModule
from jaxvis.models.graph.ir import Graph, Node

__all__ = ["Graph", "GraphModule", "Node"]

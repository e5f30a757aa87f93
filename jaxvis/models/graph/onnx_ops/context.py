"""The state of lowering one ONNX node, shared by every ONNX op lowering.

Contract: `Ctx(builder, opset)` holds the `GraphBuilder`, the model's opset and `node` (the ONNX
node being lowered); its helpers read the node's inputs and attributes, fold static inputs, add IR
nodes named after the ONNX node, and build errors that name the node and its op type.
"""

from __future__ import annotations

from jaxvis.convert.onnx_file import OnnxNode
from jaxvis.errors import JaxvisError
from jaxvis.models.graph.build import GraphBuilder

__all__ = ["Ctx"]


class Ctx:
    def __init__(self, builder: GraphBuilder, opset: int):
        self.b, self.opset = builder, opset
        self.node: OnnxNode | None = None

    @property
    def where(self) -> str:
        return self.node.name or self.node.outputs[0]

    def fail(self, message: str) -> JaxvisError:
        return JaxvisError(f"ONNX node {self.where!r} ({self.node.op_type}): {message}")

    def input(self, i: int):
        """The i-th input's value name, or None where absent."""
        inputs = self.node.inputs
        return inputs[i] if i < len(inputs) and inputs[i] else None

    def static(self, i: int, what: str):
        name = self.input(i)
        return None if name is None else self.b.static(name, what, self.where)

    def attr(self, key, default=None):
        return self.node.attrs.get(key, default)

    def rank(self, name) -> int:
        return len(self.b.shape(name))

    def add(self, op, inputs, outputs=None, attrs=None):
        outputs = list(self.node.outputs[:1]) if outputs is None else outputs
        return self.b.node(op, inputs, outputs, attrs, name=self.where)

    def tmp(self, suffix: str) -> str:
        return f"{self.node.outputs[0]}__{suffix}"

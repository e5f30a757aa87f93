"""Every graph loaded by these tests checks each shape rule's answer against tracing the node."""

import jax
import pytest

from jaxvis.models.graph import build
from jaxvis.models.graph.executor import run_node
from jaxvis.models.graph.ir import Node
from jaxvis.models.graph.values import V, plain


def traced_shapes(op, attrs, inputs, shapes):
    """What the executor's own op gives for these input shapes (the builder's fallback)."""
    node = Node.make(op, inputs, [f"out{i}" for i in range(8)], attrs, "checked")

    def trace(*arrays):
        it = iter(arrays)
        args = [V(next(it)) if isinstance(v, str) else v for v in inputs]
        return [plain(r) for r in run_node(node, args, build._SHAPE_CTX)]

    return jax.eval_shape(trace, *[s for v, s in zip(inputs, shapes) if isinstance(v, str)])


@pytest.fixture(autouse=True)
def shape_rules_agree_with_tracing(monkeypatch):
    answered = []

    def checked(op, attrs, inputs, shapes):
        rule = infer(op, attrs, inputs, shapes)
        if rule is not None:
            want = traced_shapes(op, attrs, inputs, shapes)
            assert [(tuple(s.shape), s.dtype) for s in rule] == [(tuple(s.shape), s.dtype) for s in want], (op, attrs)
            answered.append(op)
        return rule

    infer = build.infer_shapes
    monkeypatch.setattr(build, "infer_shapes", checked)
    return answered

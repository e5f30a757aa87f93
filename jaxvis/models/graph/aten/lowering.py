"""The state of lowering one `torch.export` program, shared by every ATen op lowering.

Contract: `Lowering(builder, symbols)` holds the `GraphBuilder`, the values of the program's
symbolic sizes, and `where` (the module path of the node being lowered, which every error names).
A lowering is `fn(L, args, outputs)`: `args` maps the op's schema argument names to decoded values
(value names, Python values), `outputs` are the node's output value names.
"""

from __future__ import annotations

import numpy as np

from jaxvis.errors import JaxvisError
from jaxvis.models.graph.build import GraphBuilder

__all__ = ["Lowering", "Unset", "scalar"]


class Unset:
    pass


class Lowering:
    """State while lowering one program: the builder, symbol values, the current node's module."""

    def __init__(self, builder: GraphBuilder, symbols: dict[str, int]):
        self.b, self.symbols, self.where = builder, symbols, ""

    def fail(self, message: str) -> JaxvisError:
        return JaxvisError(f"torch.export node in module {self.where or '<root>'!r}: {message}")

    def ints(self, value, what: str) -> tuple[int, ...]:
        if isinstance(value, (int, np.integer)):
            return (int(value),)
        return tuple(int(v) for v in value)

    def pair(self, value, what: str, default=None) -> tuple[int, int]:
        if value is None:
            value = default
        v = self.ints(value, what)
        if len(v) == 1:
            return v[0], v[0]
        if len(v) != 2:
            raise self.fail(f"{what} must have 1 or 2 entries for a 2-D op, got {v}")
        return v

    def rank(self, name) -> int:
        return len(self.b.shape(name))

    def node(self, op, inputs, outputs, attrs=None):
        return self.b.node(op, inputs, outputs, attrs, name=self.where)


def scalar(value):
    return value

"""`graph.shape_rules`: each rule gives exactly the shapes tracing the executor's op gives, and
declines (None) what it does not cover, so the builder traces it and words its error."""

import itertools

import jax
import numpy as np
import pytest
from conftest import traced_shapes

from jaxvis.errors import JaxvisError
from jaxvis.models.graph.build import GraphBuilder
from jaxvis.models.graph.shape_rules import infer

F32, I32 = np.float32, np.int32


def _s(*shape, dtype=F32):
    return jax.ShapeDtypeStruct(shape, dtype)


def _same(rule, want):
    return [(tuple(s.shape), np.dtype(s.dtype)) for s in rule] == [(tuple(s.shape), np.dtype(s.dtype)) for s in want]


CONVS = [  # (input NCHW, kernel (kh, kw), stride, padding, dilation, groups, cout)
    *[((2, 8, h, w), k, s, p, (1, 1), 1, 16) for (h, w), k, s, p in itertools.product(
        [(17, 17), (16, 23), (7, 9)], [(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 1)], [(1, 1), (2, 2), (2, 1)],
        [((0, 0), (0, 0)), ((1, 1), (1, 1)), ((3, 2), (0, 3)), "same"])],
    ((1, 8, 15, 15), (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 1, 4),
    ((1, 8, 15, 15), (3, 3), (2, 2), "same", (3, 2), 1, 4),
    ((1, 8, 15, 15), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2, 6),
    ((1, 8, 15, 15), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 8, 8),  # depthwise
    ((1, 8, 15, 15), (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1), 8, 16),  # depthwise multiplier 2
]


@pytest.mark.parametrize("x, kernel, stride, padding, dilation, groups, cout", CONVS)
def test_conv_shapes_equal_traced_ones(x, kernel, stride, padding, dilation, groups, cout):
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, transposed=False,
                 output_padding=(0, 0))
    shapes = [_s(*x), _s(*kernel, x[1] // groups, cout), _s(cout)]
    for inputs in (["x", "w", "b"], ["x", "w", None], ["x", "w"]):
        got = infer("conv", attrs, inputs, shapes[:len(inputs)] if inputs[-1] else shapes[:2] + [None])
        assert got is not None and _same(got, traced_shapes("conv", attrs, inputs, shapes[:len(inputs)]))


@pytest.mark.parametrize("op, inputs, shapes", [
    ("relu", ["x"], [_s(2, 3, 4, 4)]),
    ("hardswish", ["x"], [_s(1, 5)]),
    ("gelu", ["x"], [_s(3, 7, 2)]),
    ("add", ["a", "b"], [_s(2, 3, 4, 4), _s(3, 1, 1)]),
    ("mul", ["a", "b"], [_s(2, 3, 4, 4), _s(2, 3, 1, 1)]),
    ("sub", ["a", 1.5], [_s(2, 3), None]),
    ("div", [2, "a"], [None, _s(4, 1, 6)]),
    ("maximum", ["a", "b"], [_s(1, 6), _s(5, 1)]),
    ("batch_norm", ["x", "g", "b", "m", "v"], [_s(2, 3, 4, 4), _s(3), _s(3), _s(3), _s(3)]),
    ("batch_norm", ["x", None, None, "m", "v"], [_s(2, 6, 5), None, None, _s(6), _s(6)]),
])
def test_elementwise_and_norm_shapes_equal_traced_ones(op, inputs, shapes):
    got = infer(op, {}, inputs, shapes)
    assert got is not None and _same(got, traced_shapes(op, {}, inputs, shapes))


@pytest.mark.parametrize("op, attrs, inputs, shapes", [
    ("conv", dict(stride=(1, 1), padding=((0, 0), (0, 0)), groups=1), ["x", "w"], [_s(1, 4, 8, 8), _s(3, 3, 5, 2)]),
    ("conv", dict(stride=(1, 1), padding=((0, 0), (0, 0)), groups=1), ["x", "w"], [_s(1, 4, 2, 2), _s(3, 3, 4, 2)]),
    ("conv", dict(stride=(1, 1), padding=((0, 0), (0, 0)), groups=1, transposed=True), ["x", "w"],
     [_s(1, 4, 8, 8), _s(3, 3, 4, 2)]),
    ("conv", dict(stride=(1, 1), padding="valid", groups=1), ["x", "w"], [_s(1, 4, 8, 8), _s(3, 3, 4, 2)]),
    ("conv", dict(stride=(1, 1), padding=((0, 0), (0, 0)), groups=1), ["x", "w", "b"],
     [_s(1, 4, 8, 8), _s(3, 3, 4, 2), _s(3)]),
    ("relu", {}, ["x"], [_s(2, 3, dtype=I32)]),
    ("add", {}, ["a", "b"], [_s(2, 3), _s(4)]),
    ("add", {}, ["a", "b"], [_s(2, 3), _s(3, dtype=I32)]),
    ("add", {}, ["a", True], [_s(2, 3), None]),
    ("div", {"rounding": "floor"}, ["a", "b"], [_s(2, 3), _s(3)]),
    ("batch_norm", {}, ["x", "g", "b", "m", "v"], [_s(2, 3, 4, 4), _s(4), _s(3), _s(3), _s(3)]),
    ("max_pool", {}, ["x"], [_s(1, 3, 4, 4)]),
])
def test_what_a_rule_does_not_cover_is_declined(op, attrs, inputs, shapes):
    assert infer(op, attrs, inputs, shapes) is None


def test_a_node_that_does_not_fit_is_still_one_error_naming_it(shape_rules_agree_with_tracing):
    b = GraphBuilder("bad", "test")
    b.set_input("x", (1, 4, 8, 8))
    b.add_param("w", np.zeros((2, 3, 3, 3), F32))  # 3 input channels against the image's 4
    b.mark_weight("w", "conv", 1, "conv")
    with pytest.raises(JaxvisError, match="'conv1' cannot run: .* does not fit 4 input channels"):
        b.node("conv", ["x", "w", None], ["y"], dict(stride=(1, 1), padding=((1, 1), (1, 1))), name="conv1")


def test_graph_loads_use_the_rules(shape_rules_agree_with_tracing):
    b = GraphBuilder("ok", "test")
    b.set_input("x", (1, 3, 8, 8))
    b.add_param("w", np.ones((4, 3, 3, 3), F32))
    b.mark_weight("w", "conv", 1, "conv")
    b.node("conv", ["x", "w", None], ["y"], dict(stride=(1, 1), padding=((1, 1), (1, 1))), name="conv")
    b.node("relu", ["y"], ["r"], name="relu")
    graph, variables = b.finish([("relu", "r")], ["r"])
    assert shape_rules_agree_with_tracing == ["conv", "relu"]
    assert variables["params"]["w"].shape == (3, 3, 3, 4)
    np.testing.assert_array_equal(np.asarray(variables["params"]["w"]), np.ones((3, 3, 3, 4), F32))

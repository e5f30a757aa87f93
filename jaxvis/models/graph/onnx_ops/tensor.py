"""ONNX lowerings of tensor ops (the ONNX front-end).

Arithmetic, linear algebra, joining and indexing, shapes, reductions, quantization, and
the ops evaluated at load time (Constant, Shape, Range, ...).

Contract: `LOWER` maps each ONNX op type (default domain) to `fn(ctx)` (see
`jaxvis.models.graph.onnx_ops.context`), which adds IR nodes with the op's full attribute semantics
for opsets 11-21.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxvis.models.graph.onnx_ops.context import Ctx

__all__ = ["LOWER"]

_INT64_MAX = 2 ** 62


def _cast(c: Ctx):
    import onnx

    to = c.attr("to")
    if to is None and c.node.op_type == "CastLike":
        c.add("identity", [c.input(0)])
        return
    kind = {onnx.TensorProto.BOOL: "bool", onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}.get(
        to, "float"
    )
    c.add("cast", [c.input(0)], attrs=dict(dtype=kind))


def _binary(op):
    def lower(c: Ctx):
        attrs = {"fmod": True} if op == "mod" and c.attr("fmod", 0) else {}
        c.add(op, [c.input(0), c.input(1)], attrs=attrs)
    return lower


def _variadic(op):
    def lower(c: Ctx):
        inputs = [i for i in c.node.inputs if i]
        value = inputs[0]
        for i, other in enumerate(inputs[1:]):
            last = i == len(inputs) - 2
            value = c.add("add" if op == "mean" else op, [value, other],
                          outputs=None if last and op != "mean" else [c.tmp(f"acc{i}")])[0]
        if op == "mean":
            c.add("div", [value, float(len(inputs))])
        elif len(inputs) == 1:
            c.add("identity", [value])
    return lower


_QRANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
            "uint4": (0, 15), "int4": (-8, 7)}


def _quantize(c: Ctx):
    import onnx

    if c.attr("block_size", 0):
        raise c.fail("blocked quantization (block_size) is not supported")
    zero = c.input(2)
    if zero is not None:
        kind = str(c.b.known[zero].dtype) if zero in c.b.known else "uint8"
    else:
        to = c.attr("output_dtype", onnx.TensorProto.UINT8) or onnx.TensorProto.UINT8
        kind = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT16: "uint16",
                onnx.TensorProto.INT16: "int16"}.get(to, "uint8")
    if kind not in _QRANGES:
        raise c.fail(f"quantization to {kind} is not supported")
    qmin, qmax = _QRANGES[kind]
    c.add("quantize", [c.input(0), c.input(1), zero], attrs=dict(axis=int(c.attr("axis", 1)), qmin=qmin, qmax=qmax))


def _dequantize(c: Ctx):
    if c.attr("block_size", 0):
        raise c.fail("blocked quantization (block_size) is not supported")
    c.add("dequantize", [c.input(0), c.input(1), c.input(2)], attrs=dict(axis=int(c.attr("axis", 1))))


def _where(c: Ctx):
    c.add("where", [c.input(0), c.input(1), c.input(2)])


def _gemm(c: Ctx):
    c.add("gemm", [c.input(0), c.input(1), c.input(2)], attrs=dict(
        alpha=float(c.attr("alpha", 1.0)), beta=float(c.attr("beta", 1.0)),
        trans_a=bool(c.attr("transA", 0)), trans_b=bool(c.attr("transB", 0))))


def _matmul(c: Ctx):
    c.add("matmul", [c.input(0), c.input(1)])


def _concat(c: Ctx):
    c.add("concat", [i for i in c.node.inputs if i], attrs=dict(axis=int(c.attr("axis"))))


def _split(c: Ctx):
    x = c.input(0)
    axis = int(c.attr("axis", 0))
    n = c.b.shape(x)[axis]
    sizes = c.static(1, "split sizes") if c.opset >= 13 else c.attr("split")
    outputs = list(c.node.outputs)
    if sizes is None:
        count = int(c.attr("num_outputs", len(outputs)))
        size = -(-n // count)
        sizes = [size] * (count - 1) + [n - size * (count - 1)]
    c.add(
        "split", [x], outputs=outputs, attrs=dict(axis=axis, sizes=tuple(int(s) for s in np.asarray(sizes).reshape(-1)))
    )


def _slice(c: Ctx):
    x = c.input(0)
    starts = c.static(1, "starts")
    ends = c.static(2, "ends")
    rank = c.rank(x)
    axes = c.static(3, "axes")
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    steps = c.static(4, "steps")
    steps = [1] * len(axes) if steps is None else [int(s) for s in np.asarray(steps).reshape(-1)]
    clamp = lambda v: int(max(min(int(v), _INT64_MAX), -_INT64_MAX))  # noqa: E731
    c.add("slice", [x], attrs=dict(axes=tuple(axes), starts=tuple(clamp(s) for s in np.asarray(starts).reshape(-1)),
                                   ends=tuple(clamp(e) for e in np.asarray(ends).reshape(-1)), steps=tuple(steps)))


def _gather(c: Ctx):
    x, indices = c.input(0), c.input(1)
    axis = int(c.attr("axis", 0))
    if c.b.is_known(indices):
        value = np.asarray(c.b.static(indices, "indices", c.where))
        c.add("gather", [x], attrs=dict(axis=axis, indices=value.tolist()))
    else:
        c.add("gather", [x, indices], attrs=dict(axis=axis))


def _gather_nd(c: Ctx):
    c.add("gather_nd", [c.input(0), c.input(1)], attrs=dict(batch_dims=int(c.attr("batch_dims", 0))))


def _gather_elements(c: Ctx):
    c.add("gather_elements", [c.input(0), c.input(1)], attrs=dict(axis=int(c.attr("axis", 0))))


def _flatten(c: Ctx):
    x = c.input(0)
    rank = c.rank(x)
    axis = int(c.attr("axis", 1)) % (rank + 1) if rank else 0
    if axis == 0:
        flat = c.add("flatten", [x], outputs=[c.tmp("flat")], attrs=dict(start=0, end=-1))[0]
        c.add("unsqueeze", [flat], attrs=dict(axes=(0,)))
    elif axis == rank:
        inner = c.add("flatten", [x], outputs=[c.tmp("flat")], attrs=dict(start=0, end=-1))[0]
        c.add("unsqueeze", [inner], attrs=dict(axes=(1,)))
    else:
        value = x
        if axis < rank - 1:
            value = c.add("flatten", [value], outputs=[c.tmp("inner")], attrs=dict(start=axis, end=-1))[0]
        if axis > 1:
            c.add("flatten", [value], attrs=dict(start=0, end=axis - 1))
        elif value == x:
            c.add("identity", [x])
        else:
            c.add("identity", [value])


def _reshape(c: Ctx):
    shape = c.static(1, "target shape")
    c.add("reshape", [c.input(0)], attrs=dict(shape=tuple(int(s) for s in np.asarray(shape).reshape(-1)),
                                              allowzero=bool(c.attr("allowzero", 0))))


def _transpose(c: Ctx):
    rank = c.rank(c.input(0))
    perm = c.attr("perm", list(range(rank))[::-1])
    c.add("permute", [c.input(0)], attrs=dict(perm=tuple(perm)))


def _axes(c: Ctx, since: int):
    """Axes from the attribute (opset < since) or the second input."""
    if c.opset >= since:
        axes = c.static(1, "axes")
    else:
        axes = c.attr("axes")
    return None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1))


def _squeeze(c: Ctx):
    c.add("squeeze", [c.input(0)], attrs=dict(axes=_axes(c, 13)))


def _unsqueeze(c: Ctx):
    c.add("unsqueeze", [c.input(0)], attrs=dict(axes=_axes(c, 13)))


def _expand(c: Ctx):
    shape = c.static(1, "target shape")
    c.add("expand", [c.input(0)], attrs=dict(shape=tuple(int(s) for s in np.asarray(shape).reshape(-1)), numpy=True))


def _tile(c: Ctx):
    c.add(
        "tile", [c.input(0)], attrs=dict(repeats=tuple(int(r) for r in np.asarray(c.static(1, "repeats")).reshape(-1)))
    )


def _reduce(kind, since):
    def lower(c: Ctx):
        axes = _axes(c, since)
        if axes is not None and len(axes) == 0:
            axes = None
        if axes is None and c.attr("noop_with_empty_axes", 0):
            c.add("identity", [c.input(0)])
            return
        c.add("reduce", [c.input(0)], attrs=dict(kind=kind, axes=axes, keepdim=bool(c.attr("keepdims", 1))))
    return lower


def _argmax(minimum):
    def lower(c: Ctx):
        if c.attr("select_last_index", 0):
            raise c.fail("select_last_index is not supported")
        c.add("argmax", [c.input(0)], attrs=dict(axis=int(c.attr("axis", 0)), keepdim=bool(c.attr("keepdims", 1)),
                                                 min=minimum))
    return lower


def _einsum(c: Ctx):
    c.add("einsum", [i for i in c.node.inputs if i], attrs=dict(equation=c.attr("equation").replace(" ", "")))


def _scatter_nd(c: Ctx):
    c.add("scatter_nd", [c.input(0), c.input(1), c.input(2)], attrs=dict(reduction=c.attr("reduction", "none")))


def _cumsum(c: Ctx):
    axis = int(np.asarray(c.static(1, "axis")).reshape(()))
    c.add(
        "cumsum",
        [c.input(0)],
        attrs=dict(axis=axis, exclusive=bool(c.attr("exclusive", 0)), reverse=bool(c.attr("reverse", 0))),
    )


def _constant(c: Ctx):
    attrs = c.node.attrs
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if attrs.get(key) is not None:
            value = np.asarray(attrs[key], np.float32 if "float" in key else (np.int64 if "int" in key else None))
            c.b.add_const(c.node.outputs[0], value)
            return
    raise c.fail("a Constant without a supported value (sparse or string constants are not supported)")


def _shape(c: Ctx):
    shape = np.asarray(c.b.shape(c.input(0)), np.int64)
    start, end = c.attr("start", 0), c.attr("end")
    c.b.add_const(c.node.outputs[0], shape[start:end])


def _size(c: Ctx):
    c.b.add_const(c.node.outputs[0], np.asarray(int(np.prod(c.b.shape(c.input(0)))), np.int64))


def _constant_of_shape(c: Ctx):
    shape = [int(s) for s in np.asarray(c.static(0, "shape")).reshape(-1)]
    value = c.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    c.b.add_const(c.node.outputs[0], np.full(shape, value[0], value.dtype))


def _range(c: Ctx):
    start, limit, delta = (
        np.asarray(c.static(i, name)).reshape(()) for i, name in enumerate(("start", "limit", "delta"))
    )
    c.b.add_const(c.node.outputs[0], np.arange(start, limit, delta))


LOWER: dict[str, Callable] = {
    "Cast": _cast,
    "CastLike": _cast,
    "Add": _binary("add"),
    "Sub": _binary("sub"),
    "Mul": _binary("mul"),
    "Div": _binary("div"),
    "Pow": _binary("pow"),
    "Equal": _binary("equal"),
    "Less": _binary("less"),
    "Greater": _binary("greater"),
    "LessOrEqual": _binary("less_equal"),
    "GreaterOrEqual": _binary("greater_equal"),
    "And": _binary("and"),
    "Or": _binary("or"),
    "Mod": _binary("mod"),
    "Where": _where,
    "Max": _variadic("maximum"),
    "Min": _variadic("minimum"),
    "Sum": _variadic("add"),
    "Mean": _variadic("mean"),
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Gather": _gather,
    "GatherND": _gather_nd,
    "GatherElements": _gather_elements,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Expand": _expand,
    "Tile": _tile,
    "ReduceMean": _reduce("mean", 18),
    "ReduceSum": _reduce("sum", 13),
    "ReduceMax": _reduce("max", 18),
    "ReduceMin": _reduce("min", 18),
    "ReduceProd": _reduce("prod", 18),
    "ReduceL1": _reduce("l1", 18),
    "ReduceL2": _reduce("l2", 18),
    "ReduceSumSquare": _reduce("sum_square", 18),
    "ReduceLogSumExp": _reduce("log_sum_exp", 18),
    "ArgMax": _argmax(False),
    "ArgMin": _argmax(True),
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Einsum": _einsum,
    "ScatterND": _scatter_nd,
    "CumSum": _cumsum,
    "Constant": _constant,
    "Shape": _shape,
    "Size": _size,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
}

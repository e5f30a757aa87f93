"""ATen lowerings of tensor ops (the `torch.export` front-end).

Arithmetic, linear algebra, joining and indexing, views, reductions, factories.

Contract: `LOWER` maps each ATen op name (overload stripped) to `fn(L, args, outputs)` (see
`jaxvis.models.graph.aten.lowering`), which adds IR nodes with the op's full argument semantics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["LOWER"]


def _binary(op):
    def lower(L, a, out):
        attrs = {}
        if "alpha" in a and a["alpha"] != 1:
            attrs["alpha"] = a["alpha"]
        if a.get("rounding_mode") is not None:
            attrs["rounding"] = a["rounding_mode"]
        L.node(op, [a["self"], a["other"]], out, attrs)
    return lower


def _rsub(L, a, out):
    scaled = a["self"]
    if a.get("alpha", 1) != 1:
        scaled = L.node("mul", [a["self"], a["alpha"]], [out[0] + "__alpha"])[0]
    L.node("sub", [a["other"], scaled], out)


def _pow(L, a, out):
    L.node("pow", [a["self"], a["exponent"]], out)


def _linear(L, a, out):
    L.node("linear", [a["input"], a["weight"], a.get("bias")], out)


def _addmm(L, a, out):
    L.node(
        "gemm",
        [a["mat1"], a["mat2"], a["self"]],
        out,
        dict(alpha=float(a.get("alpha", 1)), beta=float(a.get("beta", 1))),
    )


def _matmul(L, a, out):
    L.node("matmul", [a["self"], a.get("other", a.get("mat2"))], out)


def _t(L, a, out):
    rank = L.rank(a["self"])
    L.node("permute", [a["self"]], out, dict(perm=(1, 0) if rank == 2 else tuple(range(rank))))


def _cat(L, a, out):
    L.node("concat", list(a["tensors"]), out, dict(axis=int(a.get("dim", 0))))


def _stack(L, a, out):
    L.node("stack", list(a["tensors"]), out, dict(axis=int(a.get("dim", 0))))


def _split(L, a, out):
    x, dim = a["self"], int(a.get("dim", 0))
    n = L.b.shape(x)[dim]
    if "split_sizes" in a:
        sizes = L.ints(a["split_sizes"], "split_sizes")
    else:
        size = int(a["split_size"])
        sizes = [size] * (n // size) + ([n % size] if n % size else [])
    L.node("split", [x], out, dict(axis=dim, sizes=tuple(sizes)))


def _chunk(L, a, out):
    x, dim = a["self"], int(a.get("dim", 0))
    n, chunks = L.b.shape(x)[dim], int(a["chunks"])
    size = -(-n // chunks)
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    L.node("split", [x], out, dict(axis=dim, sizes=tuple(sizes)))


def _unbind(L, a, out):
    x, dim = a["self"], int(a.get("dim", 0))
    n = L.b.shape(x)[dim]
    parts = L.node("split", [x], [f"{o}__part" for o in out], dict(axis=dim, sizes=(1,) * n))
    for part, o in zip(parts, out):
        L.node("squeeze", [part], [o], dict(axes=(dim,)))


def _slice(L, a, out):
    start, end = a.get("start"), a.get("end")
    L.node(
        "slice",
        [a["self"]],
        out,
        dict(
            axes=(int(a.get("dim", 0)),),
            starts=(0 if start is None else int(start),),
            ends=(2**62 if end is None else int(end),),
            steps=(int(a.get("step", 1)),),
        ),
    )


def _narrow(L, a, out):
    start = int(a["start"])
    L.node("slice", [a["self"]], out, dict(axes=(int(a["dim"]),), starts=(start,), ends=(start + int(a["length"]),),
                                           steps=(1,)))


def _select(L, a, out):
    L.node("gather", [a["self"]], out, dict(axis=int(a["dim"]), indices=int(a["index"])))


def _index_select(L, a, out):
    L.node("gather", [a["self"], a["index"]], out, dict(axis=int(a["dim"])))


def _index(L, a, out):
    indices = list(a["indices"])
    if all(i is None for i in indices):
        raise L.fail("an index with no index tensors")
    L.node("index", [a["self"], *indices], out)


def _slice_scatter(L, a, out):
    L.node("slice_scatter", [a["self"], a["src"]], out, dict(axis=int(a.get("dim", 0)), start=a.get("start"),
                                                             end=a.get("end"), step=int(a.get("step", 1))))


def _flip(L, a, out):
    dims = L.ints(a["dims"], "dims")
    L.node("slice", [a["self"]], out, dict(axes=dims, starts=(-1,) * len(dims), ends=(-2 ** 62,) * len(dims),
                                           steps=(-1,) * len(dims)))


def _einsum(L, a, out):
    L.node("einsum", list(a["tensors"]), out, dict(equation=a["equation"].replace(" ", "")))


def _copy(L, a, out):
    """Functional `copy(self, src)`: src's values in self's shape."""
    L.node("expand", [a["src"]], out, dict(shape=L.b.shape(a["self"]), numpy=True))


def _view(L, a, out):
    L.node("reshape", [a["self"]], out, dict(shape=L.ints(a.get("size", a.get("shape")), "size")))


def _flatten(L, a, out):
    L.node(
        "flatten",
        [a.get("self", a.get("input"))],
        out,
        dict(start=int(a.get("start_dim", 0)), end=int(a.get("end_dim", -1))),
    )


def _permute(L, a, out):
    L.node("permute", [a["self"]], out, dict(perm=L.ints(a["dims"], "dims")))


def _transpose(L, a, out):
    rank = L.rank(a["self"])
    perm = list(range(rank))
    d0, d1 = int(a["dim0"]) % rank, int(a["dim1"]) % rank
    perm[d0], perm[d1] = perm[d1], perm[d0]
    L.node("permute", [a["self"]], out, dict(perm=tuple(perm)))


def _squeeze(L, a, out):
    dims = a.get("dim", a.get("dims"))
    L.node("squeeze", [a["self"]], out, dict(axes=None if dims is None else L.ints(dims, "dim")))


def _unsqueeze(L, a, out):
    L.node("unsqueeze", [a["self"]], out, dict(axes=(int(a["dim"]),)))


def _expand(L, a, out):
    L.node("expand", [a["self"]], out, dict(shape=L.ints(a["size"], "size")))


def _expand_as(L, a, out):
    L.node("expand", [a["self"]], out, dict(shape=L.b.shape(a["other"])))


def _view_as(L, a, out):
    L.node("reshape", [a["self"]], out, dict(shape=L.b.shape(a["other"])))


def _repeat(L, a, out):
    L.node("tile", [a["self"]], out, dict(repeats=L.ints(a["repeats"], "repeats")))


def _reduce(kind):
    def lower(L, a, out):
        dims = a.get("dim")
        axes = None if dims is None or (not isinstance(dims, int) and len(dims) == 0) else L.ints(dims, "dim")
        L.node("reduce", [a["self"]], out[:1], dict(kind=kind, axes=axes, keepdim=bool(a.get("keepdim", False))))
    return lower


def _max_dim(L, a, out):
    attrs = dict(axes=(int(a["dim"]),), keepdim=bool(a.get("keepdim", False)))
    L.node("reduce", [a["self"]], out[:1], dict(kind="max", **attrs))


def _where(L, a, out):
    L.node("where", [a["condition"], a["self"], a["other"]], out)


def _identity(L, a, out):
    L.node("identity", [a.get("self", a.get("input"))], out[:1])


def _to(L, a, out):
    dtype = a.get("dtype")
    kind = {5: "int64", 4: "int32", 12: "bool", 7: "float32", 6: "float16", 8: "float64", 13: "float32"}.get(
        dtype, "float"
    )
    if dtype is None:
        _identity(L, a, out)
    else:
        L.node("cast", [a["self"]], out, dict(dtype=kind))


_DTYPES = {4: np.int32, 5: np.int64, 6: np.float32, 7: np.float32, 8: np.float32, 12: np.bool_, 13: np.float32}


def _factory(kind):
    """Tensors made from sizes alone (zeros, ones, full, arange, *_like): constants at load time."""
    def lower(L, a, out):
        dtype = _DTYPES.get(a.get("dtype"), None)
        if kind == "arange":
            start, end = (a.get("start", 0), a["end"])
            value = np.arange(start, end, a.get("step", 1))
            dtype = dtype or (np.float32 if value.dtype.kind == "f" else np.int64)
        else:
            like = a.get("self")
            shape = L.b.shape(like) if like is not None else tuple(L.ints(a.get("size", ()), "size"))
            fill = {"zeros": 0, "ones": 1}.get(kind, a.get("fill_value", a.get("s", 0)))
            value = np.full(shape, fill)
            dtype = dtype or (np.float32 if isinstance(fill, float) or like is not None else
                              (np.bool_ if isinstance(fill, bool) else np.int64))
        L.b.add_const(out[0], np.asarray(value, dtype))
    return lower


def _vector_norm(L, a, out):
    order = float(a.get("ord", 2))
    if order not in (1.0, 2.0):
        raise L.fail(f"vector norms of order {order} are not supported (1 and 2 are)")
    dims = a.get("dim")
    axes = None if dims is None or (not isinstance(dims, int) and len(dims) == 0) else L.ints(dims, "dim")
    L.node(
        "reduce",
        [a["self"]],
        out,
        dict(kind="l2" if order == 2 else "l1", axes=axes, keepdim=bool(a.get("keepdim", False))),
    )


LOWER: dict[str, Callable] = {
    "add": _binary("add"),
    "sub": _binary("sub"),
    "mul": _binary("mul"),
    "div": _binary("div"),
    "rsub": _rsub,
    "pow": _pow,
    "maximum": _binary("maximum"),
    "minimum": _binary("minimum"),
    "eq": _binary("equal"),
    "lt": _binary("less"),
    "gt": _binary("greater"),
    "le": _binary("less_equal"),
    "ge": _binary("greater_equal"),
    "where": _where,
    "linear": _linear,
    "addmm": _addmm,
    "mm": _matmul,
    "matmul": _matmul,
    "bmm": _matmul,
    "t": _t,
    "cat": _cat,
    "concat": _cat,
    "stack": _stack,
    "split": _split,
    "split_with_sizes": _split,
    "chunk": _chunk,
    "unbind": _unbind,
    "slice": _slice,
    "narrow": _narrow,
    "select": _select,
    "index_select": _index_select,
    "view": _view,
    "reshape": _view,
    "_unsafe_view": _view,
    "flatten": _flatten,
    "permute": _permute,
    "transpose": _transpose,
    "squeeze": _squeeze,
    "unsqueeze": _unsqueeze,
    "expand": _expand,
    "repeat": _repeat,
    "expand_as": _expand_as,
    "view_as": _view_as,
    "reshape_as": _view_as,
    "mean": _reduce("mean"),
    "sum": _reduce("sum"),
    "amax": _reduce("max"),
    "amin": _reduce("min"),
    "max": _max_dim,
    "dropout": _identity,
    "native_dropout": _identity,
    "feature_dropout": _identity,
    "alpha_dropout": _identity,
    "clone": _identity,
    "contiguous": _identity,
    "alias": _identity,
    "detach": _identity,
    "detach_": _identity,
    "index": _index,
    "copy": _copy,
    "einsum": _einsum,
    "flip": _flip,
    "slice_scatter": _slice_scatter,
    "empty": _factory("zeros"),
    "empty_like": _factory("zeros"),
    "lift_fresh_copy": _identity,
    "_to_copy": _to,
    "to": _to,
    "type_as": _identity,
    "zeros": _factory("zeros"),
    "ones": _factory("ones"),
    "full": _factory("full"),
    "zeros_like": _factory("zeros"),
    "ones_like": _factory("ones"),
    "full_like": _factory("full"),
    "scalar_tensor": _factory("full"),
    "arange": _factory("arange"),
    "linalg_vector_norm": _vector_norm,
}

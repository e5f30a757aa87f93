"""Lowers a `torch.export` program (read by `jaxvis.convert.export_archive`) to the graph IR.

Contract: `graph_from_export(archive, name=, input_size=)` returns `(Graph, variables)`. The
program's single tensor input is the image (NCHW); parameters, buffers and lifted constants come
from the archive. Both the training-IR ops `torch.export.export` records (`conv2d`, `batch_norm`,
`linear`, ...) and the core-ATen ops of `run_decompositions()` (`convolution`,
`_native_batch_norm_legit_no_training`, `addmm`, ...) are lowered, with every argument's full
semantics (`SUPPORTED_ATEN` lists them). Layer names are module paths from each node's
`nn_module_stack` (`features.10`, `layer3.1.conv2`): a module's activation is the last value its
nodes compute that is used outside it (for a module called twice, its last call), which is what
a forward hook sees. A symbolic batch stays free; symbolic height / width take `input_size`
(else an error naming the dimension). An unsupported op is one `JaxvisError` naming the op, the
module and the supported ops.

This module is long (~770 lines) because it is the one table of ATen ops and their lowerings, each a
few lines; one place keeps the supported set (`SUPPORTED_ATEN`) reviewable against the error list.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxvis.convert.export_archive import ExportArchive
from jaxvis.errors import JaxvisError
from jaxvis.models.graph.build import GraphBuilder
from jaxvis.models.graph.ir import Graph

__all__ = ["SUPPORTED_ATEN", "graph_from_export"]


class _Unset:
    pass


class _Lowering:
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


def _scalar(value):
    return value


# ---------------------------------------------------------------------------------------------
# Op lowerings: each takes (lowering, args by schema name, output names).


def _conv(L: _Lowering, a, out, transposed=None):
    x, weight, bias = a["input"], a["weight"], a.get("bias")
    transposed = bool(a.get("transposed", False)) if transposed is None else transposed
    groups = int(a.get("groups", 1))
    if L.rank(weight) != 4:
        raise L.fail(f"only 2-D convolutions are supported (weight of rank {L.rank(weight)})")
    kernel = L.b.shape(weight)[2:]
    stride = L.pair(a.get("stride"), "stride", 1)
    dilation = L.pair(a.get("dilation"), "dilation", 1)
    padding = a.get("padding", 0)
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0), (0, 0))
        elif padding == "same":
            totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
            pads = tuple((t // 2, t - t // 2) for t in totals)
        else:
            raise L.fail(f"conv padding {padding!r} is not supported")
    else:
        pads = tuple((p, p) for p in L.pair(padding, "padding", 0))
    L.b.mark_weight(weight, "conv_transpose" if transposed else "conv", groups, L.where)
    L.node("conv", [x, weight, bias], out, dict(
        stride=stride, padding=pads, dilation=dilation, groups=groups, transposed=transposed,
        output_padding=L.pair(a.get("output_padding"), "output_padding", 0)))


def _batch_norm(L, a, out):
    if a.get("training") and a.get("running_mean") is None:
        raise L.fail("batch norm without running statistics (training mode) is not supported; export model.eval()")
    L.node("batch_norm", [a["input"], a.get("weight"), a.get("bias"), a["running_mean"], a["running_var"]], out[:1],
           dict(eps=float(a.get("eps", 1e-5))))


def _instance_norm(L, a, out):
    if not a.get("use_input_stats", True):
        L.node("batch_norm", [a["input"], a.get("weight"), a.get("bias"), a["running_mean"], a["running_var"]], out[:1],
               dict(eps=float(a.get("eps", 1e-5))))
        return
    L.node("instance_norm", [a["input"], a.get("weight"), a.get("bias")], out[:1], dict(eps=float(a.get("eps", 1e-5))))


def _pool_args(L, a):
    kernel = L.pair(a["kernel_size"], "kernel_size")
    stride = a.get("stride") or kernel
    return kernel, L.pair(stride, "stride"), tuple((p, p) for p in L.pair(a.get("padding"), "padding", 0))


def _max_pool(L, a, out):
    kernel, stride, pads = _pool_args(L, a)
    L.node("max_pool", [a["self"]], out[:1], dict(kernel=kernel, stride=stride, padding=pads,
                                                  dilation=L.pair(a.get("dilation"), "dilation", 1),
                                                  ceil_mode=bool(a.get("ceil_mode", False))))


def _avg_pool(L, a, out):
    kernel, stride, pads = _pool_args(L, a)
    L.node("avg_pool", [a["self"]], out, dict(kernel=kernel, stride=stride, padding=pads,
                                              ceil_mode=bool(a.get("ceil_mode", False)),
                                              count_include_pad=bool(a.get("count_include_pad", True)),
                                              divisor_override=a.get("divisor_override")))


def _adaptive(op):
    def lower(L, a, out):
        size = a["output_size"]
        size = [size] if isinstance(size, int) else list(size)
        size = size * 2 if len(size) == 1 else size
        L.node(op, [a["self"]], out[:1], dict(output_size=tuple(size)))
    return lower


def _unary(op, **fixed):
    def lower(L, a, out):
        L.node(op, [a.get("self", a.get("input"))], out, fixed)
    return lower


def _hardtanh(L, a, out):
    lo, hi = float(a.get("min_val", -1.0)), float(a.get("max_val", 1.0))
    L.node("clip", [a["self"]], out, dict(min=lo, max=hi))


def _clamp(L, a, out, lo=_Unset, hi=_Unset):
    lo = a.get("min") if lo is _Unset else lo
    hi = a.get("max") if hi is _Unset else hi
    if isinstance(lo, str) or isinstance(hi, str):
        x = a["self"]
        if lo is not None:
            x = L.node("maximum", [x, lo], [out[0] + "__lo"])[0]
        L.node("minimum" if hi is not None else "identity", [x, hi] if hi is not None else [x], out)
        return
    L.node("clip", [a["self"]], out, dict(min=lo, max=hi))  # ints stay ints: index arithmetic clamps them


def _gelu(L, a, out):
    L.node("gelu", [a["self"]], out, dict(approximate=a.get("approximate", "none") == "tanh"))


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


def _layer_norm(L, a, out):
    x, shape = a["input"], L.ints(a["normalized_shape"], "normalized_shape")
    rank = L.rank(x)
    L.node("layer_norm", [x, a.get("weight"), a.get("bias")], out[:1],
           dict(axes=tuple(range(rank - len(shape), rank)), eps=float(a.get("eps", 1e-5))))


def _group_norm(L, a, out):
    groups = int(a.get("num_groups", a.get("group", 1)))
    L.node(
        "group_norm",
        [a["input"], a.get("weight"), a.get("bias")],
        out[:1],
        dict(groups=groups, eps=float(a.get("eps", 1e-5))),
    )


def _softmax(op):
    def lower(L, a, out):
        L.node(op, [a["self"]], out, dict(axis=int(a["dim"])))
    return lower


def _resize(mode, coordinate_mode=None, antialias=False, cubic_a=-0.75):
    def lower(L, a, out):
        x = a.get("input", a.get("self"))
        shape = L.b.shape(x)
        if len(shape) != 4:
            raise L.fail(f"only 2-D resizing is supported (input of rank {len(shape)})")
        size, scales = a.get("output_size"), a.get("scale_factors")
        if scales is None and ("scales_h" in a or "scales_w" in a):
            scales = [a.get("scales_h"), a.get("scales_w")]
            scales = None if all(s is None for s in scales) else scales
        if size is not None:
            sizes = L.pair(size, "output_size")
        else:
            if scales is None:
                raise L.fail("an upsample with neither an output size nor scale factors")
            scales = [float(s) for s in (scales if len(scales) == 2 else list(scales) * 2)]
            sizes = tuple(int(math.floor(n * s)) for n, s in zip(shape[2:], scales))
        align = bool(a.get("align_corners", False))
        coord = coordinate_mode or ("align_corners" if align else "half_pixel")
        scale_attr = tuple(float(s) if s else None for s in scales) if scales is not None else None
        L.node("resize", [x], out, dict(sizes=sizes, scales=scale_attr, mode=mode, coordinate_mode=coord,
                                       nearest_mode="floor", cubic_a=cubic_a, antialias=antialias,
                                       exclude_outside=antialias))  # torch's antialiasing drops outside taps
    return lower


def _pad(L, a, out, mode=None):
    x = a.get("self", a.get("input"))
    pad = L.ints(a.get("pad", a.get("padding")), "pad")
    rank = L.rank(x)
    pads = [(0, 0)] * rank
    for i in range(len(pad) // 2):
        pads[rank - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    mode = mode or a.get("mode", "constant")
    mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap", "constant": "constant"}.get(mode)
    if mode is None:
        raise L.fail(f"pad mode {a.get('mode')!r} is not supported")
    value = a.get("value")
    L.node("pad", [x], out, dict(pads=tuple(pads), mode=mode, value=0.0 if value is None else float(value)))


def _prelu(L, a, out):
    L.node("prelu", [a["self"], a["weight"]], out, dict(channel_axis=True))


def _pixel_shuffle(L, a, out):
    L.node("depth_to_space", [a["self"]], out, dict(blocksize=int(a["upscale_factor"]), mode="CRD"))


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


def _leaky(L, a, out):
    L.node("leaky_relu", [a["self"]], out, dict(negative_slope=float(a.get("negative_slope", 0.01))))


def _elu(L, a, out):
    L.node("elu", [a["self"]], out, dict(alpha=float(a.get("alpha", 1.0)), scale=float(a.get("scale", 1.0)),
                                         input_scale=float(a.get("input_scale", 1.0))))


def _softplus(L, a, out):
    L.node(
        "softplus", [a["self"]], out, dict(beta=float(a.get("beta", 1.0)), threshold=float(a.get("threshold", 20.0)))
    )


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


def _celu(L, a, out):
    L.node("celu", [a["self"]], out, dict(alpha=float(a.get("alpha", 1.0))))


_LOWER: dict[str, Callable] = {
    "conv2d": _conv,
    "convolution": _conv,
    "_convolution": _conv,
    "conv_transpose2d": lambda L, a, out: _conv(L, a, out, transposed=True),
    "batch_norm": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm,
    "native_batch_norm": _batch_norm,
    "_native_batch_norm_legit": _batch_norm,
    "max_pool2d": _max_pool,
    "max_pool2d_with_indices": _max_pool,
    "avg_pool2d": _avg_pool,
    "adaptive_avg_pool2d": _adaptive("adaptive_avg_pool"),
    "_adaptive_avg_pool2d": _adaptive("adaptive_avg_pool"),
    "adaptive_max_pool2d": _adaptive("adaptive_max_pool"),
    "relu": _unary("relu"),
    "relu6": _unary("relu6"),
    "hardtanh": _hardtanh,
    "leaky_relu": _leaky,
    "elu": _elu,
    "gelu": _gelu,
    "silu": _unary("silu"),
    "hardswish": _unary("hardswish"),
    "hardsigmoid": _unary("hardsigmoid", alpha=1 / 6, beta=0.5),
    "sigmoid": _unary("sigmoid"),
    "tanh": _unary("tanh"),
    "softplus": _softplus,
    "mish": _unary("mish"),
    "selu": _unary("selu"),
    "celu": _celu,
    "prelu": _prelu,
    "_prelu_kernel": _prelu,
    "exp": _unary("exp"),
    "log": _unary("log"),
    "sqrt": _unary("sqrt"),
    "rsqrt": _unary("rsqrt"),
    "abs": _unary("abs"),
    "neg": _unary("neg"),
    "reciprocal": _unary("reciprocal"),
    "erf": _unary("erf"),
    "floor": _unary("floor"),
    "ceil": _unary("ceil"),
    "round": _unary("round"),
    "sign": _unary("sign"),
    "sin": _unary("sin"),
    "cos": _unary("cos"),
    "clamp": _clamp,
    "clip": _clamp,
    "clamp_min": lambda L, a, out: _clamp(L, a, out, lo=a["min"], hi=None),
    "clamp_max": lambda L, a, out: _clamp(L, a, out, lo=None, hi=a["max"]),
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
    "layer_norm": _layer_norm,
    "native_layer_norm": _layer_norm,
    "group_norm": _group_norm,
    "native_group_norm": _group_norm,
    "instance_norm": _instance_norm,
    "softmax": _softmax("softmax"),
    "_softmax": _softmax("softmax"),
    "log_softmax": _softmax("log_softmax"),
    "_log_softmax": _softmax("log_softmax"),
    "upsample_nearest2d": _resize("nearest", "asymmetric"),
    "_upsample_nearest_exact2d": _resize("nearest", "tf_half_pixel_for_nn"),
    "upsample_bilinear2d": _resize("linear"),
    "_upsample_bilinear2d_aa": _resize("linear", antialias=True),
    "upsample_bicubic2d": _resize("cubic"),
    "_upsample_bicubic2d_aa": _resize("cubic", antialias=True, cubic_a=-0.5),
    "pad": _pad,
    "constant_pad_nd": _pad,
    "reflection_pad2d": lambda L, a, out: _pad(L, a, out, "reflect"),
    "replication_pad2d": lambda L, a, out: _pad(L, a, out, "replicate"),
    "pixel_shuffle": _pixel_shuffle,
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
    "expm1": _unary("expm1"),
    "log1p": _unary("log1p"),
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
# Checks torch.export records for its own runtime; they compute nothing.
_IGNORED = ("_assert_async", "_assert_scalar", "_assert_tensor_metadata", "sym_constrain_range",
            "sym_constrain_range_for_size", "_functional_assert_async", "_functional_sym_constrain_range")
SUPPORTED_ATEN = tuple(sorted(_LOWER))

_SYM_OPS = {"_operator.mul": operator.mul, "_operator.add": operator.add, "_operator.sub": operator.sub,
            "_operator.floordiv": operator.floordiv, "_operator.mod": operator.mod}


# ---------------------------------------------------------------------------------------------
# Arguments and module paths.


def _sym(L: _Lowering, value) -> int:
    if "as_int" in value:
        return int(value["as_int"])
    name = value.get("as_name")
    if name in L.symbols:
        return L.symbols[name]
    raise L.fail(f"a size depends on the symbolic value {name or value!r} (a dynamic shape jaxvis cannot fix)")


def _decode(L: _Lowering, arg: Mapping) -> Any:
    """One serialized `Argument` as a value name, a Python value, or a list of them."""
    (kind, value), = arg.items() if len(arg) == 1 else [next((k, v) for k, v in arg.items() if v is not None)]
    if kind == "as_none":
        return None
    if kind in ("as_tensor", "as_optional_tensor"):
        if kind == "as_optional_tensor" and "as_tensor" not in value:
            return None
        name = value["name"] if kind == "as_tensor" else value["as_tensor"]["name"]
        return L.aliases.get(name, name)
    if kind in ("as_tensors",):
        return [L.aliases.get(v["name"], v["name"]) for v in value]
    if kind == "as_optional_tensors":
        return [L.aliases.get(v["as_tensor"]["name"], v["as_tensor"]["name"]) if "as_tensor" in v else None
                for v in value]
    if kind in ("as_int", "as_float", "as_bool", "as_string", "as_ints", "as_floats", "as_bools", "as_strings",
                "as_scalar_type", "as_int_lists", "as_float_lists"):
        return value
    if kind == "as_sym_int":
        return _sym(L, value)
    if kind == "as_sym_ints":
        return [_sym(L, v) for v in value]
    if kind == "as_sym_float":
        raise L.fail("a symbolic float argument is not supported")
    if kind in ("as_memory_format", "as_layout", "as_device"):
        return None
    raise L.fail(f"argument kind {kind!r} is not supported")


def _module_paths(node: Mapping) -> list[str]:
    """The module paths of a node's nn_module_stack, outermost first (the root module excluded)."""
    stack = (node.get("metadata") or {}).get("nn_module_stack") or ""
    paths = []
    for entry in stack.split(";"):
        parts = entry.split(",")
        if len(parts) >= 2 and parts[1]:
            paths.append(parts[1])
    return paths


_SYMBOL = re.compile(r"^Symbol\('([^']+)'")


DEFAULT_SIZE = 224  # height and width of an input whose program leaves them symbolic


def _input_symbols(sizes, input_size, where: str) -> tuple[tuple[int, ...], dict[str, int]]:
    """The input's NCHW shape for one image and the values of its symbolic dimensions."""
    shape, symbols = [], {}
    dim_names = ("batch", "channels", "height", "width")
    for i, size in enumerate(sizes):
        if "as_int" in size:
            value = int(size["as_int"])
            if i == 0:
                value = 1
            elif i in (2, 3) and input_size is not None and value != input_size[i - 2]:
                raise JaxvisError(f"{where}: the program was exported for a fixed input size "
                                  f"{tuple(int(s['as_int']) for s in sizes[2:])}; it cannot run at {tuple(input_size)}")
            shape.append(value)
            continue
        expr = (size.get("as_expr") or {}).get("expr_str", "")
        match = _SYMBOL.match(expr)
        if i == 0:
            value = 1
        elif i in (2, 3):  # a symbolic height / width: the size asked for, else ImageNet's 224
            value = int(input_size[i - 2]) if input_size is not None else DEFAULT_SIZE
        else:
            raise JaxvisError(
                f"{where}: the input's {dim_names[i] if i < 4 else f'dimension {i}'} is dynamic "
                f"({match.group(1) if match else expr or size}); pass input_size=(height, width) to fix it"
            )
        if match:
            symbols[match.group(1)] = value
        shape.append(value)
    return tuple(shape), symbols


def graph_from_export(archive: ExportArchive, *, name: str = "model", input_size=None) -> tuple[Graph, dict]:
    """Lower an exported program to `(Graph, variables)` (see the module docstring)."""
    program = archive.program
    graph_json, signature = program.get("graph") or {}, program.get("signature") or {}
    tensor_values = graph_json.get("tensor_values") or {}
    builder = GraphBuilder(name, "torch.export")
    aliases: dict[str, str] = {}  # placeholder name -> state_dict name, which the variables use
    image = None
    for spec in signature.get("input_specs", []):
        (kind, body), = spec.items()
        arg = body.get("arg", {})
        arg_name = arg.get("name") or (arg.get("as_tensor") or {}).get("name")
        if kind == "user_input":
            if "as_tensor" not in arg:
                continue
            if image is not None:
                raise JaxvisError(f"{name}: the program takes several tensor inputs; jaxvis needs one image input")
            image = arg_name
        elif kind in ("parameter", "buffer", "tensor_constant", "constant_tensor"):
            source = body.get("parameter_name") or body.get("buffer_name") or body.get("tensor_constant_name")
            if source not in archive.tensors:
                raise JaxvisError(f"{name}: the archive has no stored tensor {source!r} (a pickled or missing weight)")
            aliases[arg_name] = source
            builder.add_param(source, archive.tensors[source])
        else:
            raise JaxvisError(f"{name}: program input of kind {kind!r} is not supported")
    if image is None:
        raise JaxvisError(f"{name}: the program has no tensor input")
    sizes = (tensor_values.get(image) or {}).get("sizes")
    if not sizes or len(sizes) != 4:
        raise JaxvisError(f"{name}: the input must be an NCHW image batch, got {len(sizes or ())} dimensions")
    shape, symbols = _input_symbols(sizes, input_size, name)
    builder.set_input(image, shape)
    for sym_name, sym_value in (graph_json.get("sym_int_values") or {}).items():
        expr = (sym_value.get("as_expr") or {}).get("expr_str", "")
        match = _SYMBOL.match(expr)
        if match and match.group(1) in symbols:
            symbols[sym_name] = symbols[match.group(1)]
    L = _Lowering(builder, symbols)
    L.aliases = aliases
    nodes = graph_json.get("nodes", [])
    owner: list[list[str]] = []
    for node in nodes:
        target = node["target"]
        L.where = (_module_paths(node) or [""])[-1]
        owner.append(_module_paths(node))
        outputs = []
        for out in node.get("outputs", []):
            if "as_tensor" in out:
                outputs.append(out["as_tensor"]["name"])
            elif "as_tensors" in out:
                outputs.extend(t["name"] for t in out["as_tensors"])
            elif "as_sym_int" in out:
                outputs.append(("sym", out["as_sym_int"].get("as_name")))
            else:
                outputs.append(None)
        args = {arg["name"]: _decode(L, arg["arg"]) for arg in node.get("inputs", [])}
        if target == "torch.ops.aten.sym_size.int":
            L.symbols[outputs[0][1]] = builder.shape(args["self"])[int(args["dim"])] if int(args["dim"]) else 1
            continue
        if target in _SYM_OPS:
            values = list(args.values())
            L.symbols[outputs[0][1]] = _SYM_OPS[target](*values)
            continue
        match = re.fullmatch(r"torch\.ops\.aten\.([A-Za-z0-9_]+)\.[A-Za-z0-9_]+", target)
        op = match.group(1) if match else target
        if op in _IGNORED:
            continue
        if op not in _LOWER or not match:
            raise JaxvisError(f"torch.export op {target!r} in module {L.where or '<root>'!r} is not supported; "
                              f"supported aten ops: {', '.join(SUPPORTED_ATEN)}")
        tensor_outputs = [o if isinstance(o, str) else f"__unused_{len(owner)}_{i}" for i, o in enumerate(outputs)]
        _LOWER[op](L, args, tensor_outputs)
    graph_outputs = []
    for spec in signature.get("output_specs", []):
        (kind, body), = spec.items()
        if kind == "user_output" and "as_tensor" in body.get("arg", {}):
            graph_outputs.append(body["arg"]["as_tensor"]["name"])
    layers = _module_layers(nodes, owner, builder, graph_outputs)
    return builder.finish(layers, graph_outputs)


def _module_layers(nodes, owner, builder: GraphBuilder, graph_outputs) -> list[tuple[str, str]]:
    """(module path, value) for every module: its last value used outside it, ordered by that value."""
    produced_by: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.get("outputs", []):
            if "as_tensor" in out:
                produced_by[out["as_tensor"]["name"]] = i
            elif "as_tensors" in out:
                for t in out["as_tensors"]:
                    produced_by[t["name"]] = i
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for arg in node.get("inputs", []):
            for name in _tensor_names(arg["arg"]):
                consumers.setdefault(name, []).append(i)
    members: dict[str, list[int]] = {}
    for i, paths in enumerate(owner):
        for path in paths:
            members.setdefault(path, []).append(i)
    layers = []
    for path, indices in members.items():
        inside = set(indices)
        best = None
        for i in indices:
            first = _first_tensor_output(nodes[i])
            if first is None or first not in builder.shapes:
                continue
            escapes = first in graph_outputs or any(c not in inside for c in consumers.get(first, []))
            if escapes and (best is None or i > best[0]):
                best = (i, first)
        if best is not None:
            layers.append((best[0], -len(path.split(".")), path, best[1]))
    layers.sort()
    return [(path, value) for _, _, path, value in layers]


def _first_tensor_output(node) -> str | None:
    for out in node.get("outputs", []):
        if "as_tensor" in out:
            return out["as_tensor"]["name"]
        if "as_tensors" in out and out["as_tensors"]:
            return out["as_tensors"][0]["name"]
    return None


def _tensor_names(arg: Mapping) -> list[str]:
    if "as_tensor" in arg:
        return [arg["as_tensor"]["name"]]
    if "as_tensors" in arg:
        return [t["name"] for t in arg["as_tensors"]]
    if "as_optional_tensors" in arg:
        return [t["as_tensor"]["name"] for t in arg["as_optional_tensors"] if "as_tensor" in t]
    if "as_optional_tensor" in arg and "as_tensor" in (arg["as_optional_tensor"] or {}):
        return [arg["as_optional_tensor"]["as_tensor"]["name"]]
    return []

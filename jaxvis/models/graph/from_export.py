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

The op lowerings live in `jaxvis.models.graph.aten`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from jaxvis.convert.export_archive import ExportArchive
from jaxvis.errors import JaxvisError
from jaxvis.models.graph.aten import nn as aten_nn
from jaxvis.models.graph.aten import tensor as aten_tensor
from jaxvis.models.graph.aten.lowering import Lowering
from jaxvis.models.graph.build import GraphBuilder
from jaxvis.models.graph.ir import Graph

__all__ = ["SUPPORTED_ATEN", "graph_from_export"]


# Checks torch.export records for its own runtime; they compute nothing.
_IGNORED = ("_assert_async", "_assert_scalar", "_assert_tensor_metadata", "sym_constrain_range",
            "sym_constrain_range_for_size", "_functional_assert_async", "_functional_sym_constrain_range")
_LOWER: dict[str, Callable] = {**aten_nn.LOWER, **aten_tensor.LOWER}
SUPPORTED_ATEN = tuple(sorted(_LOWER))

_SYM_OPS = {"_operator.mul": operator.mul, "_operator.add": operator.add, "_operator.sub": operator.sub,
            "_operator.floordiv": operator.floordiv, "_operator.mod": operator.mod}


# ---------------------------------------------------------------------------------------------
# Arguments and module paths.


def _sym(L: Lowering, value) -> int:
    if "as_int" in value:
        return int(value["as_int"])
    name = value.get("as_name")
    if name in L.symbols:
        return L.symbols[name]
    raise L.fail(f"a size depends on the symbolic value {name or value!r} (a dynamic shape jaxvis cannot fix)")


def _decode(L: Lowering, arg: Mapping) -> Any:
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
    L = Lowering(builder, symbols)
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

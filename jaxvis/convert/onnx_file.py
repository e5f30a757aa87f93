"""Reads an ONNX model file into plain Python data and NumPy arrays (the `onnx` package, no runtime).

Contract: `read_onnx(path)` returns an `OnnxModel`: the main graph's nodes as `OnnxNode`s (op type,
domain, name, input / output names, attributes as Python values -- tensors as NumPy arrays,
strings decoded), its initializers as NumPy arrays, its real inputs (initializers excluded) with
their dims (an int, or the symbolic name / None of a dynamic one), its outputs, and the opset of
each domain. The default domain must be opset 11-21. External tensor data is read only from files
inside the model's folder. Nothing is executed; a subgraph attribute (If / Loop / Scan) is kept
as None and the lowering refuses it. Every problem is one `WeightFileError` line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from jaxvis.errors import JaxvisError, WeightFileError

__all__ = ["MAX_OPSET", "MIN_OPSET", "OnnxModel", "OnnxNode", "read_onnx"]

MIN_OPSET, MAX_OPSET = 11, 21


class OnnxNode(NamedTuple):
    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]  # "" for an absent optional input
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any]


class OnnxModel(NamedTuple):
    name: str
    nodes: tuple[OnnxNode, ...]
    initializers: Mapping[str, np.ndarray]
    inputs: tuple[tuple[str, tuple, int], ...]  # (name, dims, elem_type)
    outputs: tuple[str, ...]
    opsets: Mapping[str, int]
    producer: str



def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__

def _fail(path: str, message: str) -> WeightFileError:
    return WeightFileError(f"{path}: {message}")


def _load_external(onnx, tensor, base_dir: str, path: str) -> None:
    from onnx import external_data_helper

    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    full = os.path.realpath(os.path.join(base_dir, location))
    if os.path.isabs(location) or not full.startswith(os.path.realpath(base_dir) + os.sep):
        raise _fail(path, f"tensor {tensor.name!r} points outside the model's folder ({location!r})")
    if not os.path.exists(full):
        raise _fail(path, f"tensor {tensor.name!r} is stored in {location!r}, which is missing")
    external_data_helper.load_external_data_for_tensor(tensor, base_dir)


def _attribute(onnx, attr, path: str):
    from onnx import helper, numpy_helper

    kind = attr.type
    if kind in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return None
    value = helper.get_attribute_value(attr)
    if kind == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(value)
    if kind == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
    return value


def _dims(value_info) -> tuple:
    shape = value_info.type.tensor_type.shape
    if not value_info.type.tensor_type.HasField("shape"):
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim)


def read_onnx(path: str) -> OnnxModel:
    """Read an ONNX file (see the module docstring). Raises `WeightFileError`."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # pragma: no cover - onnx is a dependency
        raise JaxvisError("reading .onnx files needs the onnx package: pip install onnx") from None
    if not os.path.exists(path):
        raise _fail(path, "no such file")
    if os.path.isdir(path):
        raise _fail(path, "is a directory, not an .onnx file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # noqa: BLE001 -- protobuf raises several types for bad bytes
        raise _fail(
            path,
            f"not a readable ONNX model (truncated or corrupt: {_first_line(error)})",
        ) from None
    graph = model.graph
    if not graph.node:
        raise _fail(path, "the ONNX model has no graph nodes")
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    version = opsets.get("ai.onnx")
    if version is None or not MIN_OPSET <= version <= MAX_OPSET:
        raise _fail(path, f"ONNX opset {version} is not supported (supported: {MIN_OPSET}-{MAX_OPSET}); "
                          f"re-export with opset_version between them")
    base_dir = os.path.dirname(os.path.abspath(path))
    initializers = {}
    try:
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                _load_external(onnx, tensor, base_dir, path)
            initializers[tensor.name] = np.array(numpy_helper.to_array(tensor))
        nodes = tuple(
            OnnxNode(node.op_type, node.domain or "", node.name, tuple(node.input), tuple(node.output),
                     {attr.name: _attribute(onnx, attr, path) for attr in node.attribute})
            for node in graph.node)
    except WeightFileError:
        raise
    except Exception as error:  # noqa: BLE001 -- a tensor whose bytes do not match its description
        raise _fail(
            path,
            f"a tensor of the ONNX model cannot be read ({_first_line(error)})",
        ) from None
    inputs = tuple((vi.name, _dims(vi), vi.type.tensor_type.elem_type) for vi in graph.input
                   if vi.name not in initializers)
    return OnnxModel(graph.name or "model", nodes, initializers, inputs, tuple(o.name for o in graph.output), opsets,
                     f"{model.producer_name} {model.producer_version}".strip())

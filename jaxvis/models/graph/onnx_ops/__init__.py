"""The ONNX op lowerings of the ONNX front-end (`jaxvis.models.graph.from_onnx`).

`context` (the per-node state every lowering reads and writes through), `nn` (layers and
elementwise functions), `tensor` (arithmetic, linear algebra, indexing, shapes, reductions, and the
ops folded at load time). Each op module exports `LOWER`, its part of the table
`{op_type: lowering(ctx)}`.
"""

__all__: list[str] = []

"""The ATen op lowerings of the `torch.export` front-end (`jaxvis.models.graph.from_export`).

`lowering` (the per-program state every lowering writes through), `nn` (layers and elementwise
functions), `tensor` (arithmetic, linear algebra, indexing, shapes, reductions, factories). Each
op module exports `LOWER`, its part of the table `{aten op name: lowering(L, args, outputs)}`.
"""

__all__: list[str] = []

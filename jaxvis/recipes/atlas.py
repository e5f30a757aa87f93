"""Filter atlases: every chosen unit of a layer rendered, saved per filter, gridded, described.

Contract: `render_atlas(spec, layer, units, config, out_dir)` writes, under `out_dir`:
`<layer>/filter_<i>.png` and `<layer>/filter_<i>.json` (its score) for each unit, written
atomically as each chunk finishes; `<layer>_grid.png` (labelled tiles); `<layer>/manifest.json`
(the layer's settings, versions and per-filter records); and `manifest.json`, the atlas of every
layer in `out_dir`: `{"model", "source", "versions", "layers": [<layer manifest>, ...]}`.
A filter counts as done when its JSON exists, so a rerun with the same settings skips finished
filters and an interrupted run loses at most the chunk in flight.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

import jaxvis
from jaxvis.errors import JaxvisError
from jaxvis.models.spec import ModelSpec
from jaxvis.optvis.compile_cache import CompileClock
from jaxvis.optvis.objectives import as_objective
from jaxvis.optvis.render import RenderConfig, RenderResult, check_objective, render
from jaxvis.output import files, grids
from jaxvis.recipes import distributed

__all__ = [
    "layer_dirname", "parse_units", "render_atlas", "select_layers", "settings", "unit_label",
    "write_atlas_manifest",
]


def parse_units(text: str, count: int | None = None) -> list[int]:
    """'0-63', '3,7,9', '0-7,12' or 'all' -> sorted unique indices, checked against `count`."""
    text = text.strip()
    if text == "all":
        if count is None:
            raise JaxvisError("'all' needs the layer's channel count")
        return list(range(count))
    units: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", part)
        if not match:
            raise JaxvisError(f"bad filter list {text!r}: use e.g. 0-63, 3,7,9 or all")
        if match.group(3) is not None:
            units.add(int(match.group(3)))
        else:
            low, high = int(match.group(1)), int(match.group(2))
            if high < low:
                raise JaxvisError(f"bad filter range {part!r}: the end is before the start")
            units.update(range(low, high + 1))
    if not units:
        raise JaxvisError(f"bad filter list {text!r}: no filters")
    if count is not None and max(units) >= count:
        raise JaxvisError(f"filter {max(units)} is out of range: the layer has {count} channels (0-{count - 1})")
    return sorted(units)


def select_layers(spec: ModelSpec, patterns: str) -> list[str]:
    """Layers matching comma-separated glob patterns ('features.*', 'block*_conv*'), model order."""
    import fnmatch

    chosen = []
    for pattern in filter(None, (p.strip() for p in patterns.split(","))):
        matches = [name for name in spec.layer_names if fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            raise JaxvisError(f"no layer of {spec.name} matches {pattern!r}; layers: {', '.join(spec.layer_names)}")
        chosen += [m for m in matches if m not in chosen]
    if not chosen:
        raise JaxvisError("no layer patterns given")
    return [name for name in spec.layer_names if name in chosen]


def layer_dirname(layer: str) -> str:
    """The folder of a layer's filters in an atlas."""
    return files.safe_name(layer)


def unit_label(spec: ModelSpec, layer: str, unit: int) -> str:
    """'37', or '37 box turtle' for a class of the logits layer."""
    if layer == spec.logits_layer and spec.class_names and unit < len(spec.class_names):
        return f"{unit} {spec.class_names[unit]}"
    return str(unit)


def settings(spec: ModelSpec, layer: str, config: RenderConfig) -> dict:
    """What decides the pixels: a rerun may reuse results only if this is unchanged. As JSON
    reads it back (tuples as lists), so that it compares equal to the settings file."""
    import json

    return json.loads(
        json.dumps(
            {
                "model": spec.name,
                "source": spec.source,
                "layer": layer,
                "preset": config.preset_name,
                "config": dataclasses.asdict(config),
            }
        )
    )


def _versions() -> dict:
    import flax
    import optax

    return {"jaxvis": jaxvis.__version__, "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "numpy": np.__version__, "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend()}


def render_atlas(
    spec: ModelSpec,
    layer: str,
    units: Sequence[int],
    config: RenderConfig,
    out_dir,
    *,
    progress: bool = True,
    grid_columns: int | None = None,
    grid_tile: int | None = None,
    process: tuple[int, int] = (0, 1),
    devices=None,
) -> dict:
    """Render `units` of `layer` (resuming any finished ones) and write the atlas; return the manifest.

    In a multi-process run (`process = (id, count)`, after `distributed.initialize`), every process
    calls this with the same arguments: each renders its share of the unfinished filters into the
    shared `out_dir`, and process 0 writes the grid and manifests once all are done.
    `grid_tile`: side of each tile in the grid image (default: the render size); the per-filter
    PNGs keep the render size. The manifest's `optimized` names the value the filters were optimized
    for: the layer itself, or `<layer>/pre_softmax` for a softmax layer (keras-vis's linear swap).
    """
    config.validate()
    out_dir = files.check_writable_dir(out_dir)
    units = [int(u) for u in units]
    objective = as_objective(layer)
    check_objective(spec, objective, np.asarray(units), config.octave_sizes()[0])
    layer_dir = out_dir / layer_dirname(layer)
    wanted = settings(spec, layer, config)
    settings_file = layer_dir / "settings.json"
    if settings_file.exists() and files.read_json(settings_file) != wanted:
        raise JaxvisError(
            f"{layer_dir} holds filters rendered with other settings; choose another --out folder or delete it"
        )
    process_id, process_count = process
    if process_id == 0:
        files.write_json(settings_file, wanted)
        files.remove_stale_temporaries(layer_dir)
    distributed.barrier(f"atlas-start-{layer}")

    done = lambda unit: (layer_dir / f"filter_{unit}.json").exists()
    todo = [u for u in units if not done(u)]
    mine = distributed.share(todo, process_id, process_count)
    start = time.perf_counter()
    with CompileClock() as clock:
        if mine:
            render(
                spec,
                objective,
                mine,
                config,
                progress=progress,
                on_chunk=lambda r: _save_chunk(layer_dir, r),
                devices=devices,
            )
    elapsed = time.perf_counter() - start
    distributed.barrier(f"atlas-rendered-{layer}")
    if process_id != 0:
        distributed.barrier(f"atlas-written-{layer}")
        return files.read_json(layer_dir / "manifest.json")

    filters = []
    for unit in units:
        record = files.read_json(layer_dir / f"filter_{unit}.json")
        filters.append({"index": unit, "label": unit_label(spec, layer, unit), "score": record["score"],
                        "file": f"{layer_dirname(layer)}/filter_{unit}.png"})
    tiles = np.stack([files.load_image(out_dir / f["file"], channels=1 if spec.channels == 1 else 3) for f in filters])
    if grid_tile is not None:
        tiles = grids.grid_thumbnails(tiles, grid_tile)
    grid_file = f"{layer_dirname(layer)}_grid.png"
    files.save_image(out_dir / grid_file, grids.image_grid(
        tiles, [f["label"] for f in filters], columns=grid_columns, title=f"{spec.name}  {layer}"))
    manifest = {
        **wanted,
        "optimized": spec.scored(layer),
        "layer_order": list(spec.layer_names),
        "versions": _versions(),
        "grid": grid_file,
        "rendered": len(todo),
        "resumed": len(units) - len(todo),
        "render_seconds": round(elapsed, 3),
        "compile_seconds": round(clock.compile_seconds, 3),
        "cache_load_seconds": round(clock.cache_load_seconds, 3),
        "filters": filters,
    }
    files.write_json(layer_dir / "manifest.json", manifest)
    write_atlas_manifest(out_dir)
    distributed.barrier(f"atlas-written-{layer}")
    return manifest


def write_atlas_manifest(out_dir) -> dict:
    """Merge every layer manifest under `out_dir` into `out_dir/manifest.json` (layers in the
    model's order where known, else by name)."""
    out_dir = Path(out_dir)
    layers = [files.read_json(path) for path in sorted(out_dir.glob("*/manifest.json"))]
    if not layers:
        raise JaxvisError(f"no rendered layers in {out_dir}")
    order = layers[0].get("layer_order") or []
    layers.sort(key=lambda m: (order.index(m["layer"]) if m["layer"] in order else len(order), m["layer"]))
    atlas = {
        "model": layers[0]["model"],
        "source": layers[0]["source"],
        "versions": layers[-1]["versions"],
        "layers": layers,
    }
    files.write_json(out_dir / "manifest.json", atlas)
    return atlas


def _save_chunk(layer_dir: Path, result: RenderResult) -> None:
    """Each filter's PNG, then its JSON (the 'done' marker), both atomically."""
    for unit, image, score in zip(result.units, result.images, result.scores):
        files.save_image(layer_dir / f"filter_{int(unit)}.png", image)
        files.write_json(layer_dir / f"filter_{int(unit)}.json", {"index": int(unit), "score": float(score)})

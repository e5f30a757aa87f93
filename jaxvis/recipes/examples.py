"""Dataset examples: for each unit, the image patches of a folder of photos that excite it most.

Contract: `dataset_examples(spec, layer, units, images, out_dir)` reads every JPEG/PNG under the
folder `images` (recursively, sorted by path), resizes each to one fixed size (default: the
model's input size; the whole image, aspect not kept), and runs them in fixed-size batches through
one jitted program that returns, per image and unit, the channel's spatial maximum and its
position. Per unit the `top` images with the largest maxima are kept (ties: the earlier image,
then the earlier position in row-major order). Each example is a square patch of the resized
image, `patch` pixels wide (default a third of the image), centred on the input position that
corresponds to the maximum's cell of the activation map (cell centre scaled to the input, the
window shifted to stay inside the image); a dense layer's example is the whole image. Patches go
to `<layer>/examples/filter_<unit>_<rank>.png` under `out_dir` (the folder of an atlas that
already holds the layer), each filter record of `<layer>/manifest.json` gains an `examples` list,
the layer manifest an `examples_settings` record, and the merged `manifest.json` is rewritten; every
file is written atomically.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxvis.errors import JaxvisError
from jaxvis.models.spec import ModelSpec
from jaxvis.output import files
from jaxvis.recipes.atlas import layer_dirname, write_atlas_manifest

__all__ = [
    "IMAGE_SUFFIXES", "TopExamples", "activation_map_shape", "dataset_examples", "find_top_examples", "list_images",
    "load_resized", "patch_box",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class TopExamples:
    """Per unit (columns) the best images (rows, best first): `values[k, U]` are the spatial
    maxima, `images[k, U]` indices into `paths`, `positions[k, U]` flat indices `y * map_w + x`
    into the activation map of shape `map_shape`."""

    units: np.ndarray
    values: np.ndarray
    images: np.ndarray
    positions: np.ndarray
    map_shape: tuple[int, int]
    paths: tuple[Path, ...]
    skipped: tuple[Path, ...]


def list_images(folder) -> list[Path]:
    """Every JPEG/PNG file under `folder` (recursively, hidden files left out), sorted."""
    folder = Path(folder)
    if not folder.exists():
        raise JaxvisError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise JaxvisError(f"not a folder: {folder} (give a folder of JPEG/PNG images)")
    paths = sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not paths:
        raise JaxvisError(f"no JPEG/PNG images in {folder}")
    return paths


def load_resized(path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as float32 [H, W, channels] in [0, 1], resized to `size` = (H, W) (`files.resize_image`)."""
    return files.resize_image(files.load_image(path, channels=channels), *size)


@functools.partial(jax.jit, static_argnames=("spec", "layer"))
def _spatial_max(variables, images, units, *, spec: ModelSpec, layer: str):
    """images[B,H,W,C] in [0, 1] -> (maxima[B,U], flat argmax positions[B,U]) of channels `units`."""
    acts = dataclasses.replace(spec, variables=variables).activations(images, (layer,))[layer]
    if acts.ndim == 2:  # a dense layer: one cell covering the whole image
        acts = acts[:, None, None, :]
    acts = jnp.take(acts.astype(jnp.float32), units, axis=-1)
    flat = acts.reshape(acts.shape[0], -1, acts.shape[-1])
    return flat.max(axis=1), jnp.argmax(flat, axis=1).astype(jnp.int32)


def activation_map_shape(spec: ModelSpec, layer: str, size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the layer's activation map for inputs of `size`; (1, 1) for a dense layer."""
    spec.check_layers([layer])
    shape = spec.output_shapes(size)[layer]
    return (1, 1) if len(shape) == 2 else (int(shape[1]), int(shape[2]))


def _batches(paths, size, channels, batch) -> Iterator[tuple[np.ndarray, list[int], list[int]]]:
    """(images[batch,H,W,C] zero-padded, indices of the images read, indices skipped), the next
    batch decoded on worker threads while the current one runs."""
    def load(index):
        try:
            return index, load_resized(paths[index], size, channels)
        except JaxvisError:
            return index, None

    starts = range(0, len(paths), batch)
    workers = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        submit = lambda start: [pool.submit(load, i) for i in range(start, min(start + batch, len(paths)))]
        pending = submit(starts[0]) if starts else []
        for n, _start in enumerate(starts):
            done = [future.result() for future in pending]
            pending = submit(starts[n + 1]) if n + 1 < len(starts) else []
            good = [(i, image) for i, image in done if image is not None]
            out = np.zeros((batch, *size, channels), np.float32)
            for row, (_, image) in enumerate(good):
                out[row] = image
            yield out, [i for i, _ in good], [i for i, image in done if image is None]


def find_top_examples(
    spec: ModelSpec,
    layer: str,
    units: Sequence[int],
    images,
    *,
    top: int = 6,
    size: int | tuple[int, int] | None = None,
    batch: int = 16,
    progress: bool = False,
) -> TopExamples:
    """The `top` images (and positions) of the folder `images` that excite each unit most."""
    spec.check_layers([layer])
    units = np.asarray([int(u) for u in units], np.int32)
    if units.size == 0:
        raise JaxvisError("no filters to find examples for")
    if top < 1:
        raise JaxvisError(f"--top must be at least 1, got {top}")
    if batch < 1:
        raise JaxvisError(f"batch must be at least 1, got {batch}")
    size = _size(spec, size)
    count = spec.channel_count(layer, size)
    if units.min() < 0 or units.max() >= count:
        raise JaxvisError(f"filter {int(units.max())} is out of range: {layer} has {count} channels (0-{count - 1})")
    map_shape = activation_map_shape(spec, layer, size)
    paths = list_images(images)
    batch = min(batch, len(paths))

    best_values = np.zeros((0, units.size), np.float32)
    best_images = np.zeros((0, units.size), np.int64)
    best_positions = np.zeros((0, units.size), np.int32)
    skipped: list[int] = []
    device_units = jnp.asarray(units)
    with tqdm(total=len(paths), desc=f"examples {layer}", unit="image", disable=not progress, leave=False) as bar:
        for pixels, read, bad in _batches(paths, size, spec.channels, batch):
            skipped += bad
            bar.update(len(read) + len(bad))
            if not read:
                continue
            values, positions = _spatial_max(spec.variables, jnp.asarray(pixels), device_units, spec=spec, layer=layer)
            n = len(read)
            values = np.asarray(values)[:n]
            positions = np.asarray(positions)[:n]
            index = np.broadcast_to(np.asarray(read, np.int64)[:, None], values.shape)
            # earlier images come first, so a stable sort on -value breaks ties towards them
            all_values = np.concatenate([best_values, values])
            order = np.argsort(-all_values, axis=0, kind="stable")[:top]
            best_values = np.take_along_axis(all_values, order, axis=0)
            best_images = np.take_along_axis(np.concatenate([best_images, index]), order, axis=0)
            best_positions = np.take_along_axis(np.concatenate([best_positions, positions]), order, axis=0)
    if len(skipped) == len(paths):
        raise JaxvisError(f"none of the {len(paths)} image files in {images} could be read (corrupt, or not JPEG/PNG)")
    return TopExamples(units=units, values=best_values, images=best_images, positions=best_positions,
                       map_shape=map_shape, paths=tuple(paths), skipped=tuple(paths[i] for i in skipped))


def patch_box(
    position: int, map_shape: tuple[int, int], size: tuple[int, int], patch: int
) -> tuple[int, int, int, int]:
    """(top, left, height, width) in input pixels of the patch around activation cell `position`."""
    h, w = map_shape
    height, width = size
    if (h, w) == (1, 1):
        return 0, 0, height, width
    y, x = divmod(int(position), w)
    ph, pw = min(patch, height), min(patch, width)
    cy, cx = (y + 0.5) * height / h, (x + 0.5) * width / w
    top = int(np.clip(np.floor(cy - ph / 2 + 0.5), 0, height - ph))  # half-way rounds up
    left = int(np.clip(np.floor(cx - pw / 2 + 0.5), 0, width - pw))
    return top, left, ph, pw


def dataset_examples(
    spec: ModelSpec,
    layer: str,
    units: Sequence[int] | None,
    images,
    out_dir,
    *,
    top: int = 6,
    size: int | tuple[int, int] | None = None,
    patch: int | None = None,
    batch: int = 16,
    progress: bool = True,
) -> dict:
    """Find, save and record the top examples of `units` (default: every filter of the layer's
    atlas) in the atlas at `out_dir`; return the updated layer manifest."""
    out_dir = Path(out_dir)
    layer_dir = out_dir / layer_dirname(layer)
    manifest_file = layer_dir / "manifest.json"
    if not manifest_file.is_file():
        raise JaxvisError(
            f"no atlas of layer {layer} in {out_dir}: render it first (jaxvis atlas --layer {layer} --out {out_dir})"
        )
    manifest = files.read_json(manifest_file)
    if (manifest.get("model"), manifest.get("source")) != (spec.name, spec.source):
        raise JaxvisError(f"the atlas in {out_dir} is of model {manifest.get('model')} ({manifest.get('source')}), "
                          f"not {spec.name} ({spec.source})")
    rendered = [int(f["index"]) for f in manifest["filters"]]
    units = rendered if units is None else [int(u) for u in units]
    missing = sorted(set(units) - set(rendered))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise JaxvisError(f"filters {shown} of {layer} are not in the atlas in {out_dir}; render them first")
    files.check_writable_dir(layer_dir / "examples")
    size = _size(spec, size)
    patch = max(1, round(min(size) / 3)) if patch is None else int(patch)
    if patch < 1:
        raise JaxvisError(f"patch size must be at least 1 pixel, got {patch}")

    found = find_top_examples(spec, layer, units, images, top=top, size=size, batch=batch, progress=progress)
    folder = Path(images)
    cache: dict[int, np.ndarray] = {}
    records: dict[int, list[dict]] = {}
    for column, unit in enumerate(found.units.tolist()):
        records[unit] = []
        for rank in range(found.values.shape[0]):
            index = int(found.images[rank, column])
            if index not in cache:
                cache[index] = load_resized(found.paths[index], size, spec.channels)
            y0, x0, ph, pw = patch_box(found.positions[rank, column], found.map_shape, size, patch)
            name = f"{layer_dirname(layer)}/examples/filter_{unit}_{rank}.png"
            files.save_image(out_dir / name, cache[index][y0 : y0 + ph, x0 : x0 + pw])
            y, x = divmod(int(found.positions[rank, column]), found.map_shape[1])
            records[unit].append(
                {
                    "rank": rank,
                    "file": name,
                    "image": found.paths[index].relative_to(folder).as_posix(),
                    "activation": float(found.values[rank, column]),
                    "y": y,
                    "x": x,
                    "box": [y0, x0, ph, pw],
                }
            )

    for record in manifest["filters"]:
        if int(record["index"]) in records:
            record["examples"] = records[int(record["index"])]
    manifest["examples_settings"] = {
        "images": str(folder.resolve()), "count": len(found.paths) - len(found.skipped), "skipped": len(found.skipped),
        "size": list(size), "patch": patch, "top": top, "map_shape": list(found.map_shape),
    }
    files.write_json(manifest_file, manifest)
    write_atlas_manifest(out_dir)
    _remove_stale_patches(layer_dir / "examples", records, found.values.shape[0])
    if found.skipped:
        print(f"skipped {len(found.skipped)} unreadable image file(s), e.g. {found.skipped[0]}", file=sys.stderr)
    return manifest


def _size(spec: ModelSpec, size) -> tuple[int, int]:
    if size is None:
        return tuple(int(s) for s in spec.input_shape[:2])
    h, w = (size, size) if np.ndim(size) == 0 else size
    if int(h) < 1 or int(w) < 1:
        raise JaxvisError(f"image size must be positive, got {size}")
    return int(h), int(w)


def _remove_stale_patches(folder: Path, records: dict[int, list], kept: int) -> None:
    """Patches of an earlier run with a larger --top, no longer in the manifest."""
    for unit in records:
        for path in folder.glob(f"filter_{unit}_*.png"):
            rank = path.stem.rsplit("_", 1)[-1]
            if rank.isdigit() and int(rank) >= kept:
                path.unlink(missing_ok=True)

"""Kernel weights (as the PyTorch / Keras weight-inspection posts show them): statistics, histograms and
the first layer's kernels as pictures.

Contract: `parameter_tensors(source)` flattens a model's tensors into an ordered `{name: np.ndarray}`
from a `ModelSpec` (its variables), a Flax variables tree, or a flat `{name: array}` such as a
PyTorch state_dict read by `jaxvis.convert.torch.checkpoint.load_state_dict`. Names are the
framework's dotted paths: the Flax tree `params/features.1/depthwise/kernel` is
`features.1.depthwise.kernel`; another collection keeps its name as a prefix
(`batch_stats.bn1.mean`), so BatchNorm running statistics held as variables are kept. Only
counters are skipped (the posts skip `num_batches_tracked`): tensors named `*num_batches_tracked`
and integer / boolean tensors.

`tensor_stats` gives per tensor the mean, std (ddof=1, as `np.std(..., ddof=1)` in the posts; NaN for a
single element), min and max, computed in float64 by NumPy; `save_weights_report` writes them as
`weights.csv` and `weights.json` (NaN as null), prints nothing (the CLI prints `format_table`),
draws 50-bin histograms titled with each name (`histograms="pages"`: 16 per PNG page, `"each"`:
one PNG per tensor as the posts do, `"none"`) and the first conv layer's kernels as tiles
(`first_conv.png`, as in the MNIST-CNN filter post): colour for 3 input channels, gray for 1, the per-input-channel mean
otherwise; each kernel min-max normalized on its own.

Kernel layouts: Flax kernels are HWIO, PyTorch weights OIHW; `first_conv_kernels` returns
`[O, kh, kw, I]` either way. For a model whose preprocessing feeds BGR (Keras "caffe"), the kernel's
input channels are flipped to RGB for display. The first conv is the first 4-D tensor (in the
source's order, or the model's layer order for a spec) whose input channels equal the image
channels. Note: the zoo folds BatchNorm into its convs, so a spec's kernels are the folded ones.

`stored_tensors(spec)` reads the tensors of the file a model was loaded from, as that file stores
them (seed 001's view): a PyTorch state_dict's keys (`features.0.0.weight`,
`features.0.1.running_mean`, ...) or a Keras file's weight names (`block1_conv1/kernel:0`; a
Keras 3 file stores no variable names: `<layer>/vars/<i>`); None when the model has no such file
(a random init, a converted `.jaxvis` file), whose report is the converted view.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.spec import ModelSpec
from jaxvis.output import files
from jaxvis.output.figures import new_figure, save_figure

__all__ = ["HISTOGRAMS", "TensorStats", "first_conv_kernels", "format_table", "kernel_tiles", "parameter_tensors",
           "save_weights_report", "stored_tensors", "tensor_stats"]

HISTOGRAMS = ("pages", "each", "none")
PAGE = 16  # histograms per page (4 x 4)
SKIPPED_SUFFIXES = ("num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class TensorStats:
    name: str
    shape: tuple[int, ...]
    count: int
    mean: float
    std: float  # ddof=1; NaN for one element
    min: float
    max: float

    def as_dict(self) -> dict:
        finite = lambda v: None if not math.isfinite(v) else v
        return {"name": self.name, "shape": list(self.shape), "count": self.count, "mean": finite(self.mean),
                "std": finite(self.std), "min": finite(self.min), "max": finite(self.max)}


def _skipped(name: str, array: np.ndarray) -> bool:
    return name.endswith(SKIPPED_SUFFIXES) or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating)
    )


def _flatten_tree(tree, prefix=()) -> list[tuple[tuple[str, ...], object]]:
    if isinstance(tree, Mapping):
        items = []
        for key, value in tree.items():
            items += _flatten_tree(value, prefix + (str(key),))
        return items
    return [(prefix, tree)]


def parameter_tensors(source, *, layer_order=None) -> dict[str, np.ndarray]:
    """Ordered `{dotted name: array}` of a model's tensors, counters skipped (module docstring).

    Args:
      source: a `ModelSpec`, a Flax variables tree (nested dicts), or a flat `{name: array}`.
      layer_order: layer names; top-level entries named like a layer are sorted in this order
        (default for a spec: its `layer_names`), the rest keep their place after them.
    """
    if isinstance(source, ModelSpec):
        layer_order = source.layer_names if layer_order is None else layer_order
        source = source.variables
    if not isinstance(source, Mapping):
        raise JaxvisError(
            f"cannot read tensors from a {type(source).__name__}; give a ModelSpec, a variables tree or a "
            f"{{name: array}} dict"
        )
    items = []
    for path, leaf in _flatten_tree(source):
        collection, rest = (path[0], path[1:]) if len(path) > 1 and path[0] in ("params", "batch_stats") else ("", path)
        name = ".".join(rest if collection == "params" else ((collection,) + rest if collection else rest))
        array = np.asarray(leaf)
        if _skipped(name, array):
            continue
        items.append((rest[0] if rest else name, name, array))
    if layer_order is not None:
        # Flax trees come back with sorted keys: put layers in the model's order and, within a
        # module, the bias after its kernel (as PyTorch's weight, bias); otherwise keep the order.
        rank = {layer: i for i, layer in enumerate(layer_order)}
        key = lambda item: (rank.get(item[0], len(rank)), item[1].rpartition(".")[0] if item[0] in rank else "",
                            item[0] in rank and item[1].endswith(".bias"))
        items = sorted(items, key=key)
    if not items:
        raise JaxvisError("the model holds no floating-point parameter tensors")
    return {name: array for _, name, array in items}


def stored_tensors(spec: ModelSpec) -> dict[str, np.ndarray] | None:
    """The tensors of the file `spec` was loaded from, named and shaped as stored (module docstring)."""
    import os

    path = spec.source
    if not path or not os.path.isfile(path):
        return None
    lower = path.lower()
    if lower.endswith((".h5", ".hdf5", ".keras")):
        from jaxvis.convert.keras.file import LegacyWeights, read_keras_file

        weights = read_keras_file(path).weights
        if isinstance(weights, LegacyWeights):
            return {name: array for arrays in weights.layers.values() for name, array in arrays}
        return {f"{layer or group}/vars/{i}": array for group, (layer, arrays) in weights.layers.items()
                for i, array in enumerate(arrays)}
    if lower.endswith((".pth", ".pt", ".bin", ".safetensors")):
        from jaxvis.convert.jaxvis_file import is_converted

        if lower.endswith(".safetensors") and is_converted(path):
            return None  # a .jaxvis-style file stores the converted tensors themselves
        from jaxvis.convert.torch.checkpoint import load_state_dict

        return load_state_dict(path)
    return None


def tensor_stats(tensors: Mapping[str, np.ndarray]) -> list[TensorStats]:
    """Mean, std (ddof=1), min and max of every tensor, in float64 (NumPy)."""
    stats = []
    for name, array in tensors.items():
        values = np.asarray(array, np.float64).ravel()
        if values.size == 0:
            stats.append(TensorStats(name, tuple(np.shape(array)), 0, math.nan, math.nan, math.nan, math.nan))
            continue
        std = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
        stats.append(TensorStats(name, tuple(np.shape(array)), int(values.size), float(np.mean(values)), std,
                                 float(np.min(values)), float(np.max(values))))
    return stats


def format_table(stats: list[TensorStats]) -> str:
    """The statistics as an aligned text table (one line per tensor, plus a header)."""
    width = max([len("tensor")] + [len(s.name) for s in stats])
    shape_width = max([len("shape")] + [len(str(s.shape)) for s in stats])
    lines = [f"{'tensor':{width}s}  {'shape':{shape_width}s}  {'mean':>11s}  {'std':>11s}  {'min':>11s}  {'max':>11s}"]
    for s in stats:
        lines.append(
            f"{s.name:{width}s}  {str(s.shape):{shape_width}s}  "
            f"{s.mean:11.4e}  {s.std:11.4e}  {s.min:11.4e}  {s.max:11.4e}"
        )
    return "\n".join(lines)


def _csv_bytes(stats: list[TensorStats]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "shape", "count", "mean", "std", "min", "max"])
    for s in stats:
        writer.writerow(
            [s.name, "x".join(map(str, s.shape)), s.count, repr(s.mean), repr(s.std), repr(s.min), repr(s.max)]
        )
    return buffer.getvalue().encode()


# --- kernels -----------------------------------------------------------------------------------

def first_conv_kernels(tensors: Mapping[str, np.ndarray], *, layout: str = "HWIO", in_channels: int | None = None):
    """(name, kernels [O, kh, kw, I]) of the first conv: the first 4-D tensor in `tensors`' order
    whose input channels equal `in_channels` (if given). `layout`: "HWIO" (Flax) or "OIHW" (PyTorch)."""
    if layout not in ("HWIO", "OIHW"):
        raise unknown_name("kernel layout", layout, ("HWIO", "OIHW"))
    for name, array in tensors.items():
        array = np.asarray(array)
        if array.ndim != 4:
            continue
        kernels = np.transpose(array, (3, 0, 1, 2)) if layout == "HWIO" else np.transpose(array, (0, 2, 3, 1))
        if in_channels is None or kernels.shape[3] == in_channels:
            return name, kernels
    raise JaxvisError(
        "the model has no 4-D conv kernel" + (f" with {in_channels} input channels" if in_channels else "")
    )


def kernel_tiles(kernels, *, bgr: bool = False) -> np.ndarray:
    """Kernels [O, kh, kw, I] -> display tiles [O, kh, kw, 3 or 1] in [0, 1], each min-max normalized
    on its own (colour for I=3, flipped to RGB if `bgr`; gray for I=1; else the mean over I)."""
    kernels = np.asarray(kernels, np.float64)
    if kernels.ndim != 4:
        raise JaxvisError(f"kernels must be [out, kh, kw, in], got shape {kernels.shape}")
    if kernels.shape[3] == 3:
        tiles = kernels[..., ::-1] if bgr else kernels
    elif kernels.shape[3] == 1:
        tiles = kernels
    else:
        tiles = kernels.mean(axis=3, keepdims=True)
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    high = tiles.max(axis=(1, 2, 3), keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return ((tiles - low) / span).astype(np.float32)


def kernel_figure(name: str, kernels, *, bgr: bool = False, columns: int | None = None, model: str = ""):
    """The first conv's kernels as a grid of tiles titled with their index (as in the MNIST-CNN filter post)."""
    tiles = kernel_tiles(kernels, bgr=bgr)
    count = tiles.shape[0]
    columns = columns or min(count, max(4, int(math.ceil(math.sqrt(count * 1.5)))))
    rows = int(math.ceil(count / columns))
    fig = new_figure(1.1 * columns, 1.2 * rows + 0.8)
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= count:
            ax.set_axis_off()
            continue
        tile = tiles[k]
        if tile.shape[2] == 1:
            ax.imshow(tile[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(tile, interpolation="nearest")
        ax.set_title(str(k), fontsize=8)
    kind = "RGB" if tiles.shape[3] == 3 else ("gray" if kernels.shape[3] == 1 else f"mean of {kernels.shape[3]} inputs")
    fig.suptitle(
        f"{model}  {name}  {count} kernels {kernels.shape[1]}x{kernels.shape[2]} "
        f"({kind}, each min-max normalized)".strip()
    )
    return fig


# --- histograms --------------------------------------------------------------------------------

def _histogram(ax, name: str, array: np.ndarray, stats: TensorStats, bins: int) -> None:
    values = np.asarray(array, np.float64).ravel()
    ax.hist(values, bins=bins, color="tab:blue", edgecolor="none")
    ax.set_title(name, fontsize=9)
    ax.text(0.98, 0.95, f"n={stats.count}\nmean={stats.mean:.3g}\nstd={stats.std:.3g}", transform=ax.transAxes,
            ha="right", va="top", fontsize=7, bbox=dict(boxstyle="round", facecolor="white", alpha=0.8))
    ax.tick_params(labelsize=7)


def histogram_pages(
    tensors: Mapping[str, np.ndarray],
    stats: list[TensorStats],
    *,
    bins: int = 50,
    per_page: int = PAGE,
    model: str = "",
):
    """Figures of `per_page` histograms each (4 columns), in tensor order."""
    names = list(tensors)
    pages = []
    for start in range(0, len(names), per_page):
        chunk = names[start:start + per_page]
        columns = 4
        rows = int(math.ceil(len(chunk) / columns))
        fig = new_figure(4.2 * columns, 2.9 * rows + 0.6)
        axes = fig.subplots(rows, columns, squeeze=False)
        for ax, name, s in zip(axes.flat, chunk, stats[start:start + per_page]):
            _histogram(ax, name, tensors[name], s, bins)
        for ax in list(axes.flat)[len(chunk):]:
            ax.set_axis_off()
        fig.suptitle(
            f"{model}  weight histograms ({bins} bins), "
            f"tensors {start + 1}-{start + len(chunk)} of {len(names)}".strip()
        )
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        pages.append(fig)
    return pages


def histogram_figure(name: str, array, stats: TensorStats, *, bins: int = 50):
    fig = new_figure(5.5, 3.6)
    _histogram(fig.add_subplot(), name, np.asarray(array), stats, bins)
    return fig


# --- the job -----------------------------------------------------------------------------------

def save_weights_report(
    source,
    out_dir,
    *,
    histograms: str = "pages",
    bins: int = 50,
    layout: str | None = None,
    in_channels: int | None = None,
    bgr: bool | None = None,
    model: str = "",
    view: str = "",
) -> dict:
    """Write `weights.csv`, `weights.json`, the histograms and `first_conv.png` under `out_dir`.

    Args:
      source: a `ModelSpec`, a variables tree or a flat `{name: array}` (see `parameter_tensors`).
      histograms: "pages" (`histograms_NN.png`, 16 per page), "each" (`histograms/<name>.png`) or "none".
      bins: histogram bins (the posts use 50).
      layout: kernel layout, default "HWIO" for a spec / tree, "OIHW" for a flat dict of
        PyTorch-style names (a key ending in `.weight`).
      in_channels: the image channels the first conv reads (default: the spec's; else any).
      bgr: flip kernel input channels for display (default: the spec's preprocessing order).
      view: recorded in the manifest: "stored" (a file's tensors as stored) or "converted"
        (jaxvis's variables); empty when not said.

    Returns:
      The manifest written to `weights.json`: model, the files, and `tensors` (one record per tensor).
    """
    if histograms not in HISTOGRAMS:
        raise unknown_name("histogram mode", histograms, HISTOGRAMS)
    if not isinstance(bins, int) or not 1 <= bins <= 10_000:
        raise JaxvisError(f"bins must be an integer in [1, 10000], got {bins}")
    out_dir = Path(files.check_writable_dir(out_dir))
    spec = source if isinstance(source, ModelSpec) else None
    tensors = parameter_tensors(source)
    stats = tensor_stats(tensors)
    model = model or (spec.name if spec else "")
    written = {"csv": "weights.csv", "json": "weights.json", "histograms": [], "first_conv": None}
    files.atomic_write_bytes(out_dir / "weights.csv", _csv_bytes(stats))

    if histograms == "pages":
        for number, fig in enumerate(histogram_pages(tensors, stats, bins=bins, model=model), start=1):
            name = f"histograms_{number:02d}.png"
            save_figure(fig, out_dir / name)
            written["histograms"].append(name)
    elif histograms == "each":
        for s in stats:
            name = f"histograms/{files.safe_name(s.name)}.png"
            save_figure(histogram_figure(s.name, tensors[s.name], s, bins=bins), out_dir / name)
            written["histograms"].append(name)

    if layout is None:
        layout = "OIHW" if spec is None and any(name.endswith(".weight") for name in tensors) else "HWIO"
    in_channels = in_channels if in_channels is not None else (spec.channels if spec else None)
    bgr = bgr if bgr is not None else bool(spec and spec.preprocess.bgr)
    first = None
    try:
        first = first_conv_kernels(tensors, layout=layout, in_channels=in_channels)
    except JaxvisError:
        pass  # a model without convs: no kernel picture
    if first is not None:
        name, kernels = first
        save_figure(kernel_figure(name, kernels, bgr=bgr, model=model), out_dir / "first_conv.png")
        written["first_conv"] = "first_conv.png"
    manifest = {
        "model": model,
        "source": spec.source if spec else "",
        "view": view,
        "bins": bins,
        "files": written,
        "first_conv": None
        if first is None
        else {"name": first[0], "kernels": list(first[1].shape), "layout": "[out, kh, kw, in]"},
        "tensors": [s.as_dict() for s in stats],
    }
    files.write_json(out_dir / "weights.json", manifest)
    return manifest

"""Feature maps (as the PyTorch, MNIST and Keras feature-map posts show them): what each layer of a model
computes for one image.

Contract: `feature_maps(spec, image, layers, fit=...)` takes one image `[H, W, C]` (uint8, or float
in [0, 1]), brings it to the network (`fit`: "resize" to the model's input size, "crop" as
torchvision's evaluation transform -- shorter side to input/0.875, then centre crop --, or "keep" the
image's own size), applies the model's preprocessing and returns `{layer: activation}` as float32
NumPy arrays **without the batch axis**: `[h, w, c]` for a spatial layer, `[n]` for a dense one. All
layers come from one jitted forward pass.

`save_feature_maps` writes, per layer, `<layer>.npy` (exactly that array) and `<layer>.png` (a
matplotlib figure titled with the layer name), plus `features.json` (what was written, shapes,
settings). Two kinds of grid:

* `grid="first"` (the PyTorch feature-map post): the first `count` channels (12) in rows of `columns` (4, so 3x4), one
  shared colour scale of raw activation values with a colour bar (`cmap`: viridis, or gray).
* `grid="all"` (Chollet's Keras layer-activations notebook): every channel, `columns` (16) per row, each
  channel standardized
  `(x - mean) / std * 64 + 128` and clipped to uint8 (a flat channel is 128), with a colour bar in
  standard deviations.

A dense layer is drawn as a bar chart of its units; for the logits layer the top 5 classes are named.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.spec import ModelSpec
from jaxvis.output import files
from jaxvis.output.figures import check_cmap, new_figure, save_figure

__all__ = [
    "FITS",
    "GRIDS",
    "channel_grid",
    "feature_maps",
    "prepare_image",
    "save_feature_maps",
    "standardize_channels",
    "layer_figure",
    "resolve_layers",
]

FITS = ("resize", "crop", "keep")
GRIDS = ("first", "all")
CROP_FRACTION = 0.875  # torchvision's Resize(256) + CenterCrop(224)


def as_float_image(image, channels: int) -> np.ndarray:
    """One image as float32 [H, W, channels] in [0, 1] (uint8 is divided by 255)."""
    array = np.asarray(image)
    if array.ndim == 2 and channels == 1:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != channels:
        raise JaxvisError(f"the image must have shape [height, width, {channels}], got {array.shape}")
    if min(array.shape[:2]) < 1:
        raise JaxvisError(f"the image is empty: shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise JaxvisError(f"images must be uint8 or float in [0, 1], got dtype {array.dtype}")
    pixels = array.astype(np.float32)
    if not np.isfinite(pixels).all() or pixels.min() < -1e-6 or pixels.max() > 1 + 1e-6:
        raise JaxvisError("float images must hold finite values in [0, 1]")
    return np.clip(pixels, 0.0, 1.0)


def prepare_image(spec: ModelSpec, image, *, fit: str = "resize") -> np.ndarray:
    """The image as the network will see it (before preprocessing): float32 [H, W, C] in [0, 1]."""
    if fit not in FITS:
        raise unknown_name("fit", fit, FITS)
    pixels = as_float_image(image, spec.channels)
    height, width = spec.input_shape[:2]
    if fit == "resize":
        return files.resize_image(pixels, height, width)
    if fit == "crop":
        scale = max(height, width) / CROP_FRACTION / min(pixels.shape[:2])
        h, w = max(height, int(round(pixels.shape[0] * scale))), max(width, int(round(pixels.shape[1] * scale)))
        pixels = files.resize_image(pixels, h, w)
        top, left = (h - height) // 2, (w - width) // 2
        return np.ascontiguousarray(pixels[top:top + height, left:left + width])
    return pixels


def resolve_layers(spec: ModelSpec, layers) -> tuple[str, ...]:
    """None / "all" -> every layer; a comma list or a sequence -> validated names."""
    if layers is None or (isinstance(layers, str) and layers.strip() == "all"):
        return tuple(spec.layer_names)
    if isinstance(layers, str):
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    layers = spec.check_layers(layers)
    if not layers:
        raise JaxvisError("name at least one layer (or 'all')")
    return tuple(dict.fromkeys(layers))


@jax.jit(static_argnames=("spec", "layers"))
def _forward(variables, images, *, spec: ModelSpec, layers: tuple[str, ...]):
    return spec.module.apply(variables, spec.preprocess(images), outputs=layers, relu_redirect=jnp.float32(0))


def feature_maps(spec: ModelSpec, image, layers=None, *, fit: str = "resize") -> dict[str, np.ndarray]:
    """Activations of `layers` (default: all) for one image; see the module docstring.

    Returns:
      `{layer: float32 array}` in the model's layer order, batch axis dropped: `[h, w, c]` or `[n]`.
    """
    layers = resolve_layers(spec, layers)
    pixels = prepare_image(spec, image, fit=fit)
    try:
        acts = _forward(spec.variables, jnp.asarray(pixels[None]), spec=spec, layers=layers)
    except JaxvisError:
        raise
    except ValueError as error:  # e.g. an image too small for the network's strides
        raise JaxvisError(
            f"{spec.name} cannot run on a {pixels.shape[0]}x{pixels.shape[1]} image: {str(error).splitlines()[0]}"
        ) from None
    order = [name for name in spec.layer_names if name in layers]
    return {name: np.asarray(acts[name][0], np.float32) for name in order}


def standardize_channels(act) -> np.ndarray:
    """Seed 004: each channel of [h, w, c] as `(x - mean) / std * 64 + 128`, clipped, uint8."""
    act = np.asarray(act, np.float64)
    mean = act.mean(axis=(0, 1), keepdims=True)
    std = act.std(axis=(0, 1), keepdims=True)
    z = np.where(std > 0, (act - mean) / np.where(std > 0, std, 1.0), 0.0)
    return np.clip(z * 64.0 + 128.0, 0, 255).astype(np.uint8)


def channel_grid(
    act, *, columns: int = 16, count: int | None = None, gap: int = 1, standardize: bool = False
) -> np.ndarray:
    """Channels of [h, w, c] side by side, `columns` per row: float32 [rows*(h+gap)-gap, ...] with
    NaN in the gaps and empty cells. `count` limits to the first channels; `standardize` applies
    `standardize_channels` first (values 0-255)."""
    act = np.asarray(act)
    if act.ndim != 3:
        raise JaxvisError(f"a channel grid needs a spatial activation [h, w, c], got shape {act.shape}")
    if standardize:
        act = standardize_channels(act)
    channels = act.shape[2] if count is None else min(count, act.shape[2])
    columns = max(1, min(columns, channels))
    rows = math.ceil(channels / columns)
    h, w = act.shape[:2]
    grid = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), np.nan, np.float32)
    for k in range(channels):
        r, c = divmod(k, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = act[:, :, k]
    return grid


def _title(spec_name: str, layer: str, act: np.ndarray) -> str:
    return f"{spec_name}  {layer}  {'x'.join(str(d) for d in act.shape)}"


def layer_figure(act, layer: str, *, grid: str = "first", count: int = 12, columns: int | None = None,
                 cmap: str = "viridis", model: str = "", class_names: Sequence[str] | None = None):
    """The matplotlib figure of one layer's activation (see the module docstring)."""
    check_cmap(cmap)
    act = np.asarray(act, np.float32)
    title = _title(model, layer, act).strip()
    if act.ndim == 1:
        return _vector_figure(act, title, class_names)
    if act.ndim != 3:
        raise JaxvisError(f"cannot draw an activation of shape {act.shape} for {layer}")
    if grid not in GRIDS:
        raise unknown_name("grid", grid, GRIDS)
    if grid == "first":
        columns = columns or 4
        shown = min(count, act.shape[2])
        cols = max(1, min(columns, shown))
        rows = math.ceil(shown / cols)
        vmin, vmax = float(act[:, :, :shown].min()), float(act[:, :, :shown].max())
        if vmax <= vmin:
            vmax = vmin + 1e-6
        fig = new_figure(2.4 * cols + 1.2, 2.4 * rows * act.shape[0] / act.shape[1] + 0.9)
        axes = fig.subplots(rows, cols, squeeze=False)
        image = None
        for k, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= shown:
                ax.set_axis_off()
                continue
            image = ax.imshow(act[:, :, k], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(f"channel {k}", fontsize=9)
        fig.suptitle(f"{title}: first {shown} of {act.shape[2]} channels")
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="activation")
        return fig
    columns = columns or 16
    pixels = channel_grid(act, columns=columns, standardize=True)
    aspect = pixels.shape[0] / pixels.shape[1]
    width = 16.0 if act.shape[2] >= columns else max(4.0, 16.0 * act.shape[2] / columns)
    fig = new_figure(width + 1.5, width * aspect + 1.0)
    ax = fig.add_subplot()
    colormap = _with_bad(cmap)
    image = ax.imshow(
        np.ma.masked_invalid(pixels), cmap=colormap, vmin=0, vmax=255, interpolation="nearest", aspect="equal"
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title}: all {act.shape[2]} channels, {columns} per row (row-major)")
    bar = fig.colorbar(
        image, ax=ax, shrink=min(0.8, max(0.2, 4.0 / max(1.0, width * aspect))), ticks=[0, 64, 128, 192, 255]
    )
    bar.ax.set_yticklabels(["-2", "-1", "0", "+1", "+2"])
    bar.set_label("(x - mean) / std per channel")
    return fig


def _with_bad(cmap: str):
    from matplotlib import colormaps

    return colormaps[cmap].with_extremes(bad="white")


def _vector_figure(act: np.ndarray, title: str, class_names):
    fig = new_figure(10, 3.6)
    ax = fig.add_subplot()
    ax.bar(np.arange(act.size), act, width=1.0, color="tab:blue")
    ax.set_xlim(-0.5, act.size - 0.5)
    ax.set_xlabel("unit")
    ax.set_ylabel("activation")
    ax.set_title(title)
    if class_names is not None and len(class_names) == act.size:
        top = np.argsort(act)[::-1][:5]
        lines = [f"{int(i)} {class_names[i]}: {act[i]:.2f}" for i in top]
        ax.text(0.99, 0.97, "top 5\n" + "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox=dict(boxstyle="round", facecolor="white", alpha=0.85))
        for i in top[:1]:
            ax.annotate(class_names[i], (i, act[i]), textcoords="offset points", xytext=(4, 2), fontsize=8)
    return fig


def save_feature_maps(
    spec: ModelSpec,
    image,
    out_dir,
    layers=None,
    *,
    fit: str = "resize",
    grid: str = "first",
    count: int = 12,
    columns: int | None = None,
    cmap: str = "viridis",
    source: str = "",
) -> dict:
    """Compute `feature_maps` and write `<layer>.npy`, `<layer>.png` and `features.json` under `out_dir`.

    Returns:
      The manifest written to `features.json`: model, image, fit, grid and per layer its shape and files.
    """
    if grid not in GRIDS:
        raise unknown_name("grid", grid, GRIDS)
    check_cmap(cmap)
    if not isinstance(count, int) or count < 1:
        raise JaxvisError(f"count must be a positive integer, got {count}")
    if columns is not None and (not isinstance(columns, int) or columns < 1):
        raise JaxvisError(f"columns must be a positive integer, got {columns}")
    out_dir = files.check_writable_dir(out_dir)
    pixels = prepare_image(spec, image, fit=fit)
    acts = feature_maps(spec, pixels, layers, fit="keep")
    records = []
    for layer, act in acts.items():
        stem = files.safe_name(layer)
        files.save_npy(Path(out_dir) / f"{stem}.npy", act)
        names = spec.class_names if layer == spec.logits_layer else None
        fig = layer_figure(
            act, layer, grid=grid, count=count, columns=columns, cmap=cmap, model=spec.name, class_names=names
        )
        save_figure(fig, Path(out_dir) / f"{stem}.png")
        records.append({"layer": layer, "shape": list(act.shape), "npy": f"{stem}.npy", "png": f"{stem}.png",
                        "min": float(act.min()), "max": float(act.max()), "mean": float(act.mean())})
    files.save_image(Path(out_dir) / "input.png", pixels)
    manifest = {
        "model": spec.name,
        "source": spec.source,
        "image": source,
        "fit": fit,
        "input_size": list(pixels.shape),
        "grid": grid,
        "count": count,
        "columns": columns or (4 if grid == "first" else 16),
        "cmap": cmap,
        "npy_layout": "activation of the one image, batch axis dropped: [h, w, c] (NHWC without N) or [n]",
        "layers": records,
    }
    files.write_json(Path(out_dir) / "features.json", manifest)
    return manifest

"""Results that show themselves: inline in a notebook (`_repr_png_`, `_repr_html_`) and with
matplotlib (`show()`), as the seed posts' `plt.imshow(img)`.

Contract: `picture(result)` is one RGB uint8 image [H, W, 3] of a result; `png(result)` its PNG
bytes, `html(result)` a `<figure>` holding it as a base64 `<img>` with a caption, and
`show(result, ax=None)` draws it on a matplotlib Axes (a new figure if none) and returns the Axes.
Results:
- a render result (`images[N,H,W,C]`, `units`, `scores`): the images as a grid labelled by unit;
- a dream result (`image`, `losses`): the dreamed photo (the first, for a batch);
- `FeatureMaps(maps)` (`jaxvis.recipes.features.feature_maps`'s `{layer: act}`): per spatial layer the
  first `count` channels, each standardized as seed 004 does and enlarged (nearest, by an integer
  factor) to about the largest layer's size, in rows of `columns`, layer named;
- `Atlas(out_dir)` (a `jaxvis atlas` / `render_atlas` folder): its layers' grid images;
- an image array `[H,W,C]` (float in [0, 1] or uint8), or a batch `[N,H,W,C]` as a grid.
Nothing here needs a notebook server.
"""

from __future__ import annotations

import base64
import dataclasses
import html as _html
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxvis.errors import JaxvisError
from jaxvis.output import files, grids

__all__ = ["Atlas", "FeatureMaps", "Shows", "html", "picture", "png", "show"]


class Shows:
    """`_repr_png_`, `_repr_html_` and `show()` through this module's functions: the mixin every result class
    (render, dream, feature maps, atlas) takes, so notebooks and `show()` treat them alike."""

    def _repr_png_(self) -> bytes:
        return png(self)

    def _repr_html_(self) -> str:
        return html(self)

    def show(self, **kwargs):
        """Draw the result with matplotlib (see `show`); returns the Axes."""
        return show(self, **kwargs)


@dataclasses.dataclass(frozen=True)
class FeatureMaps(Shows):
    """Feature maps `{layer: act}` (act [h, w, c], or [c] for a dense layer, which is skipped)."""

    maps: Mapping[str, np.ndarray]
    count: int = 12
    columns: int = 4
    title: str = ""



@dataclasses.dataclass(frozen=True)
class Atlas(Shows):
    """An atlas folder: its `manifest.json` and each layer's grid image."""

    out_dir: str

    @property
    def manifest(self) -> dict:
        path = Path(self.out_dir) / "manifest.json"
        if not path.is_file():
            raise JaxvisError(f"no atlas in {self.out_dir} (no manifest.json)")
        return json.loads(path.read_text())



def _caption(result) -> str:
    if isinstance(result, Atlas):
        manifest = result.manifest
        return f"{manifest['model']}: " + ", ".join(
            f"{layer['layer']} ({len(layer['filters'])} filters, preset {layer.get('preset', 'lucid')})"
            for layer in manifest["layers"]
        )
    if isinstance(result, FeatureMaps):
        return result.title or f"feature maps of {len(result.maps)} layers"
    if hasattr(result, "units") and hasattr(result, "images"):
        return f"{len(result.units)} renders; scores " + ", ".join(
            f"{float(s):.3g}" for s in np.asarray(result.scores)[:16]
        )
    if hasattr(result, "losses") and hasattr(result, "image"):
        return f"dream, {len(result.losses)} octaves"
    return ""


def picture(result) -> np.ndarray:
    """One RGB uint8 image [H, W, 3] of `result` (module docstring)."""
    if isinstance(result, Atlas):
        layer_grids = [files.load_image(Path(result.out_dir) / layer["grid"]) for layer in result.manifest["layers"]]
        return grids.image_grid(layer_grids, columns=1) if len(layer_grids) > 1 else _rgb(layer_grids[0])
    if isinstance(result, FeatureMaps):
        tiles, labels = [], []
        spatial = {
            layer: (act[0] if act.ndim == 4 else act)
            for layer, act in ((k, np.asarray(v)) for k, v in result.maps.items())
        }
        spatial = {layer: act for layer, act in spatial.items() if act.ndim == 3}
        side = max([act.shape[0] for act in spatial.values()], default=0)
        for layer, act in spatial.items():
            factor = max(1, side // act.shape[0])  # small maps enlarged (nearest) to about the largest's size
            channels = [np.kron(_standardized(act[:, :, k]), np.ones((factor, factor), np.uint8))[:, :, None]
                        for k in range(min(result.count, act.shape[2]))]
            tiles.append(grids.image_grid(channels, columns=result.columns, gap=1))
            labels.append(f"{layer}  {'x'.join(map(str, act.shape))}")
        if not tiles:
            raise JaxvisError("no spatial feature maps to show")
        return grids.image_grid(tiles, labels, columns=1)
    if hasattr(result, "units") and hasattr(result, "images"):
        return grids.image_grid(list(np.asarray(result.images)), [str(int(u)) for u in result.units])
    if hasattr(result, "losses") and hasattr(result, "image"):
        image = np.asarray(result.image)
        return _rgb(image[0] if image.ndim == 4 else image)
    array = np.asarray(result)
    if array.ndim == 4:
        return grids.image_grid(list(array))
    if array.ndim in (2, 3):
        return _rgb(array)
    raise JaxvisError(f"cannot show a {type(result).__name__}")


def _standardized(channel) -> np.ndarray:
    """Seed 004's channel picture: `(x - mean) / std * 64 + 128`, clipped, uint8 (a flat channel: 128)."""
    channel = np.asarray(channel, np.float64)
    std = channel.std()
    z = (channel - channel.mean()) / std if std > 0 else np.zeros_like(channel)
    return np.clip(z * 64.0 + 128.0, 0, 255).astype(np.uint8)


def _rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    pixels = image if image.dtype == np.uint8 else files.to_uint8(image)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif pixels.shape[2] != 3:
        pixels = files.to_uint8(np.asarray(image, np.float32).mean(axis=2, keepdims=True).repeat(3, axis=2)) \
            if image.dtype != np.uint8 else np.repeat(pixels.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    return np.ascontiguousarray(pixels)


def png(result) -> bytes:
    """PNG bytes of `picture(result)`."""
    return files.encode_png(picture(result))


def html(result) -> str:
    """A `<figure>` with `picture(result)` as a base64 PNG and a caption."""
    data = base64.b64encode(png(result)).decode("ascii")
    caption = _html.escape(_caption(result))
    return (f'<figure style="margin:0"><img src="data:image/png;base64,{data}" alt="{caption}"/>'
            f"<figcaption>{caption}</figcaption></figure>")


def show(result, *, ax=None, title: str | None = None):
    """Draw `picture(result)` with `imshow` (axes off) and return the Axes."""
    import matplotlib.pyplot as plt

    image = picture(result)
    if ax is None:
        height, width = image.shape[:2]
        scale = min(1.0, 12.0 / max(width / 100.0, 1e-6))
        _, ax = plt.subplots(figsize=(width / 100.0 * scale, height / 100.0 * scale + 0.3))
    ax.imshow(image)
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return ax

"""Class-activation maps as pictures on disk: overlays over the photo, heat maps, a summary figure.

Contract: `save_cam(spec, images, names, classes, config, out_dir)` computes `cam` for photos of
any sizes and writes, per photo and class, the overlay PNG (at the photo's size), the heat map
`.npy` ([H, W] float32 in [0, 1]) and for gradient methods the gradient picture; per photo a
matplotlib summary figure; and `cam.json` (the manifest it returns). `overlay` and
`gradient_image` make the pictures from arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from jaxvis.errors import JaxvisError
from jaxvis.models.spec import ModelSpec
from jaxvis.output import files
from jaxvis.output.figures import check_cmap, colorize, new_figure, save_figure
from jaxvis.recipes.cam.methods import GRADIENT_METHODS, CamConfig, cam, class_label, top_classes
from jaxvis.recipes.features import prepare_image

__all__ = ["gradient_image", "overlay", "save_cam"]


def overlay(image, heatmap, *, cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """The heat map [H, W] in [0, 1], coloured with `cmap`, blended over the image [H, W, C]:
    `(1 - alpha) * image + alpha * colour`, as uint8 RGB. The map is resized to the image if needed."""
    if not 0.0 <= alpha <= 1.0:
        raise JaxvisError(f"alpha must be in [0, 1], got {alpha}")
    pixels = np.asarray(image)
    pixels = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else np.asarray(pixels, np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif pixels.shape[2] != 3:
        pixels = np.repeat(pixels.mean(axis=2, keepdims=True), 3, axis=2)
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.shape != pixels.shape[:2]:
        heatmap = cv2.resize(heatmap, (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_LINEAR)
    blended = (1.0 - alpha) * np.clip(pixels, 0, 1) + alpha * colorize(heatmap, cmap)
    return files.to_uint8(blended)


def gradient_image(gradient) -> np.ndarray:
    """A gradient [H, W, C] as a picture in [0, 1]: standardized, std 0.1 around 0.5, clipped."""
    g = np.asarray(gradient, np.float32)
    std = g.std()
    return np.clip((g - g.mean()) / (std + 1e-5) * 0.1 + 0.5, 0.0, 1.0)


def save_cam(
    spec: ModelSpec,
    images: Sequence,
    names: Sequence[str],
    classes,
    config: CamConfig,
    out_dir,
    *,
    fit: str = "resize",
    cmap: str = "jet",
    alpha: float = 0.5,
) -> dict:
    """Compute `cam` for photos and write, per photo and class, the overlay PNG (at the photo's size),
    the heat map `.npy` ([H, W] float32 in [0, 1]) and for gradient methods the gradient picture;
    per photo a matplotlib summary figure; and `cam.json`.

    Args:
      images: photos [H, W, C] (uint8 or float in [0, 1]), any sizes.
      names: a file stem per photo.
      classes: class indices for every photo, or None for each photo's top-1 class.
      fit: how photos are brought to the network: "resize" (to the model's input size; maps are
        resized back onto the photo), "crop" (the maps cover the centre crop) or "keep".
    """
    config.validate()
    check_cmap(cmap)
    if not 0.0 <= alpha <= 1.0:
        raise JaxvisError(f"alpha must be in [0, 1], got {alpha}")
    if len(images) != len(names) or not images:
        raise JaxvisError("give one name per image, and at least one image")
    out_dir = Path(files.check_writable_dir(out_dir))
    prepared = [prepare_image(spec, image, fit=fit) for image in images]
    shown = (
        [
            np.asarray(image, np.float32) / 255.0
            if np.asarray(image).dtype == np.uint8
            else np.asarray(image, np.float32)
            for image in images
        ]
        if fit != "crop"
        else prepared
    )
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prepared):
        groups.setdefault(p.shape, []).append(i)
    results: dict[int, tuple] = {}
    for indices in groups.values():
        batch = np.stack([prepared[i] for i in indices])
        wanted = top_classes(spec, batch) if classes is None else classes
        result = cam(spec, batch, wanted, config)
        for row, i in enumerate(indices):
            results[i] = (result, row)

    suffix = config.method.replace("+", "p")
    records = []
    for i, name in enumerate(names):
        result, row = results[i]
        picture = shown[i]
        entries = []
        overlays = []
        for k, class_index in enumerate(result.classes[row]):
            class_index = int(class_index)
            heat = result.heatmaps[row, k]
            if heat.shape != picture.shape[:2]:
                heat = cv2.resize(heat, (picture.shape[1], picture.shape[0]), interpolation=cv2.INTER_LINEAR)
                heat = np.clip(heat, 0.0, 1.0)
            stem = f"{name}_{suffix}_class{class_index}"
            blended = overlay(picture, heat, cmap=cmap, alpha=alpha)
            files.save_image(out_dir / f"{stem}.png", blended)
            files.save_npy(out_dir / f"{stem}.npy", heat)
            entry = {
                "class": class_index,
                "label": class_label(spec, class_index),
                "logit": float(result.scores[row, k]),
                "overlay": f"{stem}.png",
                "heatmap": f"{stem}.npy",
            }
            if config.method in GRADIENT_METHODS:
                gradient = result.raw[row, k]
                if gradient.shape[:2] != picture.shape[:2]:
                    gradient = cv2.resize(
                        gradient, (picture.shape[1], picture.shape[0]), interpolation=cv2.INTER_LINEAR
                    )
                    gradient = gradient.reshape(picture.shape[0], picture.shape[1], -1)
                files.save_image(out_dir / f"{stem}_gradient.png", gradient_image(gradient))
                entry["gradient"] = f"{stem}_gradient.png"
            entries.append(entry)
            overlays.append((blended, entry))
        figure = f"{name}_{suffix}.png"
        save_figure(_summary_figure(spec, picture, overlays, config, result.layer, cmap, name), out_dir / figure)
        records.append({"image": name, "figure": figure, "classes": entries})
    manifest = {"model": spec.name, "source": spec.source, "method": config.method, "layer": results[0][0].layer,
                "backprop_modifier": config.backprop_modifier, "fit": fit, "cmap": cmap, "alpha": alpha,
                "heatmap_layout": "[H, W] float32 in [0, 1] at the photo's size", "images": records}
    files.write_json(out_dir / "cam.json", manifest)
    return manifest


def _summary_figure(spec, picture, overlays, config, layer, cmap, name):
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    columns = 1 + len(overlays)
    aspect = picture.shape[0] / picture.shape[1]
    fig = new_figure(3.6 * columns + 0.8, 3.6 * aspect + 1.1)
    axes = fig.subplots(1, columns, squeeze=False)[0]
    axes[0].imshow(
        np.clip(picture, 0, 1) if picture.shape[2] == 3 else picture[:, :, 0],
        cmap=None if picture.shape[2] == 3 else "gray",
    )
    axes[0].set_title(name, fontsize=9)
    for ax, (blended, entry) in zip(axes[1:], overlays):
        ax.imshow(blended)
        ax.set_title(f"{entry['label']}\nlogit {entry['logit']:.2f}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    where = f" at {layer}" if layer else ""
    modifier = f", backprop_modifier={config.backprop_modifier}" if config.backprop_modifier else ""
    fig.suptitle(f"{spec.name}: {config.method}{where}{modifier}")
    fig.colorbar(
        ScalarMappable(Normalize(0, 1), colormaps[cmap]), ax=list(axes), shrink=0.8, label="relative importance"
    )
    return fig

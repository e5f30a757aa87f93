"""Pictures made of images: labelled grids (atlases) and their thumbnails.

Contract: functions take float images HWC in [0, 1] (or uint8) and return uint8 HWC RGB arrays;
they draw exact pixels (a grid tile is the rendered image itself, not a resampled figure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from jaxvis import native
from jaxvis.errors import JaxvisError
from jaxvis.output.files import to_uint8

__all__ = ["grid_thumbnails", "image_grid"]


def _as_rgb_uint8(image) -> np.ndarray:
    image = np.asarray(image)
    pixels = image if image.dtype == np.uint8 else to_uint8(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif pixels.shape[2] != 3:
        pixels = np.repeat(pixels.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    return pixels


def image_grid(
    images: Sequence,
    labels: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    gap: int = 4,
    background: int = 255,
    title: str | None = None,
) -> np.ndarray:
    """Tiles in rows of `columns` (default: about square) with a caption strip under each tile."""
    tiles = [_as_rgb_uint8(image) for image in images]
    if not tiles:
        raise ValueError("image_grid needs at least one image")
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    columns = columns or int(math.ceil(math.sqrt(len(tiles))))
    rows = int(math.ceil(len(tiles) / columns))
    font_scale = max(0.3, min(0.6, width / 220))
    caption = int(22 * font_scale / 0.45) if labels is not None else 0
    header = 30 if title else 0
    canvas = np.full(
        (header + rows * (height + caption + gap) + gap, columns * (width + gap) + gap, 3), background, np.uint8
    )
    if title:
        cv2.putText(canvas, title, (gap, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i, tile in enumerate(tiles):
        row, column = divmod(i, columns)
        y = header + gap + row * (height + caption + gap)
        x = gap + column * (width + gap)
        canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        if labels is not None:
            text = _fit(labels[i], width, font_scale)
            cv2.putText(
                canvas,
                text,
                (x, y + height + caption - 6),
                cv2.FONT_HERSHEY_SIMPLEX,
                font_scale,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
    return canvas


def _fit(text: str, width: int, font_scale: float) -> str:
    """Shorten `text` with '..' until it fits in `width` pixels."""
    while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][0] > width:
        text = text[:-3] + ".." if len(text) > 3 else text[:-1]
    return text


def grid_thumbnails(tiles: np.ndarray, side: int) -> np.ndarray:
    """A batch of tiles [N, H, W, C] (uint8 or float in [0, 1]) resized to side x side, float32.

    Shrinking blurs first (Gaussian, sigma 0.5 per halving, so the bicubic sample does not alias).
    Runs in the C++ extension, which is faster on a batch of tiles than an OpenCV loop or
    `jax.image.resize` on CPU (benchmarks/bench_native.py)."""
    if side < 1:
        raise JaxvisError(f"grid tile size must be at least 1 pixel, got {side}")
    images = np.ascontiguousarray(tiles, np.float32) / (255.0 if tiles.dtype == np.uint8 else 1.0)
    if images.shape[1:3] == (side, side):
        return images
    factor = max(images.shape[1], images.shape[2]) / side
    if factor > 1.5:
        images = native.gaussian_blur(images, sigma=0.5 * np.log2(factor) + 0.25)
    return np.clip(native.resize_bicubic(images, out_h=side, out_w=side), 0.0, 1.0)

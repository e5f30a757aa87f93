"""Files: images in and out (OpenCV), JSON, `.npy`, and atomic writes.

Contract: images in memory are float32 RGB (or gray / N-channel) HWC in [0, 1]; on disk they are
8-bit PNG/JPEG. Every write goes to a temporary file in the same folder and is renamed into place,
so a reader never sees a half-written result, even if the process is killed mid-write.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

import cv2
import numpy as np

from jaxvis.errors import JaxvisError

__all__ = [
    "atomic_write_bytes", "check_writable_dir", "encode_image", "encode_png", "load_image", "read_json",
    "remove_stale_temporaries", "save_image", "save_npy", "save_picture", "to_uint8", "write_json",
]


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temporaries(folder) -> int:
    """Delete temporary files left in `folder` by a killed writer; returns how many."""
    folder = Path(folder)
    stale = list(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_json(path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_npy(path, array) -> Path:
    """Write an array as a float32 `.npy` file (no pickles) atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, np.float32), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def to_uint8(image) -> np.ndarray:
    """[0, 1] float -> uint8, rounding to nearest."""
    return np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def safe_name(name: str) -> str:
    """A layer or tensor name as a file or folder name: anything but letters, digits, `_`, `.` and
    `-` becomes `_` (dots kept: `features.3.conv.1`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def resize_image(pixels: np.ndarray, height: int, width: int, *, enlarge: str = "linear") -> np.ndarray:
    """[H, W, C] float32 resized on the host with OpenCV: area average when the pixel count
    shrinks (no aliasing), else bilinear (`enlarge="linear"`) or bicubic (`"cubic"`)."""
    if pixels.shape[:2] == (height, width):
        return pixels
    shrink = height * width < pixels.shape[0] * pixels.shape[1]
    interpolation = cv2.INTER_AREA if shrink else {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}[enlarge]
    out = cv2.resize(np.ascontiguousarray(pixels), (width, height), interpolation=interpolation)
    return out.reshape(height, width, pixels.shape[2]).astype(np.float32)


def encode_image(image, suffix: str = ".png") -> bytes:
    """An HWC image (float in [0, 1] or uint8; RGB, gray or RGBA; N channels shown by their mean) as
    the bytes of the image format `suffix` names (.png, .jpg, ...)."""
    image = np.asarray(image)
    pixels = image if image.dtype == np.uint8 else to_uint8(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, [2, 1, 0, 3]]
    elif pixels.ndim == 3:  # N-channel images are shown by their mean
        pixels = (
            to_uint8(np.asarray(image, np.float32).mean(axis=2))
            if image.dtype != np.uint8
            else pixels.mean(axis=2).astype(np.uint8)
        )
    ok, buffer = cv2.imencode(suffix, np.ascontiguousarray(pixels))
    if not ok:
        raise JaxvisError(f"could not encode an image as {suffix}")
    return buffer.tobytes()


def encode_png(image) -> bytes:
    """An HWC image (see `encode_image`) as PNG bytes."""
    return encode_image(image, ".png")


def save_image(path, image) -> Path:
    """Write an image as PNG atomically."""
    return atomic_write_bytes(path, encode_png(image))


def save_picture(path, image) -> Path:
    """Write an image atomically in the format its suffix names (.png, .jpg, ...)."""
    return atomic_write_bytes(path, encode_image(image, Path(path).suffix.lower()))


def load_image(path, *, channels: int = 3) -> np.ndarray:
    """Read an image file as float32 HWC in [0, 1], RGB (channels=3) or gray (channels=1)."""
    path = Path(path)
    if not path.is_file():
        raise JaxvisError(f"image not found: {path}")
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    pixels = cv2.imread(str(path), flag)
    if pixels is None:
        raise JaxvisError(f"cannot read {path} as an image (not a PNG/JPEG/BMP/TIFF file, or corrupt)")
    if channels == 1:
        return (pixels.astype(np.float32) / 255.0)[:, :, None]
    if channels != 3:
        raise JaxvisError(
            f"images of {channels} channels cannot be read from {path.suffix} files; models of 1 or 3 channels only"
        )
    return pixels[:, :, ::-1].astype(np.float32) / 255.0


def check_writable_dir(path) -> Path:
    """Create `path` if needed and make sure files can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", delete=True)
        probe.close()
    except OSError as error:
        raise JaxvisError(f"cannot write to output folder {path}: {error.strerror or error}") from None
    return path

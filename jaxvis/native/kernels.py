"""Host-side image kernels in C++ (`jaxvis._core`), for NumPy arrays.

Contract: every function maps float32 channels-last images, either a batch
`images[B, H, W, C]` or one image `[H, W, C]`, to a new float32 array of the same
rank (never in place, never clipped), and matches its OpenCV / NumPy counterpart
to float rounding (1e-5 on [0, 1] images). The batch is spread over all cores
with the GIL released, so these are for preparing and post-processing images on
the host (datasets, atlases, upscaled renders); inside a jitted optimization loop
use the JAX transforms instead.

Inputs are checked at entry and bad ones raise `JaxvisError` with one line: the
dtype must be float32 (no silent casts), the array C-contiguous (no silent
copies), and the last axis 1 to 4 channels. `jaxvis._core` is imported on first
use, so `import jaxvis` works without the compiled extension.

Example:
    >>> x = np.random.rand(8, 187, 187, 3).astype(np.float32)
    >>> y = resize_bicubic(gaussian_blur(x, sigma=1.0), out_h=224, out_w=224)
"""

from __future__ import annotations

import importlib
import numbers

import numpy as np

from jaxvis.errors import JaxvisError, unknown_name

__all__ = ["MODES", "box_blur", "gaussian_blur", "jitter", "resize_bicubic"]

MODES = ("wrap", "reflect", "constant")
_MAX_CHANNELS = 4
_MAX_KSIZE = 65535  # blur windows are summed directly (O(k) per pixel); far beyond any image use
_INT32 = np.iinfo(np.int32)


def _core():
    try:
        core = importlib.import_module("jaxvis._core")
    except ImportError as e:
        raise JaxvisError(
            f"the jaxvis C++ extension is not built ({' '.join(str(e).split())});"
            " run: pip install --no-build-isolation -e ."
        ) from None
    return core


def _images(images) -> tuple[np.ndarray, bool]:
    """The batch view of `images` and whether the caller passed a single image."""
    if not isinstance(images, np.ndarray):
        if not hasattr(images, "__array__"):
            raise JaxvisError(f"images must be a numpy array, got {type(images).__name__}")
        images = np.asarray(images)
    if images.dtype != np.float32:
        raise JaxvisError(f"images must be float32, got {images.dtype}; use images.astype(np.float32)")
    if images.ndim not in (3, 4):
        raise JaxvisError(f"images must be [B, H, W, C] or [H, W, C], got shape {images.shape}")
    if not images.flags.c_contiguous:
        raise JaxvisError("images must be C-contiguous; use np.ascontiguousarray(images)")
    if any(d == 0 for d in images.shape):
        raise JaxvisError(f"images must not be empty, got shape {images.shape}")
    if images.shape[-1] > _MAX_CHANNELS:
        raise JaxvisError(
            f"images must be channels-last with 1-{_MAX_CHANNELS} channels, got shape {images.shape}"
            " (channels-first? use np.moveaxis)"
        )
    single = images.ndim == 3
    return (images[None] if single else images), single


def _positive_int(value, name: str, limit: int = _INT32.max) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 < value <= limit:
        raise JaxvisError(f"{name} must be an int in [1, {limit}], got {value!r}")
    return int(value)


def _threads(num_threads) -> int:
    if (
        isinstance(num_threads, bool)
        or not isinstance(num_threads, numbers.Integral)
        or not 0 <= num_threads <= _INT32.max
    ):
        raise JaxvisError(f"num_threads must be an int >= 0 (0: all cores), got {num_threads!r}")
    return int(num_threads)


def _result(out: np.ndarray, single: bool) -> np.ndarray:
    return out[0] if single else out


def jitter(images, shifts, *, mode: str = "wrap", cval: float = 0.0, num_threads: int = 0) -> np.ndarray:
    """Translates each image by its own integer shift: `out[b, y, x] = images[b, y - dy, x - dx]`.

    The cheap, exact way to jitter a batch on the host (lucid's `jitter`, one
    offset per image), e.g. for augmenting a dataset of renders.

    Args:
      images: float32 `[B, H, W, C]` (or one `[H, W, C]` image).
      shifts: integers `[B, 2]` as `(dy, dx)` per image (`[2]` for one image);
        any size is valid, also beyond the image.
      mode: how pixels shifted in from outside are filled: `"wrap"` (periodic,
        equal to `np.roll(img, (dy, dx), axis=(0, 1))`), `"reflect"` (mirror
        without repeating the edge, as `np.pad(mode="reflect")`, reflected again
        as often as the shift needs) or `"constant"` (`cval`).
      cval: fill value for `mode="constant"`.
      num_threads: worker threads; 0 uses every available core.

    Returns:
      The shifted images, same shape as `images`.
    """
    batch, single = _images(images)
    if mode not in MODES:
        raise unknown_name("mode", mode, MODES)
    try:
        s = np.asarray(shifts)
    except Exception as e:  # noqa: BLE001 -- anything unconvertible is a user error
        msg = " ".join(str(e).split())
        raise JaxvisError(f"shifts must be an integer array [B, 2], got {type(shifts).__name__}: {msg}") from None
    if not (np.issubdtype(s.dtype, np.integer) and not np.issubdtype(s.dtype, np.bool_)):
        raise JaxvisError(f"shifts must be integers, got dtype {s.dtype}")
    want = (len(batch), 2)
    if single and s.shape == (2,):
        s = s[None]
    if s.shape != want:
        raise JaxvisError(f"shifts must have shape {list(want)} (dy, dx per image), got {list(s.shape)}")
    if s.size and (s.min() < _INT32.min or s.max() > _INT32.max):
        raise JaxvisError("shifts must fit in int32")
    try:
        cval = float(cval)
    except (TypeError, ValueError):
        raise JaxvisError(f"cval must be a number, got {cval!r}") from None
    s = np.ascontiguousarray(s, dtype=np.int32)
    return _result(_core().jitter(batch, s, mode, cval, _threads(num_threads)), single)


def box_blur(images, *, ksize_h: int, ksize_w: int, num_threads: int = 0) -> np.ndarray:
    """Mean over a `ksize_h x ksize_w` window, equal to `cv2.blur(img, (ksize_w, ksize_h))` per image.

    Anchor at `(k // 2)` as in OpenCV (so even sizes reach one pixel further up/left),
    border mirrored without repeating the edge (`BORDER_REFLECT_101`).

    Args:
      images: float32 `[B, H, W, C]` (or one `[H, W, C]` image).
      ksize_h: window height, 1 to 65535.
      ksize_w: window width, 1 to 65535.
      num_threads: worker threads; 0 uses every available core.

    Returns:
      The blurred images, same shape as `images`.
    """
    batch, single = _images(images)
    kh = _positive_int(ksize_h, "ksize_h", _MAX_KSIZE)
    kw = _positive_int(ksize_w, "ksize_w", _MAX_KSIZE)
    return _result(_core().box_blur(batch, kh, kw, _threads(num_threads)), single)


def gaussian_blur(images, *, sigma: float, ksize: int = 0, num_threads: int = 0) -> np.ndarray:
    """Separable Gaussian blur, equal to `cv2.GaussianBlur(img, (ksize, ksize), sigma)` per image.

    Border `BORDER_REFLECT_101`. With `ksize=0` the size follows OpenCV's rule for
    float images, `round(8 * sigma + 1) | 1` (a +-4 sigma window).

    Args:
      images: float32 `[B, H, W, C]` (or one `[H, W, C]` image).
      sigma: standard deviation in pixels, > 0.
      ksize: odd kernel size up to 65535, or 0 to derive it from `sigma`.
      num_threads: worker threads; 0 uses every available core.

    Returns:
      The blurred images, same shape as `images`.
    """
    batch, single = _images(images)
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not np.isfinite(sigma) or sigma <= 0:
        raise JaxvisError(f"sigma must be a positive finite number, got {sigma!r}")
    if isinstance(ksize, bool) or not isinstance(ksize, numbers.Integral) or ksize < 0 or (ksize and ksize % 2 == 0):
        raise JaxvisError(f"ksize must be 0 (from sigma) or a positive odd int, got {ksize!r}")
    size = int(ksize) or int(np.rint(8.0 * sigma + 1.0)) | 1  # OpenCV's rule for float images
    if size > _MAX_KSIZE:
        raise JaxvisError(f"gaussian kernel of {size} taps (sigma={sigma}) exceeds {_MAX_KSIZE}")
    return _result(_core().gaussian_blur(batch, float(sigma), int(ksize), _threads(num_threads)), single)


def resize_bicubic(images, *, out_h: int, out_w: int, num_threads: int = 0) -> np.ndarray:
    """Bicubic resize, equal to `cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_CUBIC)`.

    Keys kernel with a = -0.75, half-pixel centres, replicated border. Like OpenCV
    (and unlike `jax.image.resize`), shrinking does not antialias: blur first
    (e.g. `gaussian_blur`) when downscaling by a large factor.

    Args:
      images: float32 `[B, H, W, C]` (or one `[H, W, C]` image).
      out_h: output height, >= 1.
      out_w: output width, >= 1.
      num_threads: worker threads; 0 uses every available core.

    Returns:
      `[B, out_h, out_w, C]` (or `[out_h, out_w, C]`) float32 images; values may
      overshoot the input range slightly, as with any cubic kernel.
    """
    batch, single = _images(images)
    oh, ow = _positive_int(out_h, "out_h"), _positive_int(out_w, "out_w")
    return _result(_core().resize_bicubic(batch, oh, ow, _threads(num_threads)), single)

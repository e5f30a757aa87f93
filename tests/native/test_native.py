"""jaxvis.native (the C++ kernels) against OpenCV / NumPy, on random data and real photos."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from jaxvis import native
from jaxvis.errors import JaxvisError

ATOL = 1e-5
# OpenCV 5 places bicubic samples in double precision, as jaxvis does; OpenCV 4
# rounds the sample position to float32 first, which moves values by up to ~4e-5
# at coordinates in the hundreds.
RESIZE_ATOL = ATOL if int(cv2.__version__.split(".")[0]) >= 5 else 6e-5

CHANNELS = (1, 3, 4)
SIZES = ((1, 1), (1, 6), (5, 3), (17, 23), (64, 31))


def rand_images(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def per_image(fn, images):
    """fn applied to each HWC image, with the channel axis cv2 drops for C = 1 restored."""
    outs = [fn(np.ascontiguousarray(img)) for img in images]
    return np.stack([o[..., None] if o.ndim == 2 else o for o in outs])


def photos_batch(sample_photos, channels=3):
    """The two sklearn photos as a [2, 427, 640, C] float32 batch in [0, 1]."""
    x = np.stack(sample_photos)
    if channels == 1:
        return np.ascontiguousarray(x.mean(-1, keepdims=True, dtype=np.float32))
    if channels == 4:
        alpha = np.linspace(0, 1, x.shape[2], dtype=np.float32)[None, None, :, None]
        return np.ascontiguousarray(np.concatenate([x, np.broadcast_to(alpha, x.shape[:3] + (1,))], -1))
    return x


def shift_reference(img, dy, dx, mode, cval):
    """out[y, x] = img[y - dy, x - dx], border from np.roll / np.pad."""
    if mode == "wrap":
        return np.roll(img, (dy, dx), axis=(0, 1))
    h, w = img.shape[:2]
    pad = ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0))
    kw = {"mode": "reflect"} if mode == "reflect" else {"mode": "constant", "constant_values": cval}
    padded = np.pad(img, pad, **kw)
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return padded[y0 : y0 + h, x0 : x0 + w]


# ------------------------------------------------------------------ jitter


@pytest.mark.parametrize("mode", native.MODES)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
def test_jitter_matches_numpy(mode, channels, size):
    h, w = size
    x = rand_images((6, h, w, channels), seed=h * w + channels)
    # Shifts up to 3x the image size: wrap is modulo, reflect mirrors repeatedly.
    shifts = np.array([[0, 0], [1, -2], [-h, w], [3 * h + 1, -3 * w - 2], [-2 * h - 1, 2 * w + 1], [h // 2, -(w // 2)]])
    out = native.jitter(x, shifts, mode=mode, cval=0.25)
    for b, (dy, dx) in enumerate(shifts):
        np.testing.assert_array_equal(out[b], shift_reference(x[b], int(dy), int(dx), mode, 0.25), err_msg=f"{b=}")


def test_jitter_reflect_is_repeated_mirror_not_clamp():
    row = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1)  # 0 1 2 3
    out = native.jitter(row, np.array([[0, 7]]), mode="reflect")
    # Source columns -7..-4; mirrored about 0 and 3 the row reads, leftwards from
    # column 0: 0 | 1 2 3 2 1 0 1 ... so columns -7..-4 hold 1 0 1 2 (a clamp would give 0 0 0 0).
    np.testing.assert_array_equal(out.ravel(), [1, 0, 1, 2])


@pytest.mark.parametrize("mode", native.MODES)
def test_jitter_photos(sample_photos, mode):
    x = photos_batch(sample_photos)
    shifts = np.array([[17, -40], [-500, 901]], np.int64)
    out = native.jitter(x, shifts, mode=mode, cval=-1.0)
    for b, (dy, dx) in enumerate(shifts):
        np.testing.assert_array_equal(out[b], shift_reference(x[b], int(dy), int(dx), mode, -1.0))


# ------------------------------------------------------------------ box blur


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("ksize", [(3, 3), (1, 5), (4, 2), (7, 9), (2, 1), (31, 31)])
def test_box_blur_matches_cv2(channels, size, ksize):
    kh, kw = ksize
    x = rand_images((3, *size, channels), seed=kh + 10 * kw)
    out = native.box_blur(x, ksize_h=kh, ksize_w=kw)
    ref = per_image(lambda img: cv2.blur(img, (kw, kh)), x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("ksize", [(3, 3), (6, 5)])
def test_box_blur_photos(sample_photos, channels, ksize):
    x = photos_batch(sample_photos, channels)
    out = native.box_blur(x, ksize_h=ksize[0], ksize_w=ksize[1])
    ref = per_image(lambda img: cv2.blur(img, (ksize[1], ksize[0])), x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)


# ------------------------------------------------------------------ gaussian blur


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sigma,ksize", [(1.0, 0), (0.3, 0), (0.8, 0), (2.6, 0), (1.0, 3), (3.0, 5), (0.5, 11)])
def test_gaussian_blur_matches_cv2(channels, size, sigma, ksize):
    x = rand_images((3, *size, channels), seed=int(sigma * 10) + ksize)
    out = native.gaussian_blur(x, sigma=sigma, ksize=ksize)
    ref = per_image(lambda img: cv2.GaussianBlur(img, (ksize, ksize), sigma), x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.0, 1.2, 2.0, 3.0])
def test_gaussian_ksize_zero_follows_opencv_rule(sigma):
    # A single bright pixel spreads over exactly the kernel's support.
    x = np.zeros((1, 61, 61, 1), np.float32)
    x[0, 30, 30, 0] = 1.0
    support = np.count_nonzero(native.gaussian_blur(x, sigma=sigma)[0, 30, :, 0])
    assert support == int(np.rint(8 * sigma + 1)) | 1


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_gaussian_blur_photos(sample_photos, channels, sigma):
    x = photos_batch(sample_photos, channels)
    out = native.gaussian_blur(x, sigma=sigma)
    ref = per_image(lambda img: cv2.GaussianBlur(img, (0, 0), sigma), x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)


# ------------------------------------------------------------------ bicubic resize


def resize_sizes(h, w):
    return [(1, 1), (3, 5), (2 * h + 1, 3 * w), (max(1, h // 2), max(1, w // 3)), (37, 29), (h, w)]


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("size", SIZES)
def test_resize_bicubic_matches_cv2(channels, size):
    x = rand_images((3, *size, channels), seed=size[0] + channels)
    for oh, ow in resize_sizes(*size):
        out = native.resize_bicubic(x, out_h=oh, out_w=ow)
        assert out.shape == (3, oh, ow, channels)
        ref = per_image(lambda img, ow=ow, oh=oh: cv2.resize(img, (ow, oh), interpolation=cv2.INTER_CUBIC), x)
        np.testing.assert_allclose(out, ref, rtol=0, atol=RESIZE_ATOL, err_msg=f"{size} -> {(oh, ow)}")


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("out_size", [(224, 224), (328, 492), (555, 832), (100, 999)])
def test_resize_bicubic_photos(sample_photos, channels, out_size):
    x = photos_batch(sample_photos, channels)
    oh, ow = out_size
    out = native.resize_bicubic(x, out_h=oh, out_w=ow)
    ref = per_image(lambda img, ow=ow, oh=oh: cv2.resize(img, (ow, oh), interpolation=cv2.INTER_CUBIC), x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=RESIZE_ATOL)


def test_resize_bicubic_does_not_antialias():
    # Like OpenCV: shrinking 3x samples source pixels 1, 4, 7, ... exactly (the
    # cubic weights there are 0, 1, 0, 0), so a 1-pixel checkerboard stays a full-
    # contrast checkerboard instead of averaging towards 0.5.
    x = (np.indices((63, 63)).sum(0) % 2).astype(np.float32)[None, ..., None]
    out = native.resize_bicubic(x, out_h=21, out_w=21)
    np.testing.assert_array_equal(out, x[:, 1::3, 1::3])


# ------------------------------------------------------------------ batching, threads, layout


def all_kernels():
    shifts = np.array([[3, -5], [-40, 7], [0, 0], [11, 200], [-1, 1]])
    return {
        "jitter": lambda x, **kw: native.jitter(
            x, shifts[: len(x)] if np.ndim(x) == 4 else shifts[0], mode="reflect", **kw
        ),
        "box_blur": lambda x, **kw: native.box_blur(x, ksize_h=5, ksize_w=4, **kw),
        "gaussian_blur": lambda x, **kw: native.gaussian_blur(x, sigma=1.5, **kw),
        "resize_up": lambda x, **kw: native.resize_bicubic(x, out_h=301, out_w=97, **kw),
        "resize_down": lambda x, **kw: native.resize_bicubic(x, out_h=51, out_w=33, **kw),
    }


def per_image_shifts(name, fn, x):
    """The same kernel called image by image (HWC), with each image's own shift."""
    if name != "jitter":
        return np.stack([fn(img[None])[0] for img in x])
    shifts = np.array([[3, -5], [-40, 7], [0, 0], [11, 200], [-1, 1]])
    return np.stack([native.jitter(x[b], shifts[b], mode="reflect") for b in range(len(x))])


@pytest.mark.parametrize("name", list(all_kernels()))
def test_batch_equals_per_image(name):
    fn = all_kernels()[name]
    x = rand_images((5, 123, 77, 3), seed=7)
    np.testing.assert_array_equal(fn(x), per_image_shifts(name, fn, x))


@pytest.mark.parametrize("name", list(all_kernels()))
@pytest.mark.parametrize("batch", [1, 3])
def test_thread_count_does_not_change_results(sample_photos, name, batch):
    # One photo split by rows over 7 workers (halo rows where they meet) must be
    # bit-identical to one worker doing everything.
    fn = all_kernels()[name]
    x = np.ascontiguousarray(np.stack((sample_photos * 2)[:batch]))
    one = fn(x, num_threads=1)
    np.testing.assert_array_equal(fn(x, num_threads=7), one)
    np.testing.assert_array_equal(fn(x), one)


@pytest.mark.parametrize("name", list(all_kernels()))
def test_single_image_in_single_image_out_and_input_untouched(name):
    fn = all_kernels()[name]
    x = rand_images((1, 40, 50, 4), seed=3)
    before = x.copy()
    batched = fn(x)
    single = fn(x[0])
    assert single.ndim == 3 and single.dtype == np.float32
    np.testing.assert_array_equal(single, batched[0])
    np.testing.assert_array_equal(x, before)


# ------------------------------------------------------------------ bad input


GOOD = rand_images((2, 8, 9, 3))

BAD_IMAGES = {
    "float64": GOOD.astype(np.float64),
    "uint8": (GOOD * 255).astype(np.uint8),
    "channels-first single image": rand_images((3, 16, 16)),
    "channels-first batch": rand_images((2, 3, 16, 16)),
    "2-D": GOOD[0, :, :, 0].copy(),
    "5-D": GOOD[None],
    "non-contiguous": GOOD[:, ::2],
    "fortran order": np.asfortranarray(GOOD),
    "empty batch": GOOD[:0],
    "list": GOOD.tolist(),
}


@pytest.mark.parametrize("name", list(all_kernels()))
@pytest.mark.parametrize("bad", list(BAD_IMAGES))
def test_bad_images_raise_jaxvis_error(name, bad):
    with pytest.raises(JaxvisError) as info:
        all_kernels()[name](BAD_IMAGES[bad])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: native.jitter(GOOD, [[1, 2]]), "shape"),
        (lambda: native.jitter(GOOD, np.zeros((2, 3), int)), "shape"),
        (lambda: native.jitter(GOOD, np.zeros((2,), int)), "shape"),
        (lambda: native.jitter(GOOD, np.zeros((2, 2), np.float32)), "integers"),
        (lambda: native.jitter(GOOD, np.zeros((2, 2), bool)), "integers"),
        (lambda: native.jitter(GOOD, np.full((2, 2), 2**40)), "int32"),
        (lambda: native.jitter(GOOD, np.zeros((2, 2), int), mode="mirror"), "unknown mode"),
        (lambda: native.jitter(GOOD, np.zeros((2, 2), int), mode="Wrap"), "unknown mode"),
        (lambda: native.jitter(GOOD, np.zeros((2, 2), int), cval="x"), "cval"),
        (lambda: native.box_blur(GOOD, ksize_h=0, ksize_w=3), "ksize_h"),
        (lambda: native.box_blur(GOOD, ksize_h=3, ksize_w=-1), "ksize_w"),
        (lambda: native.box_blur(GOOD, ksize_h=3.0, ksize_w=3), "ksize_h"),
        (lambda: native.box_blur(GOOD, ksize_h=True, ksize_w=3), "ksize_h"),
        (lambda: native.box_blur(GOOD, ksize_h=10**6, ksize_w=3), "ksize_h"),
        (lambda: native.gaussian_blur(GOOD, sigma=0.0), "sigma"),
        (lambda: native.gaussian_blur(GOOD, sigma=float("nan")), "sigma"),
        (lambda: native.gaussian_blur(GOOD, sigma=1.0, ksize=4), "odd"),
        (lambda: native.gaussian_blur(GOOD, sigma=1.0, ksize=-3), "odd"),
        (lambda: native.gaussian_blur(GOOD, sigma=1e6), "exceeds"),
        (lambda: native.resize_bicubic(GOOD, out_h=0, out_w=5), "out_h"),
        (lambda: native.resize_bicubic(GOOD, out_h=5, out_w=2.5), "out_w"),
        (lambda: native.resize_bicubic(GOOD, out_h=5, out_w=5, num_threads=-1), "num_threads"),
    ],
)
def test_bad_options_raise_jaxvis_error(call, match):
    with pytest.raises(JaxvisError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        native.box_blur(GOOD, 3, 3)  # type: ignore[misc]
    with pytest.raises(TypeError):
        native.resize_bicubic(GOOD, 4, 4)  # type: ignore[misc]


def test_missing_extension_is_a_jaxvis_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "jaxvis._core", None)  # makes `from jaxvis import _core` fail
    with pytest.raises(JaxvisError, match="not built"):
        native.box_blur(GOOD, ksize_h=3, ksize_w=3)


def test_baseline_loops_match_too():
    # The filters pick AVX2+FMA loops at load time where the CPU has them; the
    # baseline x86-64 loops (forced by this variable) must agree with OpenCV as well.
    code = """if True:
        import cv2, numpy as np
        from jaxvis import native
        x = np.random.default_rng(0).random((3, 37, 41, 3), dtype=np.float32)
        for out, ref in [
            (native.gaussian_blur(x, sigma=1.3), [cv2.GaussianBlur(i, (0, 0), 1.3) for i in x]),
            (native.box_blur(x, ksize_h=4, ksize_w=5), [cv2.blur(i, (5, 4)) for i in x]),
            (native.resize_bicubic(x, out_h=50, out_w=20),
             [cv2.resize(i, (20, 50), interpolation=cv2.INTER_CUBIC) for i in x]),
        ]:
            np.testing.assert_allclose(out, np.stack(ref), rtol=0, atol=1e-5)
    """
    env = {**os.environ, "JAXVIS_NATIVE_NO_AVX2": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_import_jaxvis_does_not_load_the_extension():
    code = "import sys, jaxvis, jaxvis.native; assert 'jaxvis._core' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

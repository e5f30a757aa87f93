"""Transforms: match NumPy/OpenCV references, and agree eager / under jit / under vmap."""

import custom_call_support
import cv2
import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.optvis import transforms as T

IMAGE = np.random.default_rng(0).random((20, 26, 3), dtype=np.float32)


@pytest.mark.parametrize("dy,dx", [(0, 0), (3, -5), (-7, 11), (19, 25)])
def test_shift_wrap_is_roll(dy, dx):
    np.testing.assert_array_equal(
        T.shift(jnp.asarray(IMAGE), dy, dx, mode="wrap"), np.roll(IMAGE, (dy, dx), axis=(0, 1))
    )


@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("constant", "constant")])
@pytest.mark.parametrize("dy,dx", [(3, -5), (-7, 4), (0, 9)])
def test_shift_reflect_and_constant_match_numpy_padding(mode, np_mode, dy, dx):
    pad = 12
    kwargs = {"constant_values": 0.5} if np_mode == "constant" else {}
    padded = np.pad(IMAGE, ((pad, pad), (pad, pad), (0, 0)), mode=np_mode, **kwargs)
    expected = padded[pad - dy : pad - dy + 20, pad - dx : pad - dx + 26]
    np.testing.assert_allclose(T.shift(jnp.asarray(IMAGE), dy, dx, mode=mode, bound=pad), expected)


def test_blur_matches_opencv_with_the_same_kernel():
    kernel = np.asarray(T.gaussian_kernel(1.0))
    expected = cv2.sepFilter2D(IMAGE, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(T.blur(1.0)(None, jnp.asarray(IMAGE)), expected, atol=1e-6)


def test_affine_identity_and_quarter_turn():
    square = jnp.asarray(IMAGE[:20, :20])
    np.testing.assert_allclose(T.affine(square), square, atol=1e-6)
    np.testing.assert_allclose(T.affine(square, angle_degrees=90.0), np.rot90(np.asarray(square), k=1), atol=1e-5)


def test_affine_zoom_keeps_centre_and_size():
    image = np.zeros((21, 21, 1), np.float32)
    image[10, 10] = 1.0
    zoomed = np.asarray(T.affine(jnp.asarray(image), scale=1.1))
    assert zoomed.shape == image.shape and np.unravel_index(zoomed.argmax(), zoomed.shape)[:2] == (10, 10)


@pytest.mark.parametrize("name", list(T.NAMED))
def test_eager_jit_vmap_agree(name):
    transform = T.NAMED[name]
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    images = jax.random.uniform(jax.random.PRNGKey(4), (4, 32, 32, 3))
    eager = jnp.stack([transform(k, im) for k, im in zip(keys, images)])
    jitted = jnp.stack([fast_compile.jit(transform)(k, im) for k, im in zip(keys, images)])
    vmapped = fast_compile.jit(lambda k, x: T.apply_batch(transform, k, x))(keys, images)
    np.testing.assert_allclose(jitted, eager, atol=1e-5)
    np.testing.assert_allclose(vmapped, eager, atol=1e-5)
    assert vmapped.shape == images.shape


def test_each_item_gets_its_own_draw():
    images = jnp.broadcast_to(jax.random.uniform(jax.random.PRNGKey(5), (1, 32, 32, 3)), (4, 32, 32, 3))
    keys = jax.random.split(jax.random.PRNGKey(6), 4)
    out = fast_compile.jit(lambda k, x: T.apply_batch(T.STANDARD, k, x))(keys, images)
    assert len({np.asarray(o).tobytes() for o in out}) == 4


def test_pad_and_compose():
    image = jnp.asarray(IMAGE)
    out = T.compose(T.pad(4), T.jitter(2))(jax.random.PRNGKey(0), image)
    assert out.shape == (28, 34, 3)
    with pytest.raises(ValueError, match="one image"):
        T.jitter(2)(jax.random.PRNGKey(0), image[None])


@pytest.fixture(params=["native", "jax"])
def warp_impl(request, monkeypatch):
    """Run a test with the C++ custom call (CPU, when built) and with the pure-JAX gathers (the GPU path)."""
    if request.param == "native":
        custom_call_support.require("warp")
    else:
        monkeypatch.setattr(T, "_use_native_warp", lambda image: False)
    return request.param


@pytest.mark.parametrize("scale,angle,dy,dx", [(1.0, 0.0, 0.0, 0.0), (0.9, 10.0, 3.0, -5.0), (1.1, -7.0, -7.0, 11.0)])
def test_warp_matches_map_coordinates_in_value_and_gradient(scale, angle, dy, dx, warp_impl):
    """`warp` and its scatter-free gradient equal jax.scipy's map_coordinates and its autodiff (a scatter)."""
    from jax.scipy import ndimage

    image = jnp.asarray(IMAGE)
    c = jnp.float32(np.cos(np.deg2rad(angle)) / scale)
    s = jnp.float32(np.sin(np.deg2rad(angle)) / scale)
    cy, cx = 9.5, 12.5
    yy, xx = jnp.meshgrid(jnp.arange(20.0) - dy - cy, jnp.arange(26.0) - dx - cx, indexing="ij")
    src_y, src_x = c * yy + s * xx + cy, -s * yy + c * xx + cx

    def reference(x):
        sample = lambda plane: ndimage.map_coordinates(plane, [src_y, src_x], order=1, mode="constant", cval=0.5)
        return jax.vmap(sample, in_axes=2, out_axes=2)(x)

    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal((20, 26, 3)), jnp.float32)
    np.testing.assert_allclose(T.warp(image, c, s, dy, dx), reference(image), atol=2e-5)
    got = jax.grad(lambda x: jnp.sum(T.warp(x, c, s, dy, dx) * cotangent))(image)
    want = jax.grad(lambda x: jnp.sum(reference(x) * cotangent))(image)
    np.testing.assert_allclose(got, want, atol=2e-5)
    vmapped = jax.vmap(jax.grad(lambda x: jnp.sum(T.warp(x, c, s, dy, dx) * cotangent)))(jnp.stack([image, image]))
    np.testing.assert_allclose(vmapped[1], want, atol=2e-5)


# The C++ unrolls 3 and 1 channels (others take its generic loop) and computes samples in blocks
# of 64 pixels of a row (150 = 2 full blocks and a partial one).
@pytest.mark.parametrize("channels,height,width", [(3, 20, 26), (1, 20, 26), (2, 20, 26), (3, 17, 150), (2, 9, 150)])
def test_native_and_jax_warps_agree_under_jit_and_nested_vmap(monkeypatch, channels, height, width):
    custom_call_support.require("warp")
    rng = np.random.default_rng(2)
    images = jnp.asarray(rng.uniform(size=(2, 3, height, width, channels)), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 6).reshape(2, 3, -1)
    cotangent = jnp.asarray(rng.standard_normal(images.shape), jnp.float32)

    def value_and_grad(images):
        loss = lambda x: jnp.sum(jax.vmap(jax.vmap(T.STANDARD))(keys, x) * cotangent)
        return fast_compile.jit(jax.value_and_grad(loss))(images)

    native = value_and_grad(images)
    summed = jax.value_and_grad(lambda x: jnp.sum(jax.vmap(jax.vmap(T.STANDARD))(keys, x)))
    hlo = fast_compile.jit(summed).lower(images).as_text()
    assert "jaxvis_warp_forward" in hlo and "jaxvis_warp_backward" in hlo
    monkeypatch.setattr(T, "_use_native_warp", lambda image: False)
    pure = value_and_grad(images)
    # Sample positions are rounded at the scale of the image (an ulp of 150 is 1.5e-5) and XLA may
    # contract a multiply-add the C++ rounds twice, so bilinear weights differ by ~size * 1e-7.
    tolerance = 1e-5 + 2e-7 * max(height, width)
    np.testing.assert_allclose(native[0], pure[0], rtol=tolerance)
    np.testing.assert_allclose(native[1], pure[1], atol=tolerance)


@pytest.mark.parametrize("channels", [3, 1])
def test_native_warp_reaches_the_last_pixel_exactly(monkeypatch, channels):
    """A half-pixel shift samples every output pixel between four inside pixels, the image's last
    pixel included, where the C++ RGB path (whole pixels as 4-lane registers) hands over to its
    scalar loop: values and gradients still match the JAX warp."""
    custom_call_support.require("warp")
    rng = np.random.default_rng(5)
    images = jnp.asarray(rng.uniform(size=(2, 9, 11, channels)), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal(images.shape), jnp.float32)
    shift = jax.vmap(lambda image: T.warp(image, jnp.float32(1.0), jnp.float32(0.0), -0.5, -0.5))

    def value_and_grad(images):
        loss_and_grad = fast_compile.jit(jax.value_and_grad(lambda x: jnp.sum(shift(x) * cotangent)))
        return loss_and_grad(images), fast_compile.jit(shift)(images)

    (native_loss, native_grad), native = value_and_grad(images)
    monkeypatch.setattr(T, "_use_native_warp", lambda image: False)
    (pure_loss, pure_grad), pure = value_and_grad(images)
    np.testing.assert_allclose(native, pure, atol=1e-6)
    np.testing.assert_allclose(native_grad, pure_grad, atol=1e-6)
    # the last inside sample: the mean of the image's four bottom-right pixels
    np.testing.assert_allclose(native[:, -2, -2], np.asarray(images)[:, -2:, -2:].mean(axis=(1, 2)), atol=1e-6)


def test_native_warps_running_concurrently_share_the_thread_pool():
    """The C++ calls run their helpers as tasks on XLA's intra-op pool (csrc/parallel.hpp): several
    calls that XLA may run at the same time, each waiting for its own helpers, must all finish (no
    deadlock) and give the results they give one at a time."""
    custom_call_support.require("warp")
    rng = np.random.default_rng(3)
    batches = [jnp.asarray(rng.uniform(size=(8, 64, 64, 3)), jnp.float32) for _ in range(6)]
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    one = fast_compile.jit(lambda x: T.apply_batch(T.STANDARD, keys, x))
    together = fast_compile.jit(lambda xs: [T.apply_batch(T.STANDARD, keys, x) for x in xs])  # independent calls
    want = [np.asarray(one(x)) for x in batches]
    for _ in range(20):
        for got, expected in zip(together(batches), want):
            np.testing.assert_array_equal(got, expected)


def test_fused_standard_equals_its_stages_away_from_the_borders():
    image = jax.random.uniform(jax.random.PRNGKey(7), (64, 64, 3))
    scales, angles = [0.95, 1.05], [-8, 8]
    fused = T.random_jitter_scale_rotate(6, scales, angles, 3)
    for seed in range(4):
        key = jax.random.PRNGKey(seed)
        key_scale, key_angle, key_before, key_after = jax.random.split(key, 4)
        scale = scales[int(jax.random.randint(key_scale, (), 0, 2))]
        angle = angles[int(jax.random.randint(key_angle, (), 0, 2))]
        before = [int(v) for v in jax.random.randint(key_before, (2,), -6, 7)]
        after = [int(v) for v in jax.random.randint(key_after, (2,), -3, 4)]
        staged = T.shift(image, *before, mode="constant", bound=6)
        staged = T.affine(staged, scale=scale, angle_degrees=angle, mode="constant")
        staged = T.shift(staged, *after, mode="constant", bound=3)
        out = fused(key, image)
        np.testing.assert_allclose(out[16:-16, 16:-16], staged[16:-16, 16:-16], atol=1e-4)


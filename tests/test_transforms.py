"""Transforms: match NumPy/OpenCV references, and agree eager / under jit / under vmap."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis import transforms as T

IMAGE = np.random.default_rng(0).random((20, 26, 3), dtype=np.float32)


@pytest.mark.parametrize("dy,dx", [(0, 0), (3, -5), (-7, 11), (19, 25)])
def test_shift_wrap_is_roll(dy, dx):
    np.testing.assert_array_equal(T.shift(jnp.asarray(IMAGE), dy, dx, mode="wrap"), np.roll(IMAGE, (dy, dx), axis=(0, 1)))


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
    jitted = jnp.stack([jax.jit(transform)(k, im) for k, im in zip(keys, images)])
    vmapped = jax.jit(lambda k, x: T.apply_batch(transform, k, x))(keys, images)
    np.testing.assert_allclose(jitted, eager, atol=1e-5)
    np.testing.assert_allclose(vmapped, eager, atol=1e-5)
    assert vmapped.shape == images.shape


def test_each_item_gets_its_own_draw():
    images = jnp.broadcast_to(jax.random.uniform(jax.random.PRNGKey(5), (1, 32, 32, 3)), (4, 32, 32, 3))
    out = T.apply_batch(T.STANDARD, jax.random.split(jax.random.PRNGKey(6), 4), images)
    assert len({np.asarray(o).tobytes() for o in out}) == 4


def test_pad_and_compose():
    image = jnp.asarray(IMAGE)
    out = T.compose(T.pad(4), T.jitter(2))(jax.random.PRNGKey(0), image)
    assert out.shape == (28, 34, 3)
    with pytest.raises(ValueError, match="one image"):
        T.jitter(2)(jax.random.PRNGKey(0), image[None])

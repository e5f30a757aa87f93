"""Each parameterization can fit a real image, and from_image inverts to_image (octave restarts)."""

import custom_call_support
import cv2
import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvis.optvis.param import image_param, init_uniform

KINDS = [
    dict(spatial_kind="fft", decorrelate=True, valid_range="sigmoid"),
    dict(spatial_kind="fft", decorrelate=False, valid_range="sigmoid"),
    dict(spatial_kind="pixel", decorrelate=True, valid_range="sigmoid"),
    dict(spatial_kind="pixel", decorrelate=False, valid_range="offset"),
]


@pytest.fixture(scope="module")
def target(sample_photos):
    return cv2.resize(sample_photos[0][100:356, 200:456], (64, 64), interpolation=cv2.INTER_AREA)[None]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_fits_a_photo(kind, target):
    param = image_param(**kind)
    params = param.init(jax.random.PRNGKey(0), 1, 64, 64, 3)
    optimizer = optax.adam(0.05)
    state = optimizer.init(params)

    @fast_compile.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((param.to_image(p) - target) ** 2))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    first = None
    for _ in range(300):
        params, state, loss = step(params, state)
        first = loss if first is None else first
    error = float(jnp.mean(jnp.abs(param.to_image(params) - target)))
    assert error < 0.03, (kind, float(first), error)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(str(v) for v in k.values()))
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_from_image_inverts_to_image(kind, channels):
    param = image_param(**kind)
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 24, channels), minval=0.05, maxval=0.95)
    np.testing.assert_allclose(param.to_image(param.from_image(images)), images, atol=2e-5)


def test_sigmoid_range_stays_valid():
    param = image_param("fft", init_std=5.0)
    images = param.to_image(param.init(jax.random.PRNGKey(2), 2, 32, 32, 3))
    assert float(images.min()) >= 0 and float(images.max()) <= 1


def test_uniform_init_matches_seed_000_range():
    param = image_param("pixel", decorrelate=False, valid_range="offset")
    images = param.to_image(
        init_uniform(jax.random.PRNGKey(0), 2, 56, 56, 3, param=param, low=150 / 255, high=180 / 255)
    )
    assert 150 / 255 - 1e-6 <= float(images.min()) < float(images.max()) <= 180 / 255 + 1e-6


def test_fft_needs_even_width():
    param = image_param("fft")
    with pytest.raises(ValueError, match="even"):
        param.from_image(jnp.zeros((1, 8, 9, 3)) + 0.5)


def test_colour_mixing_equals_the_matrix_product():
    from jaxvis.optvis.param import color

    latent = np.random.default_rng(0).standard_normal((2, 5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(color.decorrelated_to_rgb(latent), latent @ color.COLOR_MATRIX.T, atol=1e-6)
    np.testing.assert_allclose(color.rgb_to_decorrelated(color.decorrelated_to_rgb(latent)), latent, atol=1e-5)


def test_complex_pairs_gradient_equals_autodiff_of_lax_complex():
    from jaxvis.optvis.param import spatial

    rng = np.random.default_rng(3)
    pairs = jnp.asarray(rng.standard_normal((2, 3, 8, 5, 2)), jnp.float32)
    weights = jnp.asarray(rng.standard_normal((2, 3, 8, 5)) + 1j * rng.standard_normal((2, 3, 8, 5)), jnp.complex64)
    loss = lambda make: lambda p: jnp.sum(jnp.real(jnp.fft.irfft2(make(p) * weights, s=(8, 8))) ** 2)
    got = jax.grad(loss(spatial._complex_from_pairs))(pairs)
    want = jax.grad(loss(lambda p: jax.lax.complex(p[..., 0], p[..., 1])))(pairs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(want)).max() > 0.1


# --- the FFT parameterization's C++ transform (CPU) against jnp.fft --------------------------------

def _xla_latent(params, decay_power=1.0):
    """spatial.fft's to_latent with the C++ custom call switched off: the reference."""
    from jaxvis.optvis.param import spatial

    saved = spatial.use_native_spectral
    spatial.use_native_spectral = lambda params: False
    try:
        return fast_compile.jit(lambda p: spatial.fft(decay_power).to_latent(p))(params), fast_compile.jit(
            lambda p, g: jax.vjp(spatial.fft(decay_power).to_latent, p)[1](g)[0])
    finally:
        spatial.use_native_spectral = saved


@pytest.fixture
def needs_native_spectral():
    """Fails where the spectral custom call should be built but is not (tests/custom_call_support.py)."""
    custom_call_support.require("spectral")


@pytest.mark.usefixtures("needs_native_spectral")
@pytest.mark.parametrize("batch,channels,height,width", [
    (16, 3, 128, 128),  # the default job's final octave (4^3 x 2)
    (2, 3, 108, 108),   # its first octave (4 x 3^3)
    (2, 1, 70, 70),     # factors 2, 5, 7 (generic radix for 5 and 7), gray
    (1, 4, 7, 12),      # odd height (one row without a partner), four channels
    (3, 3, 2, 2),       # the smallest image
])
def test_native_spectral_matches_jnp_fft(batch, channels, height, width):
    from jaxvis.optvis.param import spatial

    rng = np.random.default_rng(height)
    params = jnp.asarray(rng.standard_normal((batch, channels, height, width // 2 + 1, 2)), jnp.float32)
    assert spatial.use_native_spectral(params)
    space = spatial.fft(1.0)
    latent = fast_compile.jit(space.to_latent)(params)
    want, want_vjp = _xla_latent(params)
    scale = float(np.abs(np.asarray(want)).max())
    np.testing.assert_allclose(latent, want, rtol=0, atol=2e-6 * scale)
    g = jnp.asarray(rng.standard_normal(latent.shape), jnp.float32)
    grad = fast_compile.jit(lambda p, g: jax.vjp(space.to_latent, p)[1](g)[0])(params, g)
    want_grad = want_vjp(params, g)
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=2e-6 * float(np.abs(np.asarray(want_grad)).max()))
    # under vmap the leading dimensions are one batch, both ways
    np.testing.assert_allclose(jax.vmap(space.to_latent)(params[None])[0], latent, rtol=0, atol=1e-7 * scale)
    vmapped_grad = jax.vmap(lambda p, g: jax.vjp(space.to_latent, p)[1](g)[0])(params[None], g[None])[0]
    np.testing.assert_allclose(vmapped_grad, grad, rtol=0, atol=1e-7 * float(np.abs(np.asarray(grad)).max()))


@pytest.mark.usefixtures("needs_native_spectral")
def test_native_spectral_leaves_large_prime_factors_to_xla():
    from jaxvis.optvis.param import spatial

    assert not spatial.use_native_spectral(jnp.zeros((1, 3, 106, 54, 2), jnp.float32))  # 106 = 2 x 53
    assert not spatial.use_native_spectral(jnp.zeros((1, 3, 64, 12, 2), jnp.float32))   # width 22 = 2 x 11
    assert spatial.use_native_spectral(jnp.zeros((1, 3, 64, 33, 2), jnp.float32))        # width 64


def _composed_to_image(params):
    """image_param("fft")'s to_image built from its parts in XLA (the fused C++ call switched off)."""
    from jaxvis.optvis.param import spatial

    saved = spatial.use_native_spectral
    spatial.use_native_spectral = lambda params: False
    try:
        to_image = image_param("fft").to_image
        return fast_compile.jit(to_image)(params), fast_compile.jit(lambda p, g: jax.vjp(to_image, p)[1](g)[0])
    finally:
        spatial.use_native_spectral = saved


@pytest.mark.usefixtures("needs_native_spectral")
@pytest.mark.parametrize("batch,height,width,amplitude", [
    (16, 128, 128, 1.0),  # the default job's final octave
    (2, 70, 70, 1.0),     # factors 2, 5, 7
    (1, 7, 12, 1.0),      # odd height
    (3, 2, 2, 1.0),       # the smallest image
    (2, 16, 16, 300.0),   # latents far into the sigmoid's flat ends (the C++ exp clamps its argument)
])
def test_fused_lucid_default_matches_its_composed_parts(batch, height, width, amplitude):
    """FFT + colour decorrelation + sigmoid as one C++ call (param/fused.py) = the three in XLA."""
    from jaxvis.optvis.param import fused, spatial

    rng = np.random.default_rng(width)
    params = jnp.asarray(amplitude * rng.standard_normal((batch, 3, height, width // 2 + 1, 2)), jnp.float32)
    assert fused.usable(params)
    # the DFTs' rounding, relative to the largest latent, passes through the sigmoid's slope (<= 1/4)
    atol = 1e-6 + 1e-6 * float(np.abs(np.asarray(fast_compile.jit(spatial.fft(1.0).to_latent)(params))).max())
    to_image = image_param("fft").to_image
    assert "jaxvis_spectral_image_forward" in fast_compile.jit(to_image).lower(params).as_text()
    images = fast_compile.jit(to_image)(params)
    want, want_vjp = _composed_to_image(params)
    assert np.isfinite(np.asarray(images)).all()
    np.testing.assert_allclose(images, want, rtol=0, atol=atol)
    g = jnp.asarray(rng.standard_normal(images.shape), jnp.float32)
    grad = fast_compile.jit(lambda p, g: jax.vjp(to_image, p)[1](g)[0])(params, g)
    want_grad = want_vjp(params, g)
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=2e-6 * float(np.abs(np.asarray(want_grad)).max()))
    np.testing.assert_allclose(jax.vmap(to_image)(params[None])[0], images, rtol=0, atol=1e-7)
    vmapped_grad = jax.vmap(lambda p, g: jax.vjp(to_image, p)[1](g)[0])(params[None], g[None])[0]
    np.testing.assert_allclose(vmapped_grad, grad, rtol=0, atol=1e-7 * float(np.abs(np.asarray(grad)).max()))


@pytest.mark.usefixtures("needs_native_spectral")
def test_fused_call_only_for_lucids_default_on_rgb():
    from jaxvis.optvis.param import fused

    rgb = jnp.zeros((1, 3, 64, 33, 2), jnp.float32)
    lowered = lambda param, params: fast_compile.jit(param.to_image).lower(params).as_text()
    assert "image_forward" not in lowered(image_param("fft", decorrelate=False), rgb)
    assert "image_forward" not in lowered(image_param("fft", valid_range="offset"), rgb)
    assert not fused.usable(jnp.zeros((1, 1, 64, 33, 2), jnp.float32))  # gray
    assert not fused.usable(jnp.zeros((1, 3, 106, 54, 2), jnp.float32))  # a size for XLA's FFT


@pytest.mark.usefixtures("needs_native_spectral")
def test_fused_call_baseline_loops_match_too():
    """The transform's butterflies and the colour/sigmoid loops also have baseline (non-AVX2)
    builds; JAXVIS_NATIVE_NO_AVX2=1 selects them (csrc/cpu_features.hpp)."""
    import os
    import subprocess
    import sys

    code = """
import jax, jax.numpy as jnp, numpy as np
from jaxvis.optvis.param import image_param, spatial
params = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 108, 55, 2)), jnp.float32)
g = jnp.asarray(np.random.default_rng(2).standard_normal((2, 108, 108, 3)), jnp.float32)
run = lambda: (jax.jit(image_param("fft").to_image)(params),
               jax.jit(lambda p: jax.vjp(image_param("fft").to_image, p)[1](g)[0])(params))
images, grad = run()
spatial.use_native_spectral = lambda params: False
want_images, want_grad = run()
np.testing.assert_allclose(images, want_images, rtol=0, atol=1e-5)
np.testing.assert_allclose(grad, want_grad, rtol=0, atol=2e-6 * float(np.abs(np.asarray(want_grad)).max()))
"""
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAXVIS_NATIVE_NO_AVX2": "1"})

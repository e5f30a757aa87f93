"""The FFT parameterization's 1/f scaling and the colour decorrelation against lucid's published values.

Reference: lucid `optvis/param/spatial.py` (`rfft2d_freqs`, `fft_image`) and `optvis/param/color.py`
(`color_correlation_svd_sqrt`, `max_norm_svd_sqrt`, `_linear_decorelate_color`, `to_valid_rgb`),
restated below in NumPy with lucid's own constants and layout (spectrum `[2, B, C, H, W/2+1]`,
`irfft2d`, channels moved last, divided by 4). jaxvis renders even widths only, where lucid keeps
W/2+1 frequencies as jaxvis does. Both of jaxvis's paths are checked: the C++ custom calls (CPU,
the default) and the pure-JAX one (other backends).
"""

import custom_call_support
import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.optvis.param import color, fused, image_param, spatial

# lucid optvis/param/color.py
LUCID_COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32
)
LUCID_MAX_NORM_SVD_SQRT = 0.4619523  # np.max(np.linalg.norm(color_correlation_svd_sqrt, axis=0)): column 0


def lucid_rfft2d_freqs(h, w):
    """lucid's `rfft2d_freqs` for an even width."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


def lucid_scale(h, w, decay_power=1.0):
    freqs = lucid_rfft2d_freqs(h, w)
    return 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power * np.sqrt(w * h)


def lucid_fft_image(spectrum_real_imag, h, w, decay_power=1.0):
    """lucid's `fft_image` on its variable [2, B, C, H, W/2+1]: the image [B, H, W, C]."""
    spectrum = spectrum_real_imag[0] + 1j * spectrum_real_imag[1]
    image = np.fft.irfft2(lucid_scale(h, w, decay_power) * spectrum)  # irfft2d over the last two axes
    return np.transpose(image, (0, 2, 3, 1))[:, :h, :w] / 4.0


def lucid_to_valid_rgb(t):
    """`to_valid_rgb(t, decorrelate=True, sigmoid=True)`."""
    flat = t.reshape(-1, 3) @ (LUCID_COLOR_CORRELATION_SVD_SQRT / LUCID_MAX_NORM_SVD_SQRT).T
    return 1.0 / (1.0 + np.exp(-flat.reshape(t.shape)))


@pytest.fixture(params=["native", "jax"])
def path(request, monkeypatch):
    if request.param == "native":
        custom_call_support.require("spectral")
    else:
        monkeypatch.setattr(spatial, "use_native_spectral", lambda params: False)
        monkeypatch.setattr(fused, "usable", lambda params: False)
    return request.param


def test_spectral_scale_is_lucids():
    # 4 x 4, decay 1: 1 / max(|f|, 1/4) * sqrt(16), written out
    want = np.asarray(
        [
            [16, 16, 8],
            [16, 4 / np.hypot(0.25, 0.25), 4 / np.hypot(0.25, 0.5)],
            [8, 4 / np.hypot(0.5, 0.25), 4 / np.hypot(0.5, 0.5)],
            [16, 4 / np.hypot(0.25, 0.25), 4 / np.hypot(0.25, 0.5)],
        ]
    )
    np.testing.assert_allclose(spatial.spectral_scale(4, 4, 1.0), want, rtol=1e-6)
    for h, w, decay in [(4, 4, 1.0), (128, 128, 1.0), (108, 108, 1.0), (6, 10, 1.0), (12, 8, 1.5), (7, 16, 0.5)]:
        got = spatial.spectral_scale(h, w, decay)
        assert got.shape == (h, w // 2 + 1)
        np.testing.assert_allclose(got, lucid_scale(h, w, decay), rtol=1e-6)


def test_colour_constants_are_lucids():
    assert np.linalg.norm(LUCID_COLOR_CORRELATION_SVD_SQRT, axis=0).max() == pytest.approx(
        LUCID_MAX_NORM_SVD_SQRT, rel=1e-6
    )
    np.testing.assert_allclose(
        color.COLOR_MATRIX, LUCID_COLOR_CORRELATION_SVD_SQRT / LUCID_MAX_NORM_SVD_SQRT, rtol=1e-6
    )
    latent = np.random.default_rng(0).standard_normal((2, 5, 4, 3)).astype(np.float32)
    want = (latent.reshape(-1, 3) @ (LUCID_COLOR_CORRELATION_SVD_SQRT / LUCID_MAX_NORM_SVD_SQRT).T).reshape(
        latent.shape
    )
    np.testing.assert_allclose(color.decorrelated_to_rgb(jnp.asarray(latent)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(color.rgb_to_decorrelated(jnp.asarray(want)), latent, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch,channels,height,width", [(2, 3, 8, 8), (1, 3, 12, 20), (2, 1, 16, 10)])
def test_fft_latent_is_lucids_fft_image(path, batch, channels, height, width):
    params = (
        np.random.default_rng(height).standard_normal((batch, channels, height, width // 2 + 1, 2)).astype(np.float32)
    )
    want = lucid_fft_image(np.moveaxis(params.astype(np.float64), -1, 0), height, width)
    got = np.asarray(fast_compile.jit(spatial.fft().to_latent)(jnp.asarray(params)))
    assert got.shape == (batch, height, width, channels)
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max())


def test_lucids_default_image_is_sigmoid_of_decorrelated_fft_image(path):
    param = image_param("fft", decorrelate=True, valid_range="sigmoid")
    params = param.init(jax.random.PRNGKey(0), 4, 16, 24, 3)
    assert params.shape == (4, 3, 16, 13, 2)  # lucid: [2, B, C, H, W/2+1]
    assert np.std(np.asarray(params)) == pytest.approx(0.01, rel=0.1)  # lucid's sd
    scaled = 50 * np.asarray(params, np.float64)  # away from sigmoid(0) = 0.5 so the colour mixing shows
    want = lucid_to_valid_rgb(lucid_fft_image(np.moveaxis(scaled, -1, 0), 16, 24))
    got = np.asarray(fast_compile.jit(param.to_image)(jnp.asarray(scaled, jnp.float32)))
    assert np.abs(want - 0.5).max() > 0.05
    np.testing.assert_allclose(got, want, atol=2e-6)

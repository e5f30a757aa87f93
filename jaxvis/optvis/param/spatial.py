"""Spatial parameterizations: the optimized latent <-> an unconstrained image latent [B,H,W,C].

Contract: a spatial parameterization is a `Spatial(init, to_latent, from_latent)` of pure
functions. `init(key, batch, height, width, channels, std)` makes params (a pytree),
`to_latent(params)` gives `latent[B,H,W,C]`, and `from_latent(latent)` is its exact inverse
(used after an octave upscale to restart optimization from the resized image).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.native import custom_calls

__all__ = ["Spatial", "fft", "is_7_smooth", "native_weights", "pixel", "spectral_scale", "use_native_spectral"]


class Spatial(NamedTuple):
    init: Callable
    to_latent: Callable
    from_latent: Callable


def pixel() -> Spatial:
    """Params are the latent pixels themselves."""

    def init(key, batch, height, width, channels, std=0.01):
        return std * jax.random.normal(key, (batch, height, width, channels), jnp.float32)

    return Spatial(init, lambda params: params, lambda latent: latent)


def spectral_scale(height: int, width: int, decay_power: float) -> np.ndarray:
    """Per-frequency amplitude 1/f^decay (lucid's), so that white-noise spectra give natural-looking
    1/f images and every frequency learns at a comparable rate. Shape [H, W//2+1]."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
    return (scale * np.sqrt(height * width)).astype(np.float32)


# lucid divides the irfft output by 4 so that the initial noise has a small amplitude.
_FFT_OUTPUT_DIVISOR = 4.0


@jax.custom_vjp
def _complex_from_pairs(pairs):
    """[..., 2] (real, imaginary) pairs -> complex [...]. Its gradient is written as one stacked
    array: autodiff's (each part's gradient padded to the pairs' shape, then summed) cost two
    extra passes over the params in every render step."""
    return jax.lax.complex(pairs[..., 0], pairs[..., 1])


def _complex_from_pairs_fwd(pairs):
    return _complex_from_pairs(pairs), None


def _complex_from_pairs_bwd(_, g):
    return (jnp.stack([jnp.real(g), -jnp.imag(g)], axis=-1),)  # lax.complex's transpose: (re g, -im g)


_complex_from_pairs.defvjp(_complex_from_pairs_fwd, _complex_from_pairs_bwd)


def fft(decay_power: float = 1.0) -> Spatial:
    """Params are the real and imaginary parts of the image's 2-D real FFT, [B, C, H, W//2+1, 2],
    scaled by `spectral_scale`: gradient steps then act on frequencies, not pixels."""

    def init(key, batch, height, width, channels, std=0.01):
        return std * jax.random.normal(key, (batch, channels, height, width // 2 + 1, 2), jnp.float32)

    def to_latent(params):
        _, _, height, half_width, _ = params.shape
        width = _fft_width(params)
        if use_native_spectral(params):
            return _native_latent(params, decay_power)
        scale = jnp.asarray(spectral_scale(height, width, decay_power))
        spectrum = _complex_from_pairs(params) * scale
        latent = jnp.fft.irfft2(spectrum, s=(height, width)) / _FFT_OUTPUT_DIVISOR
        return jnp.transpose(latent, (0, 2, 3, 1)).astype(jnp.float32)

    def from_latent(latent):
        _, height, width, _ = latent.shape
        scale = jnp.asarray(spectral_scale(height, width, decay_power))
        spectrum = jnp.fft.rfft2(jnp.transpose(latent, (0, 3, 1, 2)) * _FFT_OUTPUT_DIVISOR) / scale
        params = jnp.stack([spectrum.real, spectrum.imag], axis=-1).astype(jnp.float32)
        return _with_width(params, width)

    return Spatial(init, to_latent, from_latent)


# --- the same map as one C++ custom call on CPU (csrc/spectral.hpp says why) -------------------

def is_7_smooth(n: int) -> bool:
    """Whether n has no prime factor above 7: the sizes the FFTs here are fast for."""
    for prime in (2, 3, 5, 7):
        while n % prime == 0:
            n //= prime
    return n == 1


def use_native_spectral(params) -> bool:
    """7-smooth sizes use the C++ transform; a larger factor would take its O(n p) generic
    butterfly, where XLA's FFT (Bluestein) is the better choice."""
    return is_7_smooth(params.shape[-3]) and is_7_smooth(_fft_width(params)) and custom_calls.usable("spectral", params)


def native_weights(height: int, width: int, decay_power: float):
    """spectral_scale with irfft2's 1/(H W) and the output divisor folded in (the C++ transform is
    unnormalized). Under vmap it gains leading dimensions of size 1 (`expand_dims`), which the
    kernel accepts."""
    return jnp.asarray(spectral_scale(height, width, decay_power) / (height * width * _FFT_OUTPUT_DIVISOR))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _native_latent(params, decay_power: float):
    """`fft(decay_power).to_latent(params)` as the C++ custom call: [..., C, H, W/2+1, 2] -> [..., H, W, C]."""
    *lead, channels, height, _, _ = params.shape
    width = _fft_width(params)
    weights = native_weights(height, width, decay_power)
    return custom_calls.call("spectral", "forward", (*lead, height, width, channels), params, weights,
                             vmap_method="expand_dims")


def _native_latent_fwd(params, decay_power):
    return _native_latent(params, decay_power), None  # linear: no residuals


def _native_latent_bwd(decay_power, _, g):
    *lead, height, width, channels = g.shape
    weights = native_weights(height, width, decay_power)
    params_shape = (*lead, channels, height, width // 2 + 1, 2)
    return (custom_calls.call("spectral", "backward", params_shape, g, weights, vmap_method="expand_dims"),)


_native_latent.defvjp(_native_latent_fwd, _native_latent_bwd)


def _fft_width(params) -> int:
    """The image width of FFT params; only even widths are used (see `fft`)."""
    return 2 * (params.shape[3] - 1)


def _with_width(params, width: int):
    # An odd and an even width share the bin count W//2+1, so the width could not be recovered
    # from the params' shape; jaxvis renders only even sizes with the FFT parameterization.
    if width % 2:
        raise ValueError(f"the fft parameterization needs an even image width, got {width}")
    return params

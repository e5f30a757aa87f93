"""lucid's default parameterization (FFT spectrum, decorrelated colour, sigmoid) as ONE C++ custom
call on CPU, forward and backward.

Contract: `usable(params)` says whether `to_image(params, decay_power)` runs here for these
params; when it does, it equals `image_param("fft", decorrelate=True, valid_range="sigmoid",
decay_power=...).to_image(params)` composed from its parts (spatial.fft, color.decorrelated_to_rgb,
color.sigmoid_range), gradient included. csrc/colour.hpp says why the pixel-wise tail is fused.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxvis.native import custom_calls
from jaxvis.optvis.param import color, spatial

__all__ = ["to_image", "usable"]


def usable(params) -> bool:
    """3-channel FFT params of a size the C++ transform handles, on CPU."""
    return params.ndim >= 4 and params.shape[-4] == 3 and spatial.use_native_spectral(params)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def to_image(params, decay_power: float):
    """[..., 3, H, W/2+1, 2] FFT params -> RGB images [..., H, W, 3] in (0, 1)."""
    return _image_forward(params, decay_power)


def _operands(height: int, width: int, decay_power: float):
    return spatial.native_weights(height, width, decay_power), jnp.asarray(color.COLOR_MATRIX)


def _image_forward(params, decay_power):
    *lead, _, height, half, _ = params.shape
    width = 2 * (half - 1)
    return custom_calls.call("spectral", "image_forward", (*lead, height, width, 3), params,
                             *_operands(height, width, decay_power), vmap_method="expand_dims")


def _to_image_fwd(params, decay_power):
    rgb = _image_forward(params, decay_power)
    return rgb, rgb  # the sigmoid's derivative is rgb (1 - rgb)


def _to_image_bwd(decay_power, rgb, g):
    *lead, height, width, _ = g.shape
    params_shape = (*lead, 3, height, width // 2 + 1, 2)
    return (custom_calls.call("spectral", "image_backward", params_shape, g, rgb,
                              *_operands(height, width, decay_power), vmap_method="expand_dims"),)


to_image.defvjp(_to_image_fwd, _to_image_bwd)

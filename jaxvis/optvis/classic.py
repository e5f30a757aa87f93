"""The steps of the classic recipes that lucid's loop does not have: FilterVisualizer (fastai 0.7)
and keras-vis `visualize_activation`, written once, batched, for `jaxvis.optvis.render`.

Contract: every function maps a batch `[B,H,W,C]` (or a params pytree of such arrays) to a batch,
and treats each item on its own, as the original treats its single image: per-item means, norms
and random offsets. Nothing here clips except `standardize`, which is keras-vis's final step.

- `resize_opencv`: `cv2.resize(..., interpolation=cv2.INTER_CUBIC)` (FilterVisualizer's upscale):
  Keys' cubic with a = -0.75, source position `(d + 0.5) * in / out - 0.5`, replicated borders,
  written as two dense interpolation matrices (static for a size pair).
- `normalized_rmsprop`: keras-vis `Optimizer`: the gradient divided by its root mean square over
  the item plus `K.epsilon()` (1e-7), then `_rmsprop`: `cache = 0.95 cache + 0.05 g^2`,
  `step = -g / sqrt(cache + 1e-7)`, scaled by the learning rate (keras-vis: none, i.e. 1).
- `lp_norm`, `total_variation`: keras-vis `LPNorm(p=6)` and `TotalVariation(beta=2)`, each
  divided by the item's element count (`regularizers.normalize`).
- `roll`: keras-vis `Jitter(n)`: the optimized image itself is shifted with wrap-around by a
  uniform integer offset in [-n, n] per axis before each step (`scipy.ndimage.shift`, order 0,
  mode "wrap"), and stays shifted.
- `standardize`: keras-vis `utils.deprocess_input` followed by its uint8 cast: centred, scaled to
  std 0.1 (std + 1e-7) around 0.5, clipped to [0, 1], floored to 1/255 steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

KERAS_EPSILON = 1e-7  # keras.backend.epsilon()
OPENCV_CUBIC_A = -0.75  # OpenCV's interpolateCubic coefficient (imgproc/src/resize.cpp)


@functools.lru_cache(maxsize=256)
def opencv_cubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The [out, in] matrix of OpenCV's INTER_CUBIC resize along one axis (float64)."""
    a = OPENCV_CUBIC_A
    matrix = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    for d in range(out_size):
        f = (d + 0.5) * scale - 0.5
        s = int(np.floor(f))
        t = f - s
        weights = (
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        )
        weights = weights + (1 - sum(weights),)
        for k, w in enumerate(weights):
            matrix[d, min(max(s - 1 + k, 0), in_size - 1)] += w
    return matrix


def resize_opencv(images, height: int, width: int):
    """images [B,H,W,C] -> [B,height,width,C] as cv2.resize INTER_CUBIC (module docstring)."""
    rows = jnp.asarray(opencv_cubic_matrix(images.shape[1], height), jnp.float32)
    cols = jnp.asarray(opencv_cubic_matrix(images.shape[2], width), jnp.float32)
    hi = jax.lax.Precision.HIGHEST
    images = jnp.einsum("oh,bhwc->bowc", rows, images, precision=hi)
    return jnp.einsum("pw,bowc->bopc", cols, images, precision=hi)


def _per_item(fn):
    return lambda tree: jax.tree.map(fn, tree)


def normalize_per_item(eps: float = KERAS_EPSILON) -> optax.GradientTransformation:
    """Each item's gradient divided by its root mean square (+ eps), as keras-vis's `norm_grads`."""

    def one(g):
        rms = jnp.sqrt(jnp.mean(g * g, axis=tuple(range(1, g.ndim)), keepdims=True))
        return g / (rms + eps)

    return optax.stateless(lambda updates, params=None: jax.tree.map(one, updates))


def normalized_rmsprop(learning_rate: float, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """keras-vis's step rule (module docstring); weight decay, if any, is added to the gradient first."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        normalize_per_item(KERAS_EPSILON),
        optax.scale_by_rms(decay=0.95, eps=KERAS_EPSILON, initial_scale=0.0, eps_in_sqrt=True),
        optax.scale(-learning_rate),
    )


def _count(x) -> int:
    return int(np.prod(x.shape[1:]))


def lp_norm(tensor, p: float = 6.0):
    """keras-vis LPNorm per item: (sum |x|^p)^(1/p) / element count. [B,H,W,C] -> [B]."""
    flat = tensor.reshape(tensor.shape[0], -1)
    return jnp.sum(jnp.abs(flat) ** p, axis=1) ** (1.0 / p) / _count(tensor)


def total_variation(tensor, beta: float = 2.0):
    """keras-vis TotalVariation per item: sum over [H-1, W-1, C] of (dy^2 + dx^2)^(beta/2), divided
    by the element count. [B,H,W,C] -> [B]."""
    base = tensor[:, :-1, :-1]
    dy = tensor[:, 1:, :-1] - base
    dx = tensor[:, :-1, 1:] - base
    return jnp.sum(((dy * dy + dx * dx) ** (beta / 2.0)).reshape(tensor.shape[0], -1), axis=1) / _count(tensor)


def roll(keys, params, max_shift: int):
    """Each item of params [B,H,W,C] rolled (wrap) by its own offsets in [-max_shift, max_shift]."""

    def one(key, image):
        dy, dx = jax.random.randint(key, (2,), -max_shift, max_shift + 1)
        return jnp.roll(image, (dy, dx), axis=(0, 1))

    return jax.vmap(one)(keys, params)


def standardize(tensor):
    """keras-vis's final image (module docstring), per item: [B,H,W,C] -> [B,H,W,C] in [0, 1]."""
    axes = tuple(range(1, tensor.ndim))
    centred = tensor - jnp.mean(tensor, axis=axes, keepdims=True)
    scaled = centred / (jnp.std(centred, axis=axes, keepdims=True) + KERAS_EPSILON) * 0.1 + 0.5
    return jnp.floor(255.0 * jnp.clip(scaled, 0.0, 1.0)) / 255.0


__all__ = ["lp_norm", "normalize_per_item", "normalized_rmsprop", "opencv_cubic_matrix", "resize_opencv", "roll",
           "standardize", "total_variation"]

"""DeepDream (TensorFlow's DeepDream tutorial): gradient ascent on a photo itself, to amplify what chosen
layers respond to.

Contract: `dream(spec, image, layers, config)` takes one image `[H, W, C]` or a batch `[B, H, W, C]`
(float in [0, 1] or uint8) and returns a `DreamResult` whose `image` has the input's exact shape and
dtype. The work happens in the model's input space (`spec.preprocess`): each step

    loss  = sum over `layers` of the layer's mean activation          (per image)
    grad  = d loss / d image, divided by its standard deviation (+1e-8, per image)
    image = clip(image + step_size * grad, model input range)

Octaves: the photo is resized to `base * octave_scale**k` for each k of `octave_power_factors`
(seed: 1.3 and -2..2) and dreamed there for `steps` steps, then resized back to its own size at the
end. The `steps` of an octave run in ONE jitted `lax.scan` (one compilation per octave size). Before
each step the image is rolled by a random shift and the gradient rolled back, so tile borders and
the network's zero padding never sit at the same place twice (no seams).

Tiling (`tile_size`): the gradient of a large image is computed tile by tile inside the scan, so
memory is that of one tile, whatever the photo's size. Tiles partition the image into cores of
`tile_size` pixels; each core is evaluated inside a window extended by `tile_overlap` pixels of
context on every side (clamped to the image), and only the core's gradient is kept; an axis no
longer than `tile_size + 2 * tile_overlap` is not split. Every window starts at a multiple of
`align` (the network's total stride, 32 for most ImageNet CNNs), so a window's activations sit on
the same grid as the whole image's: along an axis that is split into tiles the octave size is
rounded to a multiple of `align`. The stitched gradient is close to the untiled one, not equal:
activations near a window's edge see zero padding instead of the photo; more overlap brings the
two closer (tests/recipes/test_dream.py bounds the difference). Over many steps any two runs drift
apart anyway -- DeepDream is chaotic in float32 -- and the random rolls keep the tile borders from
leaving seams.

Octave resizing happens on the host with OpenCV (`cv2.INTER_AREA` to shrink, `INTER_CUBIC` to
enlarge), which measured as fast as the C++ extension's resize on large photos and far faster than
`jax.image.resize` on CPU (benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxvis.errors import JaxvisError
from jaxvis.models.spec import ModelSpec, check_image_batch
from jaxvis.output.display import Shows
from jaxvis.output.files import resize_image

__all__ = ["DreamConfig", "DreamResult", "dream", "octave_sizes", "tile_plan"]


@dataclasses.dataclass(frozen=True)
class DreamConfig:
    """Everything that decides a dream's pixels (with the model, the layers and the photo).

    Seed 002's recipe is the default except `steps` (it used 100 per octave on a GPU).

    Attributes:
      steps: gradient steps per octave.
      step_size: the step on the std-normalized gradient, in model-input units (seed: 0.01-0.025).
      octave_scale: size ratio between octaves.
      octave_power_factors: the octaves, as powers of `octave_scale` relative to the photo's size.
      tile_size: core size of a gradient tile in pixels; None or 0: the whole image at once.
      tile_overlap: context pixels around each tile's core (see the module docstring).
      align: window starts (and the octave size along a tiled axis) are multiples of this.
      roll: roll the image randomly before every step (needed to hide tile and padding seams).
      seed: seeds the rolls (step `i` of the whole run uses `fold_in(PRNGKey(seed), i)`).
      min_size: octaves are never made smaller than this (pixels, shorter side).
    """

    steps: int = 50
    step_size: float = 0.01
    octave_scale: float = 1.3
    octave_power_factors: tuple[int, ...] = (-2, -1, 0, 1, 2)
    tile_size: int | None = 512
    tile_overlap: int = 64
    align: int = 32
    roll: bool = True
    seed: int = 0
    min_size: int = 32

    def validate(self) -> DreamConfig:
        def require(ok, message):
            if not ok:
                raise JaxvisError(message)

        require(
            isinstance(self.steps, int) and 1 <= self.steps <= 100_000,
            f"steps must be a positive integer, got {self.steps}",
        )
        require(
            np.isfinite(self.step_size) and self.step_size > 0,
            f"step size must be a positive number, got {self.step_size}",
        )
        require(
            np.isfinite(self.octave_scale) and self.octave_scale >= 1.0,
            f"octave scale must be >= 1, got {self.octave_scale}",
        )
        require(
            len(self.octave_power_factors) >= 1
            and all(isinstance(k, (int, np.integer)) and abs(k) <= 16 for k in self.octave_power_factors),
            f"octave power factors must be 1 or more integers in [-16, 16], got {self.octave_power_factors}",
        )
        require(
            self.tile_size is None
            or (isinstance(self.tile_size, int) and (self.tile_size == 0 or self.tile_size >= 32)),
            f"tile size must be 0 (no tiling) or at least 32 pixels, got {self.tile_size}",
        )
        require(
            isinstance(self.tile_overlap, int) and self.tile_overlap >= 0,
            f"tile overlap must be >= 0 pixels, got {self.tile_overlap}",
        )
        require(isinstance(self.align, int) and self.align >= 1, f"align must be a positive integer, got {self.align}")
        require(
            not self.tile_size or (self.tile_size % self.align == 0 and self.tile_overlap % self.align == 0),
            f"tile size ({self.tile_size}) and tile overlap ({self.tile_overlap}) must be multiples of "
            f"align ({self.align})",
        )
        require(
            isinstance(self.min_size, int) and self.min_size >= 1,
            f"min size must be a positive integer, got {self.min_size}",
        )
        return self


@dataclasses.dataclass(frozen=True)
class DreamResult(Shows):
    image: np.ndarray  # the dreamed photo(s): the input's shape and dtype
    losses: tuple  # per octave, float32 [steps, B]: the loss at each step (before its update)
    sizes: tuple  # per octave, (height, width)


def octave_sizes(height: int, width: int, config: DreamConfig) -> tuple[tuple[int, int], ...]:
    """(height, width) of each octave: the photo's size times `octave_scale ** k`, at least `min_size`;
    a side that is split into tiles (longer than `tile_size + 2 * tile_overlap`) is rounded to a
    multiple of `align`."""

    def side(n: float) -> int:
        n = max(1, int(round(n)))
        if _splits(n, config.tile_size, config.tile_overlap):
            n = max(config.align, int(round(n / config.align)) * config.align)
        return n

    sizes = []
    for k in config.octave_power_factors:
        factor = max(config.octave_scale ** k, config.min_size / min(height, width))
        sizes.append((side(height * factor), side(width * factor)))
    return tuple(sizes)


def _splits(n: int, tile: int | None, overlap: int) -> bool:
    """Whether an axis of n pixels is split into tiles (not if one window would cover it anyway)."""
    return bool(tile) and n > tile + 2 * overlap


def _axis_plan(n: int, tile: int | None, overlap: int) -> tuple[tuple[int, int, int, int], ...]:
    """Per tile along one axis: (window start, window size, core start, core size)."""
    if not _splits(n, tile, overlap):
        return ((0, n, 0, n),)
    window = min(n, tile + 2 * overlap)
    plan = []
    for core in range(0, n, tile):
        size = min(tile, n - core)
        start = min(max(core - overlap, 0), n - window)
        plan.append((start, window, core, size))
    return tuple(plan)


def tile_plan(height: int, width: int, config: DreamConfig):
    """The tiles of an image: (rows plan, columns plan), see `_axis_plan`; all windows one size."""
    return _axis_plan(height, config.tile_size, config.tile_overlap), _axis_plan(
        width, config.tile_size, config.tile_overlap
    )


def _layer_counts(spec: ModelSpec, layers: tuple[str, ...], height: int, width: int) -> dict[str, int]:
    """Elements per image of each layer's activation at this image size (for the mean)."""
    x = jax.ShapeDtypeStruct((1, height, width, spec.channels), jnp.float32)
    shapes = jax.eval_shape(lambda v: spec.apply_preprocessed(v, layers), x)
    return {layer: int(np.prod(shapes[layer].shape[1:])) for layer in layers}


@jax.jit(static_argnames=("spec", "layers", "config"))
def _dream_octave(
    variables, x, first_step, low, high, *, spec: ModelSpec, layers: tuple[str, ...], config: DreamConfig
):
    """`config.steps` steps of DeepDream on x [B,H,W,C] (model input space) inside one lax.scan.

    Returns the new x and the loss of every step, [steps, B].
    """
    batch, height, width, channels = x.shape
    counts = _layer_counts(spec, layers, height, width)
    rows, cols = tile_plan(height, width, config)
    tiles = np.asarray([(r[0], c[0], r[2] - r[0], c[2] - c[0], r[3], c[3]) for r in rows for c in cols], np.int32)
    window = (rows[0][1], cols[0][1])
    base_key = jax.random.PRNGKey(config.seed)

    def window_loss(win, core):
        """(differentiated loss, reported loss) of a window, per image.

        Differentiated: every activation of the window, each layer over its full-image count.
        Reported: only the activations whose centre falls in the core, so the reported losses of
        the tiles add up to the untiled loss."""
        oy, ox, ch, cw = core
        acts = spec.module.apply(variables, win, outputs=layers, relu_redirect=jnp.float32(0))
        full = reported = jnp.zeros((batch,), jnp.float32)
        for layer in layers:
            act = acts[layer]
            flat = act.reshape(batch, -1)
            full = full + flat.sum(axis=1) / counts[layer]
            if act.ndim == 4:
                h, w = act.shape[1:3]
                centre_y = (jnp.arange(h, dtype=jnp.float32) + 0.5) * (window[0] / h)
                centre_x = (jnp.arange(w, dtype=jnp.float32) + 0.5) * (window[1] / w)
                in_y = (centre_y >= oy) & (centre_y < oy + ch)
                in_x = (centre_x >= ox) & (centre_x < ox + cw)
                mask = (in_y[:, None] & in_x[None, :]).astype(act.dtype)
                reported = reported + (act * mask[None, :, :, None]).reshape(batch, -1).sum(axis=1) / counts[layer]
            else:  # a dense layer has no place: it belongs to the first tile only
                first = ((oy == 0) & (ox == 0)).astype(act.dtype)
                reported = reported + first * flat.sum(axis=1) / counts[layer]
        return full.sum(), reported

    grad_fn = jax.grad(window_loss, has_aux=True)

    def gradient(image):
        if len(tiles) == 1:
            grad, reported = grad_fn(image, (0, 0, height, width))
            return grad, reported

        def tile_step(carry, tile):
            acc, total = carry
            wy, wx, oy, ox, ch, cw = (tile[i] for i in range(6))
            start = (0, wy, wx, 0)
            size = (batch, window[0], window[1], channels)
            win = jax.lax.dynamic_slice(image, start, size)
            grad, reported = grad_fn(win, (oy, ox, ch, cw))
            ys = jnp.arange(window[0])
            xs = jnp.arange(window[1])
            core = ((ys >= oy) & (ys < oy + ch))[:, None] & ((xs >= ox) & (xs < ox + cw))[None, :]
            grad = grad * core[None, :, :, None].astype(grad.dtype)
            acc = jax.lax.dynamic_update_slice(acc, jax.lax.dynamic_slice(acc, start, size) + grad, start)
            return (acc, total + reported), None

        init = (jnp.zeros_like(image), jnp.zeros((batch,), jnp.float32))
        (grad, reported), _ = jax.lax.scan(tile_step, init, jnp.asarray(tiles))
        return grad, reported

    def step(x, index):
        key = jax.random.fold_in(base_key, first_step + index)
        if config.roll:
            key_y, key_x = jax.random.split(key)
            dy = jax.random.randint(key_y, (), 0, height)
            dx = jax.random.randint(key_x, (), 0, width)
        else:
            dy = dx = jnp.int32(0)
        rolled = jnp.roll(x, (dy, dx), axis=(1, 2))
        grad, loss = gradient(rolled)
        grad = jnp.roll(grad, (-dy, -dx), axis=(1, 2))
        std = grad.reshape(batch, -1).std(axis=1).reshape(batch, 1, 1, 1)
        x = jnp.clip(x + config.step_size * grad / (std + 1e-8), low, high)
        return x, loss

    return jax.lax.scan(step, x, jnp.arange(config.steps, dtype=jnp.int32))


def _resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a batch [B,H,W,C] on the host: area average to shrink, bicubic to enlarge."""
    if x.shape[1:3] == (height, width):
        return x
    return np.stack([resize_image(image, height, width, enlarge="cubic") for image in x])


def _as_float_batch(image) -> tuple[np.ndarray, bool]:
    """The image(s) as float32 [B,H,W,C] in [0, 1], and whether a single image was given."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        pixels = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        pixels = array.astype(np.float32)
        if pixels.size and not np.isfinite(pixels).all():
            raise JaxvisError("the image holds NaN or infinite values")
        if pixels.size and (pixels.min() < -1e-6 or pixels.max() > 1 + 1e-6):
            raise JaxvisError(
                f"float images must lie in [0, 1], got values in [{pixels.min():.3g}, {pixels.max():.3g}]"
            )
        pixels = np.clip(pixels, 0.0, 1.0)
    else:
        raise JaxvisError(f"images must be uint8 or float in [0, 1], got dtype {array.dtype}")
    single = pixels.ndim == 3
    return (pixels[None] if single else pixels), single


def _restore(pixels: np.ndarray, like: np.ndarray, single: bool) -> np.ndarray:
    """Float [B,H,W,C] in [0, 1] back to the input's dtype and rank."""
    pixels = pixels[0] if single else pixels
    if like.dtype == np.uint8:
        return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return pixels.astype(like.dtype)


def dream(
    spec: ModelSpec,
    image,
    layers: Sequence[str],
    config: DreamConfig = DreamConfig(),
    *,
    progress: bool = True,
) -> DreamResult:
    """DeepDream `image` on `layers` of `spec` (see the module docstring).

    Args:
      spec: the model.
      image: one photo [H, W, C] or a batch [B, H, W, C] of one size; uint8, or float in [0, 1].
      layers: layer names whose mean activations are summed into the loss (seed: mixed3, mixed5).
      config: steps, step size, octaves, tiling and seed.
      progress: show a tqdm bar (steps of all octaves).

    Returns:
      `DreamResult`: the dreamed image(s) in the input's shape and dtype, the per-step losses of
      every octave and the octave sizes.

    Example:
      >>> spec = jaxvis.models.load_model("mobilenet_v2")
      >>> out = dream(spec, photo_uint8, ["features.10", "features.14"], DreamConfig(steps=20))
    """
    config.validate()
    layers = spec.check_layers(layers)
    if not layers:
        raise JaxvisError("name at least one layer to dream on")
    original = np.asarray(image)
    pixels, single = _as_float_batch(original)
    check_image_batch(pixels, spec.channels, "the image")
    batch, height, width, _ = pixels.shape
    if height < 1 or width < 1:
        raise JaxvisError(f"the image is empty: shape {original.shape}")
    sizes = octave_sizes(height, width, config)
    smallest = min(sizes, key=lambda hw: hw[0] * hw[1])
    try:
        _layer_counts(spec, layers, *smallest)
    except JaxvisError:
        raise
    except Exception as error:  # the network cannot run at that size
        raise JaxvisError(
            f"the smallest octave ({smallest[0]}x{smallest[1]}) is too small for {spec.name}: "
            f"{str(error).splitlines()[0]}; use larger octave power factors or a larger min size"
        ) from None

    low, high = (jnp.asarray(v, jnp.float32) for v in spec.preprocess.input_range(spec.channels))
    x = np.asarray(spec.preprocess(jnp.asarray(pixels)), np.float32)
    losses = []
    with tqdm(
        total=len(sizes) * config.steps,
        desc=f"dream {','.join(layers)}",
        unit="step",
        disable=not progress,
        leave=False,
    ) as bar:
        for octave, (h, w) in enumerate(sizes):
            bar.set_postfix_str(f"octave {octave + 1}/{len(sizes)} {h}x{w}")
            x = _resize(x, h, w)
            out, step_losses = _dream_octave(
                spec.variables,
                jnp.asarray(x),
                jnp.int32(octave * config.steps),
                low,
                high,
                spec=spec,
                layers=layers,
                config=config,
            )
            x = np.asarray(out)
            losses.append(np.asarray(step_losses))
            bar.update(config.steps)
    x = _resize(x, height, width)
    pixels = np.clip(np.asarray(spec.preprocess.invert(jnp.asarray(x))), 0.0, 1.0)
    return DreamResult(image=_restore(pixels, original, single), losses=tuple(losses), sizes=sizes)

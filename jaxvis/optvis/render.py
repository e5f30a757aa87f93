"""The render loop: batched, compiled gradient ascent on images, with octaves on the device.

Contract: `render(spec, objective, units, config)` returns a `RenderResult` with one image per unit,
`images[N,H,W,C]` in [0, 1] at `config.size`, and each image's final score (the objective on the
untransformed image). Units are processed in chunks of `config.batch`; every chunk runs, per
octave, ONE jitted program whose steps are a `lax.scan`. Unit indices and PRNG keys are arguments,
so all chunks of a layer share one compilation per octave size. The key of a unit is
`fold_in(PRNGKey(seed), unit)`, so a unit's image depends on the seed and the unit only, not on
the chunk it fell into. With several local devices, each chunk is sharded over them along the
batch axis (the model's variables replicated); the batch must be a multiple of the device count.
`precision="bf16"` runs the network in bfloat16 (images, optimizer and scores stay float32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxvis.errors import JaxvisError
from jaxvis.models.activations import REDIRECT
from jaxvis.models.activations import TRUE as TRUE_GRADIENT
from jaxvis.models.spec import ModelSpec
from jaxvis.optvis import classic, space, transforms
from jaxvis.optvis.config import (  # noqa: F401  (re-exported: the engine's public names)
    FINALS,
    OCTAVE_RESIZES,
    OCTAVE_ROUNDINGS,
    OPTIMIZERS,
    PRECISIONS,
    RenderConfig,
    RenderResult,
)
from jaxvis.optvis.objectives import Context, Objective, as_objective
from jaxvis.optvis.param import ImageParam, image_param, init_uniform
from jaxvis.optvis.sharding import batch_shardings

__all__ = [
    "OPTIMIZERS", "PRECISIONS", "RenderConfig", "RenderResult", "auto_batch", "box_blur", "check_objective",
    "make_param", "render", "render_rng", "step_bytes_per_image", "unit_keys",
]

_INIT_FOLD = 2**31 - 1  # fold-in constant separating a unit's init key from its per-step keys


def make_param(config: RenderConfig, spec: ModelSpec | None = None) -> ImageParam:
    """The parameterization; with `spec`, its images are display images of `config.space`
    (without `spec`, or in the identity space, they are the optimized tensor's own images)."""
    param = image_param(
        config.param, decorrelate=config.decorrelate, valid_range=config.valid_range, init_std=config.init_std
    )
    if spec is None or space.is_identity(config.space, config.display_range):
        return param
    to_display, from_display = space.space_maps(config.space, config.display_range, spec)
    return ImageParam(param.init, lambda params: to_display(param.to_image(params)),
                      lambda images: param.from_image(from_display(images)))


def _regularized(config: RenderConfig) -> bool:
    return config.lp_norm_weight > 0 or config.tv_weight > 0


def _penalties(config: RenderConfig, tensor):
    """keras-vis's weighted regularizers on the optimized tensor, per item [B]."""
    total = jnp.zeros(tensor.shape[0], jnp.float32)
    if config.lp_norm_weight > 0:
        total = total + config.lp_norm_weight * classic.lp_norm(tensor, config.lp_norm_p)
    if config.tv_weight > 0:
        total = total + config.tv_weight * classic.total_variation(tensor, config.tv_beta)
    return total


def unit_keys(seed: int, units):
    """One PRNG key per unit: fold_in(PRNGKey(seed), unit)."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda unit: jax.random.fold_in(base, unit))(jnp.asarray(units, jnp.uint32))


def _activations(spec: ModelSpec, variables, images, layers, redirect, precision: str = "f32"):
    """Activations (float32) of `layers`, softmax layers before their softmax; the network runs in `precision`."""
    dtype = PRECISIONS[precision]
    x = spec.preprocess(images)
    if dtype != jnp.float32:
        variables = jax.tree.map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, variables)
        x = x.astype(dtype)
    scored = {layer: spec.scored(layer) for layer in layers}  # a softmax layer is optimized before its softmax
    acts = spec.module.apply(variables, x, outputs=tuple(scored.values()), relu_redirect=redirect)
    return {layer: acts[name].astype(jnp.float32) for layer, name in scored.items()}


def render_rng():
    """The context the render programs are traced and called in: threefry in its original form.

    JAX's default (partitionable) threefry costs XLA's CPU compiler much more for the same step speed
    (benchmarks/README.md). Each filter draws from its own key under vmap, so a sharded batch never
    needs the partitionable form. The option is part of a program's cache key: callers of the
    compiled pieces below enter this context too, or they trace (and draw) differently."""
    return jax.threefry_partitionable(False)


# --- the compiled pieces: spec, objective and config are static (hashed by identity / value) ----

@jax.jit(static_argnames=("spec", "config", "size"))
def _init_params(keys, *, spec: ModelSpec, config: RenderConfig, size: int):
    param = make_param(config, spec)
    init_keys = jax.vmap(lambda key: jax.random.fold_in(key, _INIT_FOLD))(keys)
    if config.init_range is not None:
        low, high = config.init_range
        one = lambda key: init_uniform(key, 1, size, size, spec.channels, param=param, low=low, high=high)
    else:
        one = lambda key: param.init(key, 1, size, size, spec.channels)
    return jax.tree.map(lambda leaf: leaf[:, 0], jax.vmap(one)(init_keys))


@jax.jit(static_argnames=("spec", "objective", "config", "first_step", "upscale_to", "finish"))
def _optimize_octave(variables, params, units, keys, *, first_step: int, spec: ModelSpec, objective: Objective,
                     config: RenderConfig, upscale_to: int | None = None, finish: bool = False):
    """`config.steps` steps of gradient ascent on a batch, inside `lax.scan`; returns the new params.

    `upscale_to`: first resize the params' images to this size (`_upscale`); `finish`: return
    `_finish`'s (images, scores) instead of params. Both run in the octave's own program, which
    saves a program launch each, with its fresh buffers.

    The steps that use lucid's redirected ReLU gradient and those that use the true one run as two
    scans with the gradient mode a compile-time constant: a traced mode puts a conditional in every
    ReLU's backward pass, which is slower per step on CPU. `first_step` is static, which
    costs no extra compilation: each octave has its own image size anyway."""
    if upscale_to is not None:
        params = _upscale(params, config=config, spec=spec, size=upscale_to)
    param = make_param(config, spec)
    transform = transforms.NAMED[config.transforms]
    optimizer = OPTIMIZERS[config.optimizer](config.learning_rate, config.weight_decay)
    layers = tuple(sorted(objective.layers))

    def loss(params, step, redirect):
        images = param.to_image(params)
        step_keys = jax.vmap(lambda key: jax.random.fold_in(key, step))(keys)
        seen = transforms.apply_batch(transform, step_keys, images)
        scores = objective(
            Context(_activations(spec, variables, seen, layers, redirect, config.precision), images, units)
        )
        if _regularized(config):
            scores = scores - _penalties(config, make_param(config).to_image(params))
        return -jnp.sum(scores), scores

    def steps_with(redirect):
        def step_fn(carry, step):
            params, opt_state = carry[:2]
            if config.roll_jitter:  # keras-vis's Jitter moves the optimized image itself
                roll_keys = jax.vmap(lambda key: jax.random.fold_in(jax.random.fold_in(key, step), _INIT_FOLD))(keys)
                params = classic.roll(roll_keys, params, config.roll_jitter)
            grads, scores = jax.grad(loss, has_aux=True)(params, step, redirect)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if not config.keep_best:
                return (params, opt_state), None
            best_loss, best = carry[2:]
            better = -scores < best_loss  # keras-vis keeps the image after the step whose loss was lowest
            pick = lambda new, old: jnp.where(better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
            return (params, opt_state, jnp.where(better, -scores, best_loss), jax.tree.map(pick, params, best)), None

        return step_fn

    redirected = min(max(config.relu_redirect_steps - first_step, 0), config.steps)
    carry = (params, optimizer.init(params))
    if config.keep_best:
        carry = carry + (jnp.full(units.shape, jnp.inf, jnp.float32), params)
    for redirect, start, stop in ((REDIRECT, 0, redirected), (TRUE_GRADIENT, redirected, config.steps)):
        if stop > start:
            steps = first_step + jnp.arange(start, stop, dtype=jnp.int32)
            carry, _ = jax.lax.scan(steps_with(redirect), carry, steps)
    params = carry[3] if config.keep_best else carry[0]
    if finish:
        return _finish(variables, params, units, spec=spec, objective=objective, config=config)
    return params


def box_blur(images, kernel_size: int):
    """Mean over a kernel_size x kernel_size window, reflect borders (cv2.blur for odd sizes)."""
    kernel = jnp.full((kernel_size,), 1.0 / kernel_size, jnp.float32)
    return jax.vmap(lambda image: transforms._separable_filter(image, kernel))(images)


def _upscale(params, *, config: RenderConfig, spec: ModelSpec, size: int):
    """The images of `params`, resized (bicubic) to `size`, optionally blurred, as new params
    (traced into `_optimize_octave`'s program, as `_finish` is)."""
    param = make_param(config, spec)
    images = param.to_image(params)
    if config.octave_resize == "opencv":
        images = classic.resize_opencv(images, size, size)
    else:
        images = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bicubic")
    if config.octave_blur > 1:
        images = box_blur(images, config.octave_blur)
    return param.from_image(jnp.clip(images, 0.0, 1.0) if config.valid_range == "sigmoid" else images)


def _finish(variables, params, units, *, spec: ModelSpec, objective: Objective, config: RenderConfig):
    """Final images (clipped to [0, 1], or keras-vis's standardized tensor) and the objective's
    score on them (no transforms)."""
    if config.final == "standardize":
        images = classic.standardize(make_param(config).to_image(params))
    else:
        images = jnp.clip(make_param(config, spec).to_image(params), 0.0, 1.0)
    acts = _activations(spec, variables, images, tuple(sorted(objective.layers)), TRUE_GRADIENT, config.precision)
    return images, objective(Context(acts, images, units))


# --- the loop policy ---------------------------------------------------------------------------

def check_objective(spec: ModelSpec, objective: Objective, units: np.ndarray, size: int) -> None:
    """Unknown layers and out-of-range unit indices become clear errors before compiling."""
    if not objective.layers:
        raise JaxvisError("the objective reads no layer; add a channel/neuron/layer term")
    spec.check_layers(sorted(objective.layers))
    for layer, index in objective.indexed:
        count = spec.channel_count(layer, (size, size))
        indices = units if index is None else np.asarray(index)
        if indices.size and (indices.min() < 0 or indices.max() >= count):
            bad = int(indices.max() if indices.max() >= count else indices.min())
            raise JaxvisError(
                f"index {bad} is out of range for layer {layer!r}, which has {count} channels (0-{count - 1})"
            )


def render(
    spec: ModelSpec,
    objective,
    units: Sequence[int] | None = None,
    config: RenderConfig = RenderConfig(),
    *,
    progress: bool = True,
    on_chunk: Callable[[RenderResult], None] | None = None,
    devices=None,
) -> RenderResult:
    """Render one image per unit by batched gradient ascent on `objective`.

    Args:
      spec: the model (`jaxvis.load_model(...)`).
      objective: an `Objective`, or a string: `"layer"` (the channel given by each unit),
        `"layer:3"` (one channel for every image); objectives compose with + and * (`jaxvis.optvis.objectives`).
      units: one image is rendered per unit; an objective term without its own index reads the
        unit as its channel (class, neuron). Default: `range(config.batch)`.
      config: everything else that decides the pixels (`RenderConfig`); validated first.
      progress: show a tqdm bar per chunk and octave.
      on_chunk: called with each finished chunk's `RenderResult` (e.g. to save it at once).
      devices: the local devices each chunk is sharded over (default: all of them).

    Returns:
      A `RenderResult`: `images[N, H, W, C]` float32 in [0, 1] at `config.size`, `scores[N]` (the
      objective on the final, untransformed images) and `units[N]`.

    Raises:
      JaxvisError: an unknown layer, a unit out of range, or an invalid config.

    Example:
      >>> spec = jaxvis.load_model("mobilenet_v2")
      >>> result = render(spec, "features.10", range(16), RenderConfig(steps=64))
    """
    config.validate()
    objective = as_objective(objective)
    units = np.arange(config.batch) if units is None else np.asarray(units, np.int64).reshape(-1)
    if units.size == 0:
        raise JaxvisError("no units to render")
    sizes = config.octave_sizes()
    check_objective(spec, objective, units, sizes[0])
    chunks = [units[i : i + config.batch] for i in range(0, len(units), config.batch)]
    shardings = batch_shardings(config.batch, devices)
    variables = spec.variables if shardings is None else jax.device_put(spec.variables, shardings[1])
    results = []
    with tqdm(total=len(chunks) * len(sizes), desc=f"render {objective.description}", unit="octave",
              disable=not progress, leave=False) as bar:
        for chunk in chunks:
            result = _render_chunk(spec, variables, objective, chunk, config, sizes, bar, shardings)
            if on_chunk is not None:
                on_chunk(result)
            results.append(result)
    return RenderResult(
        images=np.concatenate([r.images for r in results]),
        scores=np.concatenate([r.scores for r in results]),
        units=units,
    )


def _render_chunk(spec, variables, objective, chunk, config, sizes, bar, shardings) -> RenderResult:
    count = len(chunk)
    # Pad the last chunk to the batch size (repeating its last unit) so it reuses the compilation.
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], config.batch - count)]) if count < config.batch else chunk
    units = jnp.asarray(padded, jnp.int32)
    keys = unit_keys(config.seed, padded)
    if shardings is not None:
        units, keys = jax.device_put(units, shardings[0]), jax.device_put(keys, shardings[0])
    with render_rng():
        state = _init_params(keys, spec=spec, config=config, size=sizes[0])
        for octave, size in enumerate(sizes):
            state = _optimize_octave(variables, state, units, keys, first_step=octave * config.steps,
                                     spec=spec, objective=objective, config=config,
                                     upscale_to=size if octave else None, finish=octave == len(sizes) - 1)
            bar.update(1)
    images, scores = state  # the last octave finishes: final images and their scores
    return RenderResult(np.asarray(images)[:count], np.asarray(scores)[:count], chunk)


def auto_batch(spec: ModelSpec, objective, config: RenderConfig, unit_count: int, *, devices=None,
               memory_fraction: float = 0.5, cpu_batch: int = 16, max_batch: int = 512) -> int:
    """A chunk size for this device: on accelerators, as many images as fit in `memory_fraction`
    of device memory (measured from the compiled step's memory analysis at the final octave size);
    on CPU, where the work is compute-bound and per-image cost does not fall with batch size,
    `cpu_batch`. Always a multiple of the device count and no larger than needed for the units."""
    devices = list(devices) if devices is not None else jax.local_devices()
    count = len(devices)
    stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
    limit = (stats or {}).get("bytes_limit")
    if not limit:
        batch = cpu_batch
    else:
        per_image = step_bytes_per_image(spec, as_objective(objective), config)
        batch = int(memory_fraction * limit * count // max(per_image, 1))
    needed = -(-unit_count // count) * count
    batch = max(count, min(batch, max_batch, needed))
    return batch - batch % count


def step_bytes_per_image(spec: ModelSpec, objective: Objective, config: RenderConfig, probe_batch: int = 4) -> int:
    """Device memory one image needs in an optimization step at the final size (XLA's own figure)."""
    size = config.octave_sizes()[-1]
    probe = dataclasses.replace(config, batch=probe_batch, steps=1)
    params = jax.eval_shape(lambda keys: _init_params(keys, spec=spec, config=probe, size=size),
                            jax.ShapeDtypeStruct((probe_batch, 2), jnp.uint32))
    lowered = _optimize_octave.lower(spec.variables, params, jnp.zeros(probe_batch, jnp.int32),
                                     jnp.zeros((probe_batch, 2), jnp.uint32), first_step=config.relu_redirect_steps,
                                     spec=spec, objective=objective, config=probe)
    analysis = lowered.compile().memory_analysis()
    total = analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
    return int(total // probe_batch)

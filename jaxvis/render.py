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
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxvis import classic, space, transforms
from jaxvis.distributed import batch_shardings
from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.activations import REDIRECT, TRUE as TRUE_GRADIENT
from jaxvis.models.spec import ModelSpec
from jaxvis.objectives import Context, Objective, as_objective
from jaxvis.param import SPATIAL, VALID_RANGES, ImageParam, image_param, init_uniform
from jaxvis.param.spatial import is_7_smooth

_INIT_FOLD = 2**31 - 1  # fold-in constant separating a unit's init key from its per-step keys


def _fft_friendly(size: float) -> int:
    """The even size >= 8 nearest to `size` with no prime factor above 7 (ties: the larger)."""
    candidates = [n for n in range(8, 2 * int(size) + 16, 2) if is_7_smooth(n)]
    return min(candidates, key=lambda n: (abs(n - size), -n))


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Everything that decides the pixels (with the model, the objective and the units).

    Octaves: the image is optimized at `octave_sizes()` in turn, each `steps` steps, upscaled
    between octaves (`octave_resize`: "bicubic" is `jax.image.resize`'s, "opencv" is
    `cv2.INTER_CUBIC`'s; then an optional box blur of `octave_blur` pixels). `octave_rounding`:
    "even" rounds each size to an even number, "floor" makes each size `int(previous * scale)`
    from `start_size` (FilterVisualizer's).

    Space (`jaxvis.space`): `space="display"` optimizes the display image scaled to
    `display_range`; `space="input"` optimizes the model's input (after `spec.preprocess`; the
    display range is then unused).
    Learning rate, weight decay and the regularizer weights are in that tensor's units;
    `valid_range="none"` leaves the tensor unconstrained (clipped only in the final image).

    keras-vis's pieces (`jaxvis.classic`): `optimizer="keras-vis"` (its normalized RMSprop step),
    `lp_norm_weight` / `tv_weight` (its LPNorm and TotalVariation on the optimized tensor, with
    `lp_norm_p` and `tv_beta`), `roll_jitter` (its `Jitter`: the image itself is rolled before each
    step; pixel parameterization only), `keep_best` (return each item's image after the step whose
    loss was lowest), `final="standardize"` (its `deprocess_input`; "clip" clips to [0, 1]).

    Named recipes: `RenderConfig.preset(name, **overrides)` (`jaxvis.presets`: "lucid", this
    class's defaults; "fastai"; "keras-vis"); `preset_name` records which one a config came from
    (the other fields hold any overrides).
    """

    size: int = 128
    steps: int = 64
    octaves: int = 1
    octave_scale: float = 1.2
    start_size: int | None = None
    octave_blur: int = 0
    param: str = "fft"
    decorrelate: bool = True
    valid_range: str = "sigmoid"
    init_std: float = 0.01
    init_range: tuple[float, float] | None = None
    transforms: str = "standard"
    optimizer: str = "adam"
    learning_rate: float = 0.05
    weight_decay: float = 0.0
    relu_redirect_steps: int = 16
    batch: int = 16
    seed: int = 0
    precision: str = "f32"
    space: str = "display"
    display_range: tuple[float, float] = (0.0, 1.0)
    octave_rounding: str = "even"
    octave_resize: str = "bicubic"
    roll_jitter: int = 0
    lp_norm_weight: float = 0.0
    lp_norm_p: float = 6.0
    tv_weight: float = 0.0
    tv_beta: float = 2.0
    keep_best: bool = False
    final: str = "clip"
    preset_name: str = "lucid"

    @classmethod
    def preset(cls, name: str, **overrides) -> "RenderConfig":
        """The named recipe (`jaxvis.presets.PRESETS`) with `overrides` replacing its fields."""
        from jaxvis.presets import preset

        return preset(name, **overrides)

    def octave_sizes(self) -> tuple[int, ...]:
        """Image size of each octave, ending at `size` (or starting at `start_size`), even numbers.

        With the FFT parameterization, a computed size is the nearest even size whose prime factors
        are all at most 7: a 2-D FFT of a size with a large prime factor is several times slower
        (the default's 128 / 1.2 = 106.7 would be 106 = 2 x 53: irfft2 fwd + bwd 7.0 ms per step
        for 16 images, against 2-3 ms at 108). `size` itself is kept as given."""
        if self.octave_rounding == "floor" and self.start_size is not None:
            sizes = [self.start_size]
            for _ in range(self.octaves - 1):
                sizes.append(int(sizes[-1] * self.octave_scale))
            return tuple(sizes)
        if self.start_size is not None:
            sizes = [self.start_size * self.octave_scale**i for i in range(self.octaves)]
        else:
            sizes = [self.size / self.octave_scale ** (self.octaves - 1 - i) for i in range(self.octaves)]
        rounded = [max(8, 2 * int(round(s / 2))) for s in sizes]
        if self.param == "fft":
            rounded = [size if size == self.size and self.start_size is None else _fft_friendly(exact)
                       for size, exact in zip(rounded, sizes)]
        return tuple(rounded)

    def validate(self) -> "RenderConfig":
        def require(ok, message):
            if not ok:
                raise JaxvisError(message)

        require(isinstance(self.size, int) and 8 <= self.size <= 4096, f"size must be an integer in [8, 4096], got {self.size}")
        require(self.param != "fft" or self.size % 2 == 0 or self.start_size is not None,
                f"size must be even for the fft parameterization, got {self.size}")
        require(isinstance(self.steps, int) and 1 <= self.steps <= 100_000, f"steps must be a positive integer, got {self.steps}")
        require(isinstance(self.octaves, int) and 1 <= self.octaves <= 64, f"octaves must be in [1, 64], got {self.octaves}")
        require(self.octave_scale >= 1.0, f"octave scale must be >= 1, got {self.octave_scale}")
        require(self.octave_blur >= 0 and (self.octave_blur == 0 or self.octave_blur % 2 == 1),
                f"octave blur must be 0 or an odd kernel size, got {self.octave_blur}")
        require(isinstance(self.batch, int) and self.batch >= 1, f"batch must be a positive integer, got {self.batch}")
        require(self.learning_rate > 0, f"learning rate must be positive, got {self.learning_rate}")
        require(self.init_range is None or 0 <= self.init_range[0] <= self.init_range[1] <= 1,
                f"init range must lie in [0, 1], got {self.init_range}")
        if self.param not in SPATIAL:
            raise unknown_name("parameterization", self.param, SPATIAL)
        if self.valid_range not in VALID_RANGES:
            raise unknown_name("valid range", self.valid_range, VALID_RANGES)
        if self.transforms not in transforms.NAMED:
            raise unknown_name("transform set", self.transforms, transforms.NAMED)
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        if self.precision not in PRECISIONS:
            raise unknown_name("precision", self.precision, PRECISIONS)
        if self.space not in space.SPACES:
            raise unknown_name("parameter space", self.space, space.SPACES)
        require(len(self.display_range) == 2 and self.display_range[1] > self.display_range[0],
                f"display range must be (low, high) with high > low, got {self.display_range}")
        if self.octave_rounding not in OCTAVE_ROUNDINGS:
            raise unknown_name("octave rounding", self.octave_rounding, OCTAVE_ROUNDINGS)
        require(self.octave_rounding == "even" or self.start_size is not None,
                "octave_rounding='floor' grows sizes from start_size; give start_size")
        if self.octave_resize not in OCTAVE_RESIZES:
            raise unknown_name("octave resize", self.octave_resize, OCTAVE_RESIZES)
        if self.final not in FINALS:
            raise unknown_name("final image", self.final, FINALS)
        require(isinstance(self.roll_jitter, int) and self.roll_jitter >= 0, f"roll jitter must be an integer >= 0, got {self.roll_jitter}")
        require(self.roll_jitter == 0 or self.param == "pixel", "roll_jitter rolls pixels: it needs param='pixel'")
        require(self.lp_norm_weight >= 0 and self.tv_weight >= 0, "regularizer weights must be >= 0")
        require(self.lp_norm_p >= 1, f"lp_norm_p must be >= 1, got {self.lp_norm_p}")
        return self


@dataclasses.dataclass(frozen=True)
class RenderResult:
    images: np.ndarray  # [N, H, W, C] float32 in [0, 1]
    scores: np.ndarray  # [N] the objective on the final, untransformed images
    units: np.ndarray  # [N] int

    def _repr_png_(self) -> bytes:  # notebook display (jaxvis.display)
        from jaxvis import display

        return display.png(self)

    def _repr_html_(self) -> str:
        from jaxvis import display

        return display.html(self)

    def show(self, **kwargs):
        """Draw the result with matplotlib (`jaxvis.display.show`); returns the Axes."""
        from jaxvis import display

        return display.show(self, **kwargs)


OPTIMIZERS = {
    # Weight decay is added to the gradient before the update, as torch.optim.Adam does (seed 000).
    "adam": lambda lr, wd: optax.chain(optax.add_decayed_weights(wd), optax.adam(lr)),
    "sgd": lambda lr, wd: optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr)),
}


OPTIMIZERS["keras-vis"] = classic.normalized_rmsprop  # its gradient normalization and RMSprop (jaxvis.classic)

PRECISIONS = {"f32": jnp.float32, "bf16": jnp.bfloat16}
OCTAVE_ROUNDINGS = ("even", "floor")
OCTAVE_RESIZES = ("bicubic", "opencv")
FINALS = ("clip", "standardize")


def make_param(config: RenderConfig, spec: ModelSpec | None = None) -> ImageParam:
    """The parameterization; with `spec`, its images are display images of `config.space`
    (without `spec`, or in the identity space, they are the optimized tensor's own images)."""
    param = image_param(config.param, decorrelate=config.decorrelate, valid_range=config.valid_range, init_std=config.init_std)
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
    """Activations (float32) of `layers`; the network itself runs in `precision`."""
    dtype = PRECISIONS[precision]
    x = spec.preprocess(images)
    if dtype != jnp.float32:
        variables = jax.tree.map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, variables)
        x = x.astype(dtype)
    acts = spec.module.apply(variables, x, outputs=layers, relu_redirect=redirect)
    return {name: act.astype(jnp.float32) for name, act in acts.items()}


# --- the compiled pieces: spec, objective and config are static (hashed by identity / value) ----

@jax.jit(static_argnames=("spec", "config", "size"))
def _init_params(keys, *, spec: ModelSpec, config: RenderConfig, size: int):
    param = make_param(config, spec)
    init_keys = jax.vmap(lambda key: jax.random.fold_in(key, _INIT_FOLD))(keys)
    if config.init_range is not None:
        low, high = config.init_range
        one = lambda key: init_uniform(param, key, 1, size, size, spec.channels, low, high)
    else:
        one = lambda key: param.init(key, 1, size, size, spec.channels)
    return jax.tree.map(lambda leaf: leaf[:, 0], jax.vmap(one)(init_keys))


@jax.jit(static_argnames=("spec", "objective", "config", "first_step", "upscale_to", "finish"))
def _optimize_octave(variables, params, units, keys, *, first_step: int, spec: ModelSpec, objective: Objective,
                     config: RenderConfig, upscale_to: int | None = None, finish: bool = False):
    """`config.steps` steps of gradient ascent on a batch, inside `lax.scan`; returns the new params.

    `upscale_to`: first resize the params' images to this size (`_upscale`); `finish`: return
    `_finish`'s (images, scores) instead of params. Both run in the octave's own program, which
    saves a program launch each, with its fresh buffers (measured 25-37 ms per chunk for the two, CPU).

    The steps that use lucid's redirected ReLU gradient and those that use the true one run as two
    scans with the gradient mode a compile-time constant: a traced mode puts a conditional in every
    ReLU's backward pass, which measured ~20% slower per step on CPU. `first_step` is static, which
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
        scores = objective(Context(_activations(spec, variables, seen, layers, redirect, config.precision), images, units))
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
            raise JaxvisError(f"index {bad} is out of range for layer {layer!r}, which has {count} channels (0-{count - 1})")


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
    """Render one image per unit: maximize `objective` (channel `unit` where it reads the batch's
    units) by batched gradient ascent. `on_chunk` receives each finished chunk's result.
    `devices`: the local devices to shard each chunk over (default: all of them)."""
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

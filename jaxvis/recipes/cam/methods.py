"""Class-activation maps and gradient attributions (keras-vis `visualize_cam` and its successors).

Contract: `cam(spec, images, classes, config)` takes display images `[B, H, W, C]` in [0, 1] (one
size) and class indices (`[K]` for every image, or `[B, K]`), runs ONE jitted program for the whole
batch and returns a `CamResult` with, for every (image, class) pair, a heat map `[B, K, H, W]` in
[0, 1] at the images' size, the method's raw output and the class score. The class score is always
the logit of `spec.logits_layer` (before any softmax: keras-vis swaps softmax for linear).

Methods (`CamConfig.method`):

* `gradcam`: `relu(sum_c alpha_c A_c)`, `alpha_c` = the spatial mean of `d logit / d A_c`, A the
  activation of the CAM layer (default: the last spatial layer before the logits, `features.18` for
  mobilenet_v2). `backprop_modifier` (keras-vis: None, 'guided', 'relu') changes every ReLU's
  gradient on the way from the logit down to A; `visualize_cam` is this method.
* `gradcam++`: Chattopadhay et al.'s weights `sum_ij relu(g) g^2 / (2 g^2 + sum_ab A g^3)`
  (0 where the denominator is 0).
* `scorecam`: each channel of A, upsampled to the image and min-max normalized, masks the model
  input; the weights are the softmax over channels of the masked inputs' logits (pytorch-grad-cam).
  One forward pass per channel: costly for wide layers (1280 for mobilenet_v2).
* `saliency`: `max_c |d logit / d image|` (keras-vis `visualize_saliency`; `backprop_modifier` applies).
* `smoothgrad`: the gradient averaged over `smooth_samples` noisy copies of the image (Gaussian,
  std `smooth_noise` in display units, i.e. as a fraction of [0, 1]), then as saliency.
* `guided`: guided backprop (every ReLU passes only positive gradients through active units).
* `guided_gradcam`: the guided gradient times the upsampled Grad-CAM map.

Raw outputs (`CamResult.raw`): for the CAM methods the map at the layer's resolution `[B, K, h, w]`
before normalization (after the ReLU); for the gradient methods the gradient (or product) with
respect to the display image `[B, K, H, W, C]`. Heat maps: CAM maps are upsampled bilinearly and
min-max normalized per map; gradient maps are `max_c |g|` divided by their 99th percentile and
clipped to 1 (else a few pixels take the whole scale). An all-zero map (no positive evidence)
stays zero.

Gradients with respect to an intermediate layer (Grad-CAM) need no support from the model: the
model's forward pass is traced to a jaxpr once per compilation and re-evaluated with a zero
perturbation added to the CAM layer's value wherever it is used, so `d logit / d perturbation` is
exactly `d logit / d A` (`_probed_forward`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.models.activations import GUIDED, RECTIFIED, TRUE
from jaxvis.models.spec import ModelSpec, check_image_batch

__all__ = ["CAM_METHODS", "CamConfig", "CamResult", "GRADIENT_METHODS", "METHODS", "MODIFIERS", "cam", "check_classes",
           "class_label", "default_cam_layer", "top_classes", "visualize_cam"]

CAM_METHODS = ("gradcam", "gradcam++", "scorecam")
GRADIENT_METHODS = ("saliency", "smoothgrad", "guided", "guided_gradcam")
METHODS = CAM_METHODS + GRADIENT_METHODS
MODIFIERS = {None: TRUE, "guided": GUIDED, "relu": RECTIFIED}
_EPS = 1e-7
GRADIENT_PERCENTILE = 99.0  # gradient heat maps saturate above this percentile (captum's outlier_perc=1)


@dataclasses.dataclass(frozen=True)
class CamConfig:
    """How to compute the maps (with the model, the images and the classes).

    Attributes:
      method: one of `METHODS`.
      layer: the CAM layer (Grad-CAM, Grad-CAM++, Score-CAM, guided Grad-CAM); None: `default_cam_layer`.
      backprop_modifier: keras-vis's None, 'guided' or 'relu' (deconvnet) ReLU gradient, for
        gradcam, gradcam++ and saliency (`guided` and `guided_gradcam` always use 'guided').
      smooth_samples: SmoothGrad's number of noisy copies.
      smooth_noise: SmoothGrad's noise std, in display units (the paper's 10-20% of the range).
      scorecam_batch: masked images per forward pass in Score-CAM.
      seed: SmoothGrad's noise.
    """

    method: str = "gradcam"
    layer: str | None = None
    backprop_modifier: str | None = None
    smooth_samples: int = 25
    smooth_noise: float = 0.15
    scorecam_batch: int = 32
    seed: int = 0

    def validate(self) -> CamConfig:
        if self.method not in METHODS:
            raise unknown_name("CAM method", self.method, METHODS)
        if self.backprop_modifier not in MODIFIERS:
            raise unknown_name("backprop modifier", str(self.backprop_modifier), ["None", "guided", "relu"])
        if not isinstance(self.smooth_samples, int) or not 1 <= self.smooth_samples <= 10_000:
            raise JaxvisError(f"smooth samples must be an integer in [1, 10000], got {self.smooth_samples}")
        if not np.isfinite(self.smooth_noise) or self.smooth_noise < 0:
            raise JaxvisError(f"smooth noise must be a number >= 0, got {self.smooth_noise}")
        if not isinstance(self.scorecam_batch, int) or self.scorecam_batch < 1:
            raise JaxvisError(f"Score-CAM batch must be a positive integer, got {self.scorecam_batch}")
        return self


@dataclasses.dataclass(frozen=True)
class CamResult:
    heatmaps: np.ndarray  # [B, K, H, W] float32 in [0, 1]
    raw: np.ndarray  # CAM methods: [B, K, h, w]; gradient methods: [B, K, H, W, C]
    scores: np.ndarray  # [B, K] the class logits of the unperturbed images
    classes: np.ndarray  # [B, K] int
    method: str
    layer: str | None  # the CAM layer (None for pure gradient methods)


# --- where to look -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _spatial_layers(spec: ModelSpec) -> tuple[str, ...]:
    size = spec.input_shape[:2]
    return tuple(name for name, shape in spec.output_shapes(size).items() if len(shape) == 4)


def default_cam_layer(spec: ModelSpec) -> str:
    """The last layer with a spatial (NHWC) output before the logits layer (mobilenet_v2: features.18)."""
    logits = _logits_layer(spec)
    spatial = set(_spatial_layers(spec))
    before = spec.layer_names[: spec.layer_names.index(logits)]
    for name in reversed(before):
        if name in spatial:
            return name
    raise JaxvisError(f"{spec.name} has no spatial layer before {logits}; CAM needs a conv layer")


def _logits_layer(spec: ModelSpec) -> str:
    if not spec.logits_layer:
        raise JaxvisError(f"{spec.name} has no logits layer; class-activation maps need a classifier")
    return spec.logits_layer


def check_classes(spec: ModelSpec, classes, batch: int) -> np.ndarray:
    """Class indices as int [B, K], checked against the logits layer's width."""
    logits = _logits_layer(spec)
    try:
        array = np.asarray(classes)
    except Exception:  # noqa: BLE001
        raise JaxvisError(f"classes must be integers, got {classes!r}") from None
    if array.size == 0:
        raise JaxvisError("give at least one class index")
    if not np.issubdtype(array.dtype, np.integer):
        raise JaxvisError(f"class indices must be integers, got {array.dtype}")
    if array.ndim == 0:
        array = array[None]
    if array.ndim == 1:
        array = np.broadcast_to(array[None], (batch, array.size))
    if array.ndim != 2 or array.shape[0] != batch:
        raise JaxvisError(f"classes must be [K] or [batch, K] = [{batch}, K], got shape {array.shape}")
    count = spec.channel_count(logits)
    if array.min() < 0 or array.max() >= count:
        bad = int(array.max() if array.max() >= count else array.min())
        raise JaxvisError(f"class {bad} is out of range: {logits} has {count} classes (0-{count - 1})")
    return np.ascontiguousarray(array, np.int32)


# --- the probe: d logit / d (an intermediate activation) without the model's help ---------------

def _eval_with_probe(jaxpr, consts, args, probe, delta):
    """Evaluate `jaxpr` (as `jax.core.eval_jaxpr`) with `delta` added to the value of `probe`."""
    env = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    def write(v, value):
        env[v] = value + delta if v is probe else value

    for v, value in zip(jaxpr.constvars, consts):
        write(v, value)
    for v, value in zip(jaxpr.invars, args):
        write(v, value)
    for eqn in jaxpr.eqns:
        bound = eqn.primitive.get_bind_params(eqn.params)
        subfuns, params = bound if isinstance(bound, tuple) else ((), bound)  # jax < 0.7 returned (subfuns, params)
        with eqn.ctx.manager:
            out = eqn.primitive.bind(*subfuns, *map(read, eqn.invars), **params)
        for v, value in zip(eqn.outvars, out if eqn.primitive.multiple_results else [out]):
            write(v, value)
    return [read(v) for v in jaxpr.outvars]


def _probed_forward(spec: ModelSpec, layer: str, variables, x, mode):
    """`run(delta) -> (A + delta, logits)` for model inputs x, with `delta` added to the layer's
    activation A where the network uses it, and A's zero perturbation to start from."""
    logits = spec.scored(_logits_layer(spec))

    def forward(v, inputs, m):
        acts = spec.module.apply(v, inputs, outputs=(layer, logits), relu_redirect=m)
        return acts[layer], acts[logits]

    closed = jax.make_jaxpr(forward)(variables, x, mode)
    probe = closed.jaxpr.outvars[0]
    used = layer == logits or any(v is probe for eqn in closed.jaxpr.eqns for v in eqn.invars)
    if isinstance(probe, Literal) or any(v is probe for v in closed.jaxpr.invars) or not used:
        raise JaxvisError(
            f"cannot take class gradients at layer {layer!r} of {spec.name}: the logits do not read it directly"
        )
    args = jax.tree.leaves((variables, x, mode))
    zero = jnp.zeros(probe.aval.shape, probe.aval.dtype)
    return (lambda delta: tuple(_eval_with_probe(closed.jaxpr, closed.consts, args, probe, delta))), zero


# --- the compiled computation ------------------------------------------------------------------

def _onehots(classes, count: int, dtype):
    """[B, K] class indices -> cotangents [K, B, count]."""
    return jax.nn.one_hot(classes.T, count, dtype=dtype)


def _normalize_maps(maps):
    """Min-max normalize each map over its last two axes (an all-equal map becomes 0)."""
    low = maps.min(axis=(-2, -1), keepdims=True)
    high = maps.max(axis=(-2, -1), keepdims=True)
    return (maps - low) / jnp.maximum(high - low, _EPS) * (high > low)


def _gradient_heat(grads):
    """[..., H, W, C] gradients -> [..., H, W] maps: max_c |g| over its 99th percentile (or its
    maximum where that is 0), clipped to 1 -- a gradient map is a few bright pixels otherwise."""
    magnitude = jnp.abs(grads).max(axis=-1)
    flat = magnitude.reshape(magnitude.shape[:-2] + (-1,))
    top = jnp.percentile(flat, GRADIENT_PERCENTILE, axis=-1)[..., None, None]
    top = jnp.where(top > 0, top, magnitude.max(axis=(-2, -1), keepdims=True))
    return jnp.clip(magnitude / jnp.maximum(top, 1e-30), 0.0, 1.0) * (top > 0)


def _upsample(maps, height: int, width: int):
    """[..., h, w] -> [..., H, W], bilinear (half-pixel centres, as cv2.resize)."""
    return jax.image.resize(maps, maps.shape[:-2] + (height, width), "linear", antialias=False)


@jax.jit(static_argnames=("spec", "config", "layer"))
def _cam(variables, images, classes, key, *, spec: ModelSpec, config: CamConfig, layer: str | None):
    """Everything for a batch: heat maps [B,K,H,W], raw [B,K,...], logits of the classes [B,K]."""
    batch, height, width, _ = images.shape
    logits_layer = spec.scored(spec.logits_layer)
    modifier = jnp.float32(MODIFIERS[config.backprop_modifier])
    method = config.method
    x = spec.preprocess(images)

    def logits_of(inputs, mode):
        return spec.module.apply(variables, inputs, outputs=(logits_layer,), relu_redirect=mode)[logits_layer]

    plain_logits = logits_of(x, jnp.float32(TRUE))
    scores = jnp.take_along_axis(plain_logits, classes, axis=1)
    cotangents = _onehots(classes, plain_logits.shape[1], plain_logits.dtype)  # [K, B, N]

    def input_gradients(images01, mode):
        """d logit_k / d images01 for every class: [K, B, H, W, C]."""
        _, vjp = jax.vjp(lambda imgs: logits_of(spec.preprocess(imgs), mode), images01)
        return jax.vmap(lambda ct: vjp(ct)[0])(cotangents)

    def layer_gradients(mode):
        """(A [B,h,w,c], d logit_k / d A [K,B,h,w,c])."""
        run, zero = _probed_forward(spec, layer, variables, x, mode)
        (acts, _), vjp = jax.vjp(run, zero)
        grads = jax.vmap(lambda ct: vjp((jnp.zeros_like(acts), ct))[0])(cotangents)
        return acts, grads

    def gradcam(mode):
        acts, grads = layer_gradients(mode)
        weights = grads.mean(axis=(2, 3))  # [K, B, c]
        return jax.nn.relu(jnp.einsum("kbc,bhwc->kbhw", weights, acts))

    if method in ("gradcam", "guided_gradcam"):
        raw = gradcam(modifier if method == "gradcam" else jnp.float32(TRUE))
    elif method == "gradcam++":
        acts, grads = layer_gradients(modifier)
        g2 = grads**2
        g3 = g2 * grads
        total = acts.sum(axis=(1, 2))  # [B, c]
        # The paper's alpha, 0 where its denominator is 0. No epsilon in the denominator: late-layer
        # gradients are small, and a 1e-7 added there moved the maps from the paper's by 2e-3.
        denominator = 2 * g2 + total[None, :, None, None, :] * g3
        alpha = jnp.where(denominator != 0, g2 / jnp.where(denominator != 0, denominator, 1.0), 0.0)
        weights = (jax.nn.relu(grads) * alpha).sum(axis=(2, 3))  # [K, B, c]
        raw = jax.nn.relu(jnp.einsum("kbc,bhwc->kbhw", weights, acts))
    elif method == "scorecam":
        acts = spec.module.apply(variables, x, outputs=(layer,), relu_redirect=jnp.float32(TRUE))[layer]
        masks = _normalize_maps(_upsample(jnp.moveaxis(acts, -1, 1), height, width))  # [B, c, H, W]
        channels = masks.shape[1]
        chunk = min(config.scorecam_batch, channels)
        padded = -(-channels // chunk) * chunk
        masks_p = jnp.pad(masks, ((0, 0), (0, padded - channels), (0, 0), (0, 0)))
        masks_p = masks_p.reshape(batch, padded // chunk, chunk, height, width).swapaxes(0, 1)  # [n, B, chunk, H, W]

        def masked_scores(mask_chunk):
            masked = x[:, None] * mask_chunk[..., None]  # [B, chunk, H, W, C]
            out = logits_of(masked.reshape((-1,) + masked.shape[2:]), jnp.float32(TRUE)).reshape(batch, chunk, -1)
            return jnp.take_along_axis(out, classes[:, None, :], axis=2)  # [B, chunk, K]

        channel_scores = jax.lax.map(masked_scores, masks_p)  # [n, B, chunk, K]
        channel_scores = channel_scores.swapaxes(0, 1).reshape(batch, padded, -1)[:, :channels]  # [B, c, K]
        weights = jax.nn.softmax(channel_scores, axis=1)
        raw = jax.nn.relu(jnp.einsum("bck,bhwc->kbhw", weights, acts))
    elif method == "saliency":
        raw = input_gradients(images, modifier)
    elif method == "smoothgrad":
        def sample(total, index):
            noise = config.smooth_noise * jax.random.normal(jax.random.fold_in(key, index), images.shape, images.dtype)
            return total + input_gradients(images + noise, modifier), None

        zero = jnp.zeros((classes.shape[1],) + images.shape, images.dtype)
        total, _ = jax.lax.scan(sample, zero, jnp.arange(config.smooth_samples))
        raw = total / config.smooth_samples
    else:  # guided (and guided_gradcam below)
        raw = input_gradients(images, jnp.float32(GUIDED))

    if method in CAM_METHODS:
        heat = _normalize_maps(_upsample(raw, height, width))
    elif method == "guided_gradcam":
        cam_heat = _normalize_maps(_upsample(raw, height, width))  # [K, B, H, W]
        raw = input_gradients(images, jnp.float32(GUIDED)) * cam_heat[..., None]
        heat = _gradient_heat(raw)
    else:
        heat = _gradient_heat(raw)
    return jnp.swapaxes(heat, 0, 1), jnp.swapaxes(raw, 0, 1), scores


def cam(spec: ModelSpec, images, classes, config: CamConfig = CamConfig()) -> CamResult:
    """Heat maps for every image and class in one compiled program (see the module docstring).

    Args:
      spec: a classifier (`spec.logits_layer` set).
      images: display images [B, H, W, C] (or one [H, W, C]) in [0, 1], one size.
      classes: class indices, [K] for every image or [B, K].
      config: method, CAM layer, backprop modifier and method settings.

    Returns:
      `CamResult` (arrays with leading [B, K]).

    Example:
      >>> result = cam(spec, photos, [20, 379], CamConfig(method="gradcam++"))
      >>> picture = overlay(photos[0], result.heatmaps[0, 1])
    """
    config.validate()
    images = np.asarray(images)
    images = images.astype(np.float64 if images.dtype == np.float64 else np.float32)  # float64 only under jax x64
    if images.ndim == 3:
        images = images[None]
    check_image_batch(images, spec.channels)
    if not np.isfinite(images).all():
        raise JaxvisError("the images hold NaN or infinite values")
    classes = check_classes(spec, classes, images.shape[0])
    layer = None
    if config.method in CAM_METHODS + ("guided_gradcam",):
        layer = config.layer or default_cam_layer(spec)
        spec.check_layers([layer])
        if layer not in _spatial_layers(spec):
            raise JaxvisError(f"the CAM layer must have a spatial output [batch, h, w, c]; {layer!r} has not")
    key = jax.random.PRNGKey(config.seed)
    heat, raw, scores = _cam(
        spec.variables, jnp.asarray(images), jnp.asarray(classes), key, spec=spec, config=config, layer=layer
    )
    return CamResult(np.asarray(heat), np.asarray(raw), np.asarray(scores), classes, config.method, layer)


def visualize_cam(
    spec: ModelSpec, image, class_index: int, *, layer: str | None = None, backprop_modifier: str | None = None
) -> np.ndarray:
    """keras-vis's `visualize_cam(model, layer_idx, filter_indices, seed_input, penultimate_layer_idx,
    backprop_modifier)`: the Grad-CAM heat map [H, W] in [0, 1] of one image [H, W, C] and one class."""
    config = CamConfig(method="gradcam", layer=layer, backprop_modifier=backprop_modifier)
    return cam(spec, np.asarray(image, np.float32)[None], [int(class_index)], config).heatmaps[0, 0]


def class_label(spec: ModelSpec, index: int) -> str:
    names = spec.class_names
    return f"{index} {names[index]}" if names and index < len(names) else str(index)


def top_classes(spec: ModelSpec, images, k: int = 1) -> np.ndarray:
    """The k best classes of each image, [B, k]."""
    from jaxvis.recipes.features import _forward

    logits_layer = _logits_layer(spec)
    logits = _forward(spec.variables, jnp.asarray(images, jnp.float32), spec=spec, layers=(logits_layer,))[logits_layer]
    return np.argsort(-np.asarray(logits), axis=1, kind="stable")[:, :k].astype(np.int32)

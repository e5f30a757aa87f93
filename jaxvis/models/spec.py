"""What it takes to *use* a set of weights: the Flax module, its variables, preprocessing, names.

Contract for every model in jaxvis:
- `spec.module.apply(spec.variables, x, outputs=(...), relu_redirect=r)` takes `x[B,H,W,C]`
  already preprocessed (see `Preprocess`) and returns `{layer_name: activation}` for exactly the
  requested names, computing the network only as far as the last of them (so rendering
  `features.3` never pays for `features.18`). Layer names are the source framework's
  (`features.10`, `block3_conv3`). Activations are NHWC (conv) or [B, N] (dense), and each is what
  the source framework returns for that layer, softmax included. For a layer in
  `spec.softmax_layers` the value *before* its softmax is addressable too, as
  `<layer>/pre_softmax` (`spec.scored(layer)`): that is what class objectives and CAM optimize
  (keras-vis's swap of the softmax for a linear activation), because a softmax couples the classes.
- every ReLU / ReLU6 in the module goes through `jaxvis.models.activations` with `relu_redirect`.
- images shown to users are RGB (or gray / N-channel) in [0, 1]; `spec.preprocess` maps them to
  the model's input and `spec.preprocess.invert` maps back.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis.errors import JaxvisError, unknown_name

__all__ = [
    "KERAS_CAFFE",
    "KERAS_TF",
    "ModelSpec",
    "PREPROCESS_NAMES",
    "PRE_SOFTMAX",
    "RAW",
    "Preprocess",
    "TORCH_IMAGENET",
    "UNIT",
    "check_image_batch",
    "parse_preprocess",
]


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Maps display images (NHWC, values in [0, 1], RGB order) to the model's input.

    input = (images * scale)[..., channel order] - mean) / std, channel-wise.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0
    bgr: bool = False

    def __call__(self, images):
        x = images * self.scale
        if self.bgr:
            x = x[..., ::-1]
        return (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)

    def invert(self, x):
        """Model input back to display images (not clipped)."""
        images = x * jnp.asarray(self.std, x.dtype) + jnp.asarray(self.mean, x.dtype)
        if self.bgr:
            images = images[..., ::-1]
        return images / self.scale

    def input_range(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (low, high) of the model input that display values 0 and 1 map to."""
        zero = np.asarray(self(jnp.zeros((1, 1, 1, channels), jnp.float32)))[0, 0, 0]
        one = np.asarray(self(jnp.ones((1, 1, 1, channels), jnp.float32)))[0, 0, 0]
        return np.minimum(zero, one), np.maximum(zero, one)


PRE_SOFTMAX = "/pre_softmax"  # suffix of a softmax layer's pre-softmax value (see the module docstring)

TORCH_IMAGENET = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
KERAS_CAFFE = Preprocess(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), scale=255.0, bgr=True)
KERAS_TF = Preprocess(mean=(0.5,), std=(0.5,))  # x * 2 - 1
UNIT = Preprocess()  # identity: the model takes [0, 1] directly
RAW = Preprocess(scale=255.0)  # 0..255 pixels
# `--preprocess NAME`: the usual input conventions by name.
PREPROCESS_NAMES = {"unit": UNIT, "raw": RAW, "tf": KERAS_TF, "torch": TORCH_IMAGENET, "caffe": KERAS_CAFFE}


def parse_preprocess(text: str) -> Preprocess:
    """A `Preprocess` from a name (`PREPROCESS_NAMES`: unit, raw, tf, torch, caffe) or from its fields:
    `mean=0.485,0.456,0.406,std=0.229,0.224,0.225[,scale=255][,bgr]` (values after `key=` run up to
    the next key)."""
    text = str(text).strip()
    if text in PREPROCESS_NAMES:
        return PREPROCESS_NAMES[text]
    if "=" not in text and text != "bgr":
        raise unknown_name("preprocessing (a name, or mean=...,std=...[,scale=...][,bgr])", text, PREPROCESS_NAMES)
    fields: dict[str, list[float]] = {}
    bgr, key = False, None
    for token in (t.strip() for t in text.split(",")):
        if token == "bgr":
            bgr, key = True, None
            continue
        if "=" in token:
            key, _, token = token.partition("=")
            key = key.strip()
            if key not in ("mean", "std", "scale"):
                raise JaxvisError(f"preprocessing takes mean=, std=, scale= and bgr, not {key!r} (in {text!r})")
            fields[key] = []
        if key is None:
            raise JaxvisError(f"preprocessing {text!r}: value {token!r} belongs to no key")
        try:
            fields[key].append(float(token))
        except ValueError:
            raise JaxvisError(f"preprocessing {text!r}: {key} takes numbers, got {token!r}") from None
    if len(fields.get("scale", [1.0])) != 1:
        raise JaxvisError(f"preprocessing {text!r}: scale takes one number")
    if any(s == 0 for s in fields.get("std", [])):
        raise JaxvisError(f"preprocessing {text!r}: std must not be 0")
    return Preprocess(mean=tuple(fields.get("mean", [0.0])), std=tuple(fields.get("std", [1.0])),
                      scale=fields.get("scale", [1.0])[0], bgr=bgr)


@dataclasses.dataclass(frozen=True, eq=False)
class ModelSpec:
    """A loaded model and everything needed to visualize it.

    Attributes:
      name: a display name (zoo name or file name).
      module: the Flax module (see the module docstring for its call contract).
      variables: its variables pytree (params, batch_stats, ...).
      input_shape: the (H, W, C) the model was trained on; C is also the channel count of images.
      layer_names: every addressable layer, in execution order.
      preprocess: display images -> model input.
      logits_layer: the layer holding pre-softmax class scores, if the model classifies.
      class_names: names of the classes of `logits_layer`, if known.
      source: where the weights came from (file path or zoo tag).
      softmax_layers: the layers whose output is a softmax (see the module docstring).
      recipe: JSON-able data saying how to rebuild `module` without its weights, stored by
        `jaxvis.convert.jaxvis_file.save_converted`: `{"zoo": name, "options": {...}}` (the zoo
        builder's architecture options, never `weights`) or `{"keras_config": <Keras model config>}`
        (a generic Keras graph). Builders should set it; None means `{"zoo": name}`, with the module
        rebuilt from its class and fields.
    """

    name: str
    module: Any
    variables: Any
    input_shape: tuple[int, int, int]
    layer_names: tuple[str, ...]
    preprocess: Preprocess = UNIT
    logits_layer: str | None = None
    class_names: tuple[str, ...] | None = None
    source: str = ""
    recipe: Mapping[str, Any] | None = None
    softmax_layers: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return self.input_shape[2]

    def scored(self, layer: str) -> str:
        """The name to request for optimizing `layer`: its pre-softmax value for a softmax layer."""
        return layer + PRE_SOFTMAX if layer in self.softmax_layers else layer

    def check_layers(self, layers: Sequence[str]) -> tuple[str, ...]:
        """The layers, validated against `layer_names` (unknown ones get an error listing them)."""
        layers = tuple(layers)
        for layer in layers:
            if layer not in self.layer_names:
                raise unknown_name(f"layer of model {self.name}", layer, self.layer_names)
        return layers

    def activations(self, images, layers: Sequence[str], relu_redirect=0.0) -> dict:
        """Activations of `layers` for display images [B,H,W,C] in [0, 1] (preprocessing applied)."""
        return self.apply_preprocessed(self.preprocess(images), layers, relu_redirect)

    def apply_preprocessed(self, x, layers: Sequence[str], relu_redirect=0.0) -> dict:
        """Activations of `layers` for inputs already in the model's own range."""
        return self.module.apply(
            self.variables, x, outputs=tuple(layers), relu_redirect=jnp.asarray(relu_redirect, jnp.float32)
        )

    def output_shapes(self, size: tuple[int, int] | None = None) -> dict[str, tuple[int, ...]]:
        """Shape of every layer's activation for one image of `size` (default: input_shape)."""
        h, w = size or self.input_shape[:2]
        x = jax.ShapeDtypeStruct((1, h, w, self.channels), jnp.float32)
        shapes = jax.eval_shape(lambda v: self.apply_preprocessed(v, self.layer_names), x)
        return {name: tuple(shapes[name].shape) for name in self.layer_names}

    def channel_count(self, layer: str, size: tuple[int, int] | None = None) -> int:
        """Number of channels (last axis) of a layer's activation. Remembered per spec, layer and
        size: finding it traces the network (0.06-0.2 s for MobileNetV2), and every render checks it."""
        self.check_layers([layer])
        h, w = size or self.input_shape[:2]
        known = _CHANNEL_COUNTS.setdefault(self, {})
        if (layer, h, w) not in known:
            x = jax.ShapeDtypeStruct((1, h, w, self.channels), jnp.float32)
            known[layer, h, w] = int(jax.eval_shape(lambda v: self.apply_preprocessed(v, [layer]), x)[layer].shape[-1])
        return known[layer, h, w]


# ModelSpec -> {(layer, height, width): channels}; weak, so a cached spec's weights can be freed.
_CHANNEL_COUNTS: weakref.WeakKeyDictionary[ModelSpec, dict] = weakref.WeakKeyDictionary()


def check_image_batch(images, channels: int, what: str = "images", *, minimum: int = 1) -> None:
    """Raise a clear error unless `images` is [B, H, W, channels] with H, W >= `minimum`.

    Models call it on their input, recipes on the user's images, so a wrong shape is one line and
    never an error from deep inside JAX."""
    shape = tuple(np.shape(images))
    if len(shape) != 4 or shape[-1] != channels:
        raise JaxvisError(f"{what} must have shape [batch, height, width, {channels}], got {shape}")
    if min(shape[1:3]) < minimum:
        raise JaxvisError(f"{what} must be at least {minimum}x{minimum} pixels, got {shape[1]}x{shape[2]}")


"""Named render recipes: the seed posts' three systems as `RenderConfig`s.

Contract: `preset(name, **overrides)` returns `RenderConfig(**PRESETS[name], **overrides)` with
`preset_name=name`, validated; an unknown name or field is a `JaxvisError` naming the choices.
`RenderConfig.preset(name, **overrides)` is the same call. A preset fixes the recipe, not the run:
`batch`, `seed` and `precision` keep their defaults unless overridden.

lucid -- `RenderConfig()`'s defaults, unchanged: FFT parameterization with lucid's 1/f spectrum,
colour decorrelation and a sigmoid, lucid's standard transforms, Adam 0.05, redirected ReLU
gradient for the first 16 steps (lucid `optvis/param`, `optvis/transform.py`, `optvis/render.py`).

fastai -- fastai 0.7 `FilterVisualizer` (seed 000, `FilterVisualizer.__init__` / `visualize`):
  start_size=56 ............ `size=56`
  octaves=12 ............... `upscaling_steps=12` (the image is optimized 12 times)
  octave_scale=1.2 ......... `upscaling_factor=1.2`
  octave_rounding="floor" .. `sz = int(self.upscaling_factor * sz)`: 56, 67, 80, ..., 340, 408
  size=408 ................. the last of those sizes (`self.output` is taken before the upscale)
  steps=20 ................. `opt_steps=20`
  optimizer="adam", learning_rate=0.1, weight_decay=1e-6
                             `torch.optim.Adam([img_var], lr=lr, weight_decay=1e-6)`, `lr=0.1`;
                             torch's betas (0.9, 0.999) and eps 1e-8 are optax.adam's; the decay is
                             added to the gradient, as torch's Adam does; a fresh Adam per octave
  space="input" ............ `img_var = V(val_tfms(img)[None])`: the normalized model input is
                             the optimized tensor (`val_tfms.denorm` maps it back each octave)
  param="pixel", decorrelate=False, valid_range="none"
                             the tensor's pixels themselves, unconstrained
  init_range=(150/255, 180/255)
                             `np.uint8(np.random.uniform(150, 180, (sz, sz, 3)))/255` (jaxvis draws
                             the uniform without the uint8 step)
  octave_resize="opencv" ... `cv2.resize(img, (sz, sz), interpolation=cv2.INTER_CUBIC)` on the
                             denormalized, unclipped image
  octave_blur=5 ............ the post's call `visualize(..., blur=5)`: `cv2.blur(img, (blur, blur))`
                             after each upscale (the method's own default `blur=None` is
                             `octave_blur=0`, which leaves far more saturated, high-frequency pixels)
  transforms="none", relu_redirect_steps=0
                             no augmentation; the true ReLU gradient
  final="clip" ............. `plt.imsave(..., np.clip(self.output, 0, 1))`
  loss ..................... `-activations.features[0, filter].mean()` is jaxvis's channel objective

keras-vis -- `vis.visualization.visualize_activation` (raghakot/keras-vis, master):
  optimizer="keras-vis", learning_rate=1.0
                             `vis/optimizer.py`: `grads / (K.sqrt(K.mean(K.square(grads))) +
                             K.epsilon())` (`norm_grads=True`), then `_rmsprop(decay_rate=0.95)`:
                             `cache = 0.95 cache + 0.05 g^2`, `seed_input += -g / sqrt(cache +
                             K.epsilon())` -- no learning rate; K.epsilon() = 1e-7
  space="display", display_range=(0, 255)
                             `input_range=(0, 255)`: the optimized tensor spans 0-255 (keras-vis
                             optimizes `model.input` itself; for a Keras "caffe" model that is the
                             BGR, mean-subtracted image, which `space="input"` reproduces)
  init_range=(0.5 - 0.05*sqrt(3), 0.5 + 0.05*sqrt(3))
                             `utils.random_array(mean=np.mean(input_range), std=0.05 *
                             (input_range[1] - input_range[0]))`: uniform noise of mean 127.5 and
                             std 12.75 (keras-vis standardizes the sample to exactly that)
  param="pixel", decorrelate=False, valid_range="none"
                             `seed_input` itself, unconstrained
  lp_norm_weight=10, lp_norm_p=6
                             `lp_norm_weight=10`, `LPNorm(model.input, p=6.)`: `(sum |x|^6)^(1/6)`
                             divided by the element count (`regularizers.normalize`)
  tv_weight=10, tv_beta=2 .. `tv_weight=10`, `TotalVariation(model.input, beta=2.)`, same normalization
  loss ..................... `ActivationMaximization` (weight `act_max_weight=1`):
                             `-K.mean(layer_output[..., idx])`, jaxvis's channel objective; for the
                             logits layer jaxvis reads the scores before the softmax, which is the
                             linear-softmax swap the post makes (`utils.apply_modifications`)
  steps=200, octaves=1 ..... `max_iter=200` (the post passes 500 for class 20 and 300 for 379)
  roll_jitter=16 ........... the post's `input_modifiers=[Jitter(16)]`: `shift(img, offsets,
                             mode='wrap', order=0)` with offsets in [-16, 16], kept (no `post`)
  keep_best=True ........... `minimize` returns `best_input`: the input after the step whose
                             `overall_loss` was lowest
  final="standardize" ...... `utils.deprocess_input`: centre, std 0.1 around 0.5, clip to [0, 1],
                             then the uint8 cast of an integer `input_range`
  size=224 ................. the model's input size (VGG16's and MobileNetV2's 224)
  transforms="none", relu_redirect_steps=0
                             no other augmentation; the true ReLU gradient (`backprop_modifier=None`)
"""

from __future__ import annotations

import dataclasses
import math

from jaxvis.errors import JaxvisError, unknown_name

PRESETS: dict[str, dict] = {
    "lucid": {},
    "fastai": dict(
        start_size=56, octaves=12, octave_scale=1.2, octave_rounding="floor", size=408, steps=20,
        optimizer="adam", learning_rate=0.1, weight_decay=1e-6, space="input",
        param="pixel", decorrelate=False, valid_range="none", init_range=(150 / 255, 180 / 255),
        octave_resize="opencv", octave_blur=5, transforms="none", relu_redirect_steps=0, final="clip",
    ),
    "keras-vis": dict(
        optimizer="keras-vis", learning_rate=1.0, space="display", display_range=(0.0, 255.0),
        init_range=(0.5 - 0.05 * math.sqrt(3), 0.5 + 0.05 * math.sqrt(3)),
        param="pixel", decorrelate=False, valid_range="none",
        lp_norm_weight=10.0, lp_norm_p=6.0, tv_weight=10.0, tv_beta=2.0,
        steps=200, octaves=1, roll_jitter=16, keep_best=True, final="standardize", size=224,
        transforms="none", relu_redirect_steps=0,
    ),
}


def preset(name: str, **overrides):
    """The named recipe as a `RenderConfig`, with `overrides` replacing its fields (module docstring)."""
    from jaxvis.optvis.render import RenderConfig

    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    fields = {f.name for f in dataclasses.fields(RenderConfig)} - {"preset_name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise JaxvisError(f"unknown render setting(s) {', '.join(unknown)}; settings: {', '.join(sorted(fields))}")
    return RenderConfig(**{**PRESETS[name], **overrides, "preset_name": name}).validate()


__all__ = ["PRESETS", "preset"]

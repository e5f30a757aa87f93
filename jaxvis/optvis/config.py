"""What decides the pixels of a render: `RenderConfig` (validated, hashable, one field per choice) and
`RenderResult`; the optimizer and precision tables it names.

Contract: a `RenderConfig` is a frozen dataclass; `validate()` returns it or raises a one-line
`JaxvisError` naming the bad field and its valid values; `octave_sizes()` is the image size of each
octave. `RenderConfig()` is what `jaxvis atlas` renders with no options.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax

from jaxvis.errors import JaxvisError, unknown_name
from jaxvis.optvis import classic, space, transforms
from jaxvis.optvis.param import SPATIAL, VALID_RANGES
from jaxvis.optvis.param.spatial import is_7_smooth
from jaxvis.output.display import Shows

__all__ = ["FINALS", "OCTAVE_RESIZES", "OCTAVE_ROUNDINGS", "OPTIMIZERS", "PRECISIONS", "RenderConfig", "RenderResult"]


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

    Space (`jaxvis.optvis.space`): `space="display"` optimizes the display image scaled to
    `display_range`; `space="input"` optimizes the model's input (after `spec.preprocess`; the
    display range is then unused).
    Learning rate, weight decay and the regularizer weights are in that tensor's units;
    `valid_range="none"` leaves the tensor unconstrained (clipped only in the final image).

    keras-vis's pieces (`jaxvis.optvis.classic`): `optimizer="keras-vis"` (its normalized RMSprop step),
    `lp_norm_weight` / `tv_weight` (its LPNorm and TotalVariation on the optimized tensor, with
    `lp_norm_p` and `tv_beta`), `roll_jitter` (its `Jitter`: the image itself is rolled before each
    step; pixel parameterization only), `keep_best` (return each item's image after the step whose
    loss was lowest), `final="standardize"` (its `deprocess_input`; "clip" clips to [0, 1]).

    The defaults are what `jaxvis atlas` renders with no options: lucid's recipe (FFT
    parameterization with decorrelated colour and a sigmoid, standard transforms, Adam 0.05) over two
    octaves. Named recipes: `RenderConfig.preset(name, **overrides)` (`jaxvis.optvis.presets`:
    "lucid", this class's defaults; "fastai"; "keras-vis"); `preset_name` records which one a config came from
    (the other fields hold any overrides).
    """

    size: int = 128
    steps: int = 64
    octaves: int = 2
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
    def preset(cls, name: str, **overrides) -> RenderConfig:
        """The named recipe (`jaxvis.optvis.presets.PRESETS`) with `overrides` replacing its fields."""
        from jaxvis.optvis.presets import preset

        return preset(name, **overrides)

    def octave_sizes(self) -> tuple[int, ...]:
        """Image size of each octave, ending at `size` (or starting at `start_size`), even numbers.

        With the FFT parameterization, a computed size is the nearest even size whose prime factors
        are all at most 7: a 2-D FFT of a size with a large prime factor is several times slower
        (the default's 128 / 1.2 = 106.7 would be 106 = 2 x 53, so it is 108). `size` itself is
        kept as given."""
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

    def validate(self) -> RenderConfig:
        def require(ok, message):
            if not ok:
                raise JaxvisError(message)

        require(
            isinstance(self.size, int) and 8 <= self.size <= 4096,
            f"size must be an integer in [8, 4096], got {self.size}",
        )
        require(self.param != "fft" or self.size % 2 == 0 or self.start_size is not None,
                f"size must be even for the fft parameterization, got {self.size}")
        require(
            isinstance(self.steps, int) and 1 <= self.steps <= 100_000,
            f"steps must be a positive integer, got {self.steps}",
        )
        require(
            isinstance(self.octaves, int) and 1 <= self.octaves <= 64, f"octaves must be in [1, 64], got {self.octaves}"
        )
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
        require(
            isinstance(self.roll_jitter, int) and self.roll_jitter >= 0,
            f"roll jitter must be an integer >= 0, got {self.roll_jitter}",
        )
        require(self.roll_jitter == 0 or self.param == "pixel", "roll_jitter rolls pixels: it needs param='pixel'")
        require(self.lp_norm_weight >= 0 and self.tv_weight >= 0, "regularizer weights must be >= 0")
        require(self.lp_norm_p >= 1, f"lp_norm_p must be >= 1, got {self.lp_norm_p}")
        return self


@dataclasses.dataclass(frozen=True)
class RenderResult(Shows):
    images: np.ndarray  # [N, H, W, C] float32 in [0, 1]
    scores: np.ndarray  # [N] the objective on the final, untransformed images
    units: np.ndarray  # [N] int


OPTIMIZERS = {
    # Weight decay is added to the gradient before the update, as torch.optim.Adam does (fastai's FilterVisualizer).
    "adam": lambda lr, wd: optax.chain(optax.add_decayed_weights(wd), optax.adam(lr)),
    "sgd": lambda lr, wd: optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr)),
}


OPTIMIZERS["keras-vis"] = classic.normalized_rmsprop  # its gradient normalization and RMSprop (jaxvis.optvis.classic)

PRECISIONS = {"f32": jnp.float32, "bf16": jnp.bfloat16}
OCTAVE_ROUNDINGS = ("even", "floor")
OCTAVE_RESIZES = ("bicubic", "opencv")
FINALS = ("clip", "standardize")

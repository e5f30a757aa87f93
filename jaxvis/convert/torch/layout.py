"""PyTorch tensors into the layouts of jaxvis's Flax modules: small pure rules, and the checks around them.

Contract: every rule maps NumPy arrays (a torch state_dict's values, as `load_state_dict` returns
them) to float32 NumPy arrays in Flax layout and never touches a file or a device. A model's
converter is a list of `Rule`s (which torch keys go into which sub-tree of the Flax variables, by
which function) run by `apply_rules`, whose result is checked against the model's own init tree
with `jaxvis.convert.trees.check_against_init`. Both raise `WeightFileError` with one line that names the keys and
shapes at fault, so a checkpoint of the wrong model or the wrong width fails loudly, never silently.

Layouts (jaxvis convs are NHWC with HWIO kernels, see `jaxvis.models.layers`):

* conv `weight` (O, I/groups, kh, kw) -> `kernel` (kh, kw, I/groups, O); depthwise
  (C, 1, 3, 3) -> (3, 3, 1, C), the same rule.
* linear `weight` (out, in) -> `Linear` `weight` (out, in), the same layout (`jaxvis.models.layers.
  Linear` computes x @ weight.T, as torch does), so most linear weights are not copied at all. A
  linear layer that follows a flatten of a conv map needs its input axis permuted from torch's
  C*H*W to H*W*C: `linear_weight(w, chw=(C, H, W))`.
* BatchNorm (weight, bias, running_mean, running_var) -> Flax `BatchNorm` params {scale, bias}
  and batch_stats {mean, var}; or folded into the preceding conv (`fold_batchnorm`), which is
  exact for inference and saves a multiply-add per activation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from jaxvis.convert.host_buffers import aligned_copy, is_aligned
from jaxvis.convert.kernel_layout import oihw_to_hwio
from jaxvis.convert.trees import check_against_init, shown, unflatten_tree
from jaxvis.errors import WeightFileError

__all__ = [
    "Rule", "apply_rules", "batchnorm", "conv_kernel", "convert_state_dict", "fold_batchnorm", "linear_weight",
    "batchnorm_rule", "conv_bn_rule", "conv_rule", "linear_rule",
]

IGNORED_SUFFIXES = ("num_batches_tracked",)


def _f32(array) -> np.ndarray:
    """`array` as an aligned C-contiguous float32 array: itself when it already is one (a tensor the
    checkpoint reader gave as a view of its storage), else one copy."""
    array = np.asarray(array)
    return array if array.dtype == np.float32 and is_aligned(array) else aligned_copy(array, np.float32)


def _expect_ndim(array, ndim: int, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {array.shape}")
    return array


# ---------------------------------------------------------------------------------------------
# Tensor rules.


def conv_kernel(weight) -> np.ndarray:
    """torch conv weight (O, I/groups, kh, kw) -> HWIO kernel (kh, kw, I/groups, O)."""
    return _f32(oihw_to_hwio(_expect_ndim(weight, 4, "a conv weight")))


def linear_weight(weight, chw: tuple[int, int, int] | None = None) -> np.ndarray:
    """torch linear weight (out, in) -> `Linear` weight, the same (out, in) layout.

    With `chw=(C, H, W)` each row's inputs are reordered from torch's flatten order (C, H, W) to the
    NHWC flatten order (H, W, C), for the first linear layer after a conv map (VGG, AlexNet). Each
    row is permuted on its own (a (C, H*W) -> (H*W, C) transpose that fits in cache), one pass over
    the weight: 0.11 s for VGG16's 400 MB `classifier.0`, where the (in, out) layout of `nn.Dense`
    needed a full transpose (0.45 s in XLA, 1.9 s in NumPy).
    """
    weight = _expect_ndim(weight, 2, "a linear weight")
    if chw is None:
        return _f32(weight)
    c, h, w = chw
    if weight.shape[1] != c * h * w:
        raise ValueError(f"a linear weight of shape {weight.shape} does not take a flattened {c}x{h}x{w} map")
    return _f32(weight.reshape(-1, c, h * w).transpose(0, 2, 1)).reshape(weight.shape)


def batchnorm(weight, bias, running_mean, running_var) -> tuple[dict, dict]:
    """torch BatchNorm tensors -> (Flax params {scale, bias}, batch_stats {mean, var})."""
    arrays = [_expect_ndim(a, 1, "a BatchNorm vector") for a in (weight, bias, running_mean, running_var)]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"BatchNorm vectors of different lengths: {[a.shape for a in arrays]}")
    weight, bias, mean, var = map(_f32, arrays)
    return {"scale": weight, "bias": bias}, {"mean": mean, "var": var}


def fold_batchnorm(kernel, conv_bias, weight, bias, running_mean, running_var, eps: float = 1e-5):
    """An HWIO conv kernel (and optional bias) followed by an inference BatchNorm, as one conv.

    bn(conv(x)) = conv(x) * g + (bias - mean * g) with g = weight / sqrt(var + eps), so the kernel's
    output channels are scaled by g and the bias becomes (conv_bias - mean) * g + bias. Computed in
    float64 and returned as float32 (kernel, bias). torch's default eps is 1e-5 (Inception v3: 1e-3).
    """
    kernel = _expect_ndim(kernel, 4, "a conv kernel")
    vectors = [_expect_ndim(a, 1, "a BatchNorm vector") for a in (weight, bias, running_mean, running_var)]
    out = kernel.shape[-1]
    if any(v.shape != (out,) for v in vectors):
        raise ValueError(
            f"BatchNorm vectors of shapes {[v.shape for v in vectors]} do not fit a conv with {out} outputs"
        )
    weight, bias, mean, var = (v.astype(np.float64) for v in vectors)
    gain = weight / np.sqrt(var + eps)
    conv_bias = np.zeros(out) if conv_bias is None else _expect_ndim(conv_bias, 1, "a conv bias").astype(np.float64)
    return _f32(kernel.astype(np.float64) * gain), _f32((conv_bias - mean) * gain + bias)


# ---------------------------------------------------------------------------------------------
# Rules: which torch keys go where, by which function.


@dataclasses.dataclass(frozen=True)
class Rule:
    """Torch keys `sources` -> `fn(*arrays)` -> `{relative path: array}` placed under `target`.

    A source may be None (an absent optional tensor, e.g. a conv without bias): `fn` gets None.
    """

    target: tuple[str, ...]
    sources: tuple[str | None, ...]
    fn: Callable[..., Mapping[str | tuple[str, ...], np.ndarray]]


def _ignored(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in IGNORED_SUFFIXES


def apply_rules(state_dict: Mapping[str, np.ndarray], rules: Iterable[Rule], *, what: str = "the weights") -> dict:
    """Run a converter's rules over a state_dict: every source must exist and every tensor be used.

    `num_batches_tracked` entries are dropped first. Returns the nested variables dict (NumPy leaves).

    Raises:
      WeightFileError: one line listing the torch keys the rules need and `state_dict` lacks and the
        ones no rule uses; or naming the keys and shapes of a rule whose tensors do not fit together.
    """
    return _apply_rules(state_dict, rules, what)[0]


def convert_state_dict(state_dict: Mapping[str, np.ndarray], rules: Iterable[Rule], reference_tree: Mapping, *,
                       what: str = "the weights") -> dict:
    """`apply_rules`, then `check_against_init` against the model's tree: the whole converter of a
    torch model. A shape mismatch names the torch tensors (key and shape) the leaf was made from,
    e.g. `params/features.0/kernel has shape (3, 3, 3, 32) in x.pth (from features.0.weight
    (32, 3, 3, 3)) but (3, 3, 3, 64) in the model`."""
    variables, origins = _apply_rules(state_dict, rules, what)
    return check_against_init(variables, reference_tree, what=what, origins=origins)


def _apply_rules(state_dict, rules, what: str) -> tuple[dict, dict[tuple[str, ...], str]]:
    """(variables, {leaf path: "the torch keys and shapes it came from"})."""
    rules = list(rules)
    available = {key for key in state_dict if not _ignored(key)}
    needed = [key for rule in rules for key in rule.sources if key is not None]
    missing = [key for key in needed if key not in available]
    unused = [key for key in state_dict if key in available and key not in set(needed)]
    if missing or unused:
        parts = ([f"missing from the file: {shown(missing)}"] if missing else []) + (
            [f"not used by the model: {shown(unused)}"] if unused else [])
        raise WeightFileError(f"{what} do not fit the model: " + "; ".join(parts))
    flat, origins = {}, {}
    for rule in rules:
        arrays = [None if key is None else state_dict[key] for key in rule.sources]
        shapes = ", ".join(f"{key} {tuple(np.shape(a))}" for key, a in zip(rule.sources, arrays) if key)
        try:
            out = rule.fn(*arrays)
        except ValueError as err:
            raise WeightFileError(f"{what} do not fit the model at {'/'.join(rule.target)} ({shapes}): {err}") from None
        for leaf, array in out.items():
            path = rule.target + ((leaf,) if isinstance(leaf, str) else tuple(leaf))
            flat[path] = array
            origins[path] = shapes
    return unflatten_tree(flat), origins


def conv_rule(target: tuple[str, ...], prefix: str, *, bias: bool = True) -> Rule:
    """torch Conv2d `{prefix}.weight` (and `.bias`) -> {kernel, bias} at `target`."""

    def fn(weight, conv_bias):
        out = {"kernel": conv_kernel(weight)}
        if conv_bias is not None:
            out["bias"] = _f32(_expect_ndim(conv_bias, 1, "a conv bias"))
        return out

    return Rule(target, (f"{prefix}.weight", f"{prefix}.bias" if bias else None), fn)


def conv_bn_rule(target: tuple[str, ...], conv_prefix: str, bn_prefix: str, *, conv_bias: bool = False,
                 eps: float = 1e-5) -> Rule:
    """torch Conv2d at `conv_prefix` then BatchNorm2d at `bn_prefix` -> one folded {kernel, bias}."""

    def fn(weight, bias, gamma, beta, mean, var):
        kernel, folded_bias = fold_batchnorm(conv_kernel(weight), bias, gamma, beta, mean, var, eps)
        return {"kernel": kernel, "bias": folded_bias}

    bn = tuple(f"{bn_prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var"))
    return Rule(target, (f"{conv_prefix}.weight", f"{conv_prefix}.bias" if conv_bias else None) + bn, fn)


def batchnorm_rule(path: tuple[str, ...], prefix: str) -> Rule:
    """torch BatchNorm2d at `prefix` -> `params/<path>/{scale, bias}` and `batch_stats/<path>/{mean, var}`."""

    def fn(weight, bias, mean, var):
        params, stats = batchnorm(weight, bias, mean, var)
        return {**{("params",) + path + (k,): v for k, v in params.items()},
                **{("batch_stats",) + path + (k,): v for k, v in stats.items()}}

    return Rule((), tuple(f"{prefix}.{name}" for name in ("weight", "bias", "running_mean", "running_var")), fn)


def linear_rule(target: tuple[str, ...], prefix: str, *, chw: tuple[int, int, int] | None = None) -> Rule:
    """torch Linear `{prefix}.weight`, `.bias` -> `Linear` {weight, bias} at `target`."""

    def fn(weight, bias):
        return {"weight": linear_weight(weight, chw), "bias": _f32(_expect_ndim(bias, 1, "a linear bias"))}

    return Rule(target, (f"{prefix}.weight", f"{prefix}.bias"), fn)

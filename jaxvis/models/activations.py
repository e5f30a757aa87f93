"""ReLU / ReLU6 whose backward pass can be swapped, for every model in the zoo.

Contract: `relu(x, mode)` and `relu6(x, mode)` equal `jax.nn.relu` / `relu6` in value for any
`mode`; `mode` (the models' `relu_redirect` argument) is a traced float scalar that picks the
gradient, so one compiled program can switch it per step:

- `TRUE` (0): the true gradient.
- `REDIRECT` (1): lucid's redirected gradient. For a batch item whose true gradient through the
  unit is zero everywhere (a dead unit), the gradient of inputs that sit in the flat region but are
  being pushed towards the active region is let through. This starts optimization on units that are
  dead for the initial noise image (the "grey image" complaint of lucid/lucent users). Per item, so
  one dead filter does not affect the others.
- `GUIDED` (2): guided backprop (keras-vis `backprop_modifier='guided'`): only positive gradients,
  only through active units.
- `RECTIFIED` (3): keras-vis `'relu'` modifier (deconvnet): only positive gradients, whatever the
  unit's input.

Sign convention: REDIRECT assumes we differentiate a *loss* to be minimized (the render loop
minimizes -score), so a cotangent g < 0 means "increasing x lowers the loss", i.e. pushes x up.
GUIDED and RECTIFIED follow keras-vis and are used when differentiating a *score* (g > 0 = up).
"""

import jax
import jax.numpy as jnp

__all__ = ["relu", "relu6"]

TRUE, REDIRECT, GUIDED, RECTIFIED = 0.0, 1.0, 2.0, 3.0


# Stride of the quick look at a [B, H, W, C] map (1/64 of its positions, every channel).
_QUICK_LOOK_STRIDE = 8


def _per_item_max_magnitude(values):
    """max |values| per batch item (over all but the first axis).

    A max of |values|, not `jnp.any(values != 0)`: XLA CPU reduces a boolean tensor several times
    slower than a float one."""
    return jnp.max(jnp.abs(values).reshape(values.shape[0], -1), axis=1)


def _per_item_nonzero(values):
    """True for each batch item where `values` has a nonzero entry, as a mask broadcastable to it.

    Exact, but usually cheap for feature maps: a strided look at every 8th row and column decides
    every item that has a nonzero entry there, and the full reduction runs (under `lax.cond`) only
    when some item shows none. The full reduction in every ReLU of every redirected step is a
    second pass over each ReLU's input and gradient, which the quick look mostly saves
    (benchmarks/README.md)."""
    if values.ndim == 0:
        return values != 0
    if values.ndim == 4:
        stride = _QUICK_LOOK_STRIDE
        quick = _per_item_max_magnitude(values[:, ::stride, ::stride]) > 0
        nonzero = jax.lax.cond(jnp.all(quick), lambda v: quick, lambda v: _per_item_max_magnitude(v) > 0, values)
    else:
        nonzero = _per_item_max_magnitude(values) > 0
    return nonzero.reshape((-1,) + (1,) * (values.ndim - 1))


def _gradient(mode, g, x, upper=None):
    """The cotangent for input x given the output cotangent g, for a ReLU clipped at 0 (and at
    `upper`, for ReLU6).

    Each mode's formula, masks included, lives inside its own `lax.switch` branch, so a step
    computes only the one it uses (computed outside the branches, all four ran every step)."""
    def active(x):
        return (x > 0) if upper is None else (x > 0) & (x < upper)

    def true_grad(g, x):
        return jnp.where(active(x), g, 0)

    def redirected(g, x):
        kept = jnp.where(active(x), g, 0)
        pushed = (x <= 0) & (g < 0)
        if upper is not None:
            pushed = pushed | ((x >= upper) & (g > 0))
        return jnp.where(_per_item_nonzero(kept), kept, jnp.where(pushed, g, 0))

    def guided(g, x):
        return jnp.where(active(x) & (g > 0), g, 0)

    def rectified(g, x):
        return jnp.where(g > 0, g, 0)

    index = jnp.clip(jnp.round(mode), 0, 3).astype(jnp.int32)
    return jax.lax.switch(index, [true_grad, redirected, guided, rectified], g, x).astype(g.dtype)


@jax.custom_vjp
def relu(x, mode=TRUE):
    """max(x, 0) with a swappable gradient (see module docstring)."""
    return jnp.maximum(x, 0)


def _relu_fwd(x, mode):
    return jnp.maximum(x, 0), (x, mode)


def _relu_bwd(res, g):
    x, mode = res
    return _gradient(mode, g, x), jnp.zeros_like(mode)


relu.defvjp(_relu_fwd, _relu_bwd)


@jax.custom_vjp
def relu6(x, mode=TRUE):
    """min(max(x, 0), 6) with a swappable gradient; REDIRECT works at both flat ends."""
    return jnp.clip(x, 0, 6)


def _relu6_fwd(x, mode):
    return jnp.clip(x, 0, 6), (x, mode)


def _relu6_bwd(res, g):
    x, mode = res
    return _gradient(mode, g, x, upper=6.0), jnp.zeros_like(mode)


relu6.defvjp(_relu6_fwd, _relu6_bwd)

"""ReLU / ReLU6 whose gradient can be redirected, for every model in the zoo.

Contract: `relu(x, redirect)` and `relu6(x, redirect)` equal `jax.nn.relu` / `relu6` in value for
any `redirect`; `redirect` is a traced scalar in [0, 1] (0 = true gradient). When it is 1 the
backward pass uses lucid's redirected gradient: for a batch item whose true gradient through the
unit is zero everywhere (a dead unit), the gradient of inputs that sit in the flat region but are
being pushed towards the active region is let through. This gets optimization started on units
that are dead for the initial noise image (the "grey image" complaint of lucid/lucent users).

Sign convention: we differentiate a *loss* to be minimized (the render loop minimizes -score), so
a cotangent g < 0 means "increasing x lowers the loss", i.e. pushes x up. The choice between true
and redirected gradient is made per batch item, so one dead filter does not affect the others.
"""

import jax
import jax.numpy as jnp


def _per_item_any(mask):
    """True for each batch item where mask has any True (reduce over all but the first axis)."""
    return jnp.any(mask.reshape(mask.shape[0], -1), axis=1).reshape((-1,) + (1,) * (mask.ndim - 1))


def _choose(true_grad, redirected_grad, redirect):
    """Per item: the true gradient where it is non-zero anywhere, else the redirected one."""
    if true_grad.ndim == 0:
        use_redirect = true_grad == 0
    else:
        use_redirect = ~_per_item_any(true_grad != 0)
    mixed = jnp.where(use_redirect, redirected_grad, true_grad)
    return jnp.where(redirect > 0, mixed, true_grad)


@jax.custom_vjp
def relu(x, redirect=0.0):
    """max(x, 0) with a gradient that can be redirected (see module docstring)."""
    return jnp.maximum(x, 0)


def _relu_fwd(x, redirect):
    return jnp.maximum(x, 0), (x, redirect)


def _relu_bwd(res, g):
    x, redirect = res
    true_grad = jnp.where(x > 0, g, 0).astype(g.dtype)
    redirected = jnp.where((x <= 0) & (g < 0), g, 0).astype(g.dtype)
    return _choose(true_grad, redirected, redirect), jnp.zeros_like(redirect)


relu.defvjp(_relu_fwd, _relu_bwd)


@jax.custom_vjp
def relu6(x, redirect=0.0):
    """min(max(x, 0), 6) with a gradient that can be redirected at both flat ends."""
    return jnp.clip(x, 0, 6)


def _relu6_fwd(x, redirect):
    return jnp.clip(x, 0, 6), (x, redirect)


def _relu6_bwd(res, g):
    x, redirect = res
    true_grad = jnp.where((x > 0) & (x < 6), g, 0).astype(g.dtype)
    pushed_up_from_below = (x <= 0) & (g < 0)
    pushed_down_from_above = (x >= 6) & (g > 0)
    redirected = jnp.where(pushed_up_from_below | pushed_down_from_above, g, 0).astype(g.dtype)
    return _choose(true_grad, redirected, redirect), jnp.zeros_like(redirect)


relu6.defvjp(_relu6_fwd, _relu6_bwd)

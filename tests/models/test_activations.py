"""relu / relu6 with a redirectable gradient: same values, lucid's gradient only when asked."""

import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.models.activations import relu, relu6

X = jnp.asarray([[-2.0, -1.0, 0.5, 3.0, 7.0], [-3.0, -1.0, -0.5, -2.0, -4.0]])


@pytest.mark.parametrize("fn,ref", [(relu, jax.nn.relu), (relu6, jax.nn.relu6)])
def test_values_equal_jax(fn, ref):
    for redirect in (0.0, 1.0):
        np.testing.assert_array_equal(fn(X, redirect), ref(X))


@pytest.mark.parametrize("fn,ref", [(relu, jax.nn.relu), (relu6, jax.nn.relu6)])
def test_no_redirect_is_the_true_gradient(fn, ref):
    cotangent = jnp.asarray([[-1.0, 1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0, -1.0]])
    got = jax.vjp(lambda x: fn(x, 0.0), X)[1](cotangent)[0]
    want = jax.vjp(ref, X)[1](cotangent)[0]
    np.testing.assert_array_equal(got, want)


def test_redirect_only_for_items_whose_true_gradient_is_zero():
    cotangent = -jnp.ones_like(X)  # minimizing a loss whose gradient says "push every unit up"
    got = np.asarray(jax.vjp(lambda x: relu(x, 1.0), X)[1](cotangent)[0])
    np.testing.assert_array_equal(got[0], [0, 0, -1, -1, -1])  # item 0 is alive: true gradient
    np.testing.assert_array_equal(got[1], [-1, -1, -1, -1, -1])  # item 1 is dead: redirected


def test_redirect_never_pushes_dead_units_further_down():
    cotangent = jnp.ones_like(X)  # "push down": nothing is redirected in the flat region
    got = np.asarray(jax.vjp(lambda x: relu(x, 1.0), X)[1](cotangent)[0])
    np.testing.assert_array_equal(got[1], np.zeros(5))


def test_relu6_redirects_at_the_top_too():
    x = jnp.asarray([[7.0, 8.0]])
    got = np.asarray(jax.vjp(lambda v: relu6(v, 1.0), x)[1](jnp.asarray([[1.0, -1.0]]))[0])
    np.testing.assert_array_equal(got, [[1.0, 0.0]])  # above 6, only a push down gets through


def test_guided_and_rectified_modes():
    from jaxvis.models.activations import GUIDED, RECTIFIED

    x = jnp.asarray([[-1.0, 2.0, 3.0, -4.0]])
    g = jnp.asarray([[1.0, 1.0, -1.0, -1.0]])
    guided = jax.vjp(lambda v: relu(v, GUIDED), x)[1](g)[0]
    rectified = jax.vjp(lambda v: relu(v, RECTIFIED), x)[1](g)[0]
    np.testing.assert_array_equal(guided, [[0.0, 1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(rectified, [[1.0, 1.0, 0.0, 0.0]])


def test_mode_is_traceable_under_jit():
    grad = fast_compile.jit(jax.grad(lambda v, m: relu(v, m).sum()))
    x = jnp.asarray([[-1.0, 2.0]])
    np.testing.assert_array_equal(grad(x, 0.0), [[0.0, 1.0]])
    np.testing.assert_array_equal(grad(x, 3.0), [[1.0, 1.0]])


@pytest.mark.parametrize("alive_at", [(0, 0), (3, 5)])  # on the quick look's grid, and off it
def test_redirect_of_feature_maps_matches_the_full_per_item_test(alive_at):
    """[B, H, W, C] maps take a strided quick look first; the result must not depend on it."""
    x = jnp.full((3, 12, 12, 4), -1.0).at[0, alive_at[0], alive_at[1], 2].set(1.0)  # item 0 alive at one spot only
    x = x.at[2].set(jax.random.normal(jax.random.PRNGKey(0), (12, 12, 4)))  # item 2 alive in many places
    cotangent = -jnp.ones_like(x)
    got = np.asarray(fast_compile.jit(lambda x: jax.vjp(lambda v: relu(v, 1.0), x)[1](cotangent)[0])(x))
    want_alive = np.where(np.asarray(x) > 0, -1.0, 0.0)
    np.testing.assert_array_equal(got[0], want_alive[0])  # true gradient: the one live spot
    np.testing.assert_array_equal(got[1], -np.ones((12, 12, 4)))  # dead: redirected everywhere
    np.testing.assert_array_equal(got[2], want_alive[2])

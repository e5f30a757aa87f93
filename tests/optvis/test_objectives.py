"""Each objective must rise under a few Adam steps on a tiny random CNN (lucid's behaviour test)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvis.models import load_model
from jaxvis.optvis import objectives as obj
from jaxvis.optvis.objectives import Context
from jaxvis.optvis.param import image_param


@pytest.fixture(scope="module")
def spec():
    return load_model("tiny_cnn")


def _scores_before_after(spec, objective, *, steps=30, batch=3, lr=0.05, units=(1, 2, 3), redirect_steps=10):
    param = image_param("fft")
    params = param.init(jax.random.PRNGKey(0), batch, 32, 32, 3)
    units = jnp.asarray(units[:batch], jnp.int32)
    layers = tuple(sorted(objective.layers))

    def scores(params, redirect=0.0):
        images = param.to_image(params)
        return objective(Context(spec.activations(images, layers, redirect), images, units))

    optimizer = optax.adam(lr)
    state = optimizer.init(params)
    before = scores(params)

    @jax.jit
    def step(params, state, redirect):
        grads = jax.grad(lambda p: -scores(p, redirect).sum())(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(steps):  # the first steps use the redirected ReLU gradient, as render() does
        params, state = step(params, state, float(i < redirect_steps))
    return np.asarray(before), np.asarray(scores(params))


@pytest.mark.parametrize(
    "make",
    [
        lambda: obj.channel("conv2"),
        lambda: obj.channel("conv3", 4),
        lambda: obj.neuron("conv2", 5),
        lambda: obj.class_logit("logits", 7),
        lambda: obj.layer_mean("conv1"),
        lambda: obj.direction("conv2", np.linspace(-1, 1, 16)),
        lambda: obj.diversity("conv1"),
        lambda: obj.channel("conv2") - 0.1 * obj.total_variation(),
        lambda: -obj.l1(),
        lambda: -obj.l2(),
        lambda: -1.0 * obj.blur_penalty(),
        lambda: 0.5 * obj.channel("conv1", 2) + obj.as_objective("conv3:1"),
    ],
    ids=["channel-units", "channel-const", "neuron", "class_logit", "layer_mean", "direction", "diversity",
         "channel-minus-tv", "l1", "l2", "blur", "arithmetic+string"],
)
def test_objective_rises(spec, make):
    before, after = _scores_before_after(spec, make())
    assert before.shape == (3,)
    assert np.all(after > before), (before, after)


def test_channel_reads_each_items_own_unit():
    acts = {"x": jnp.arange(2 * 2 * 2 * 4, dtype=jnp.float32).reshape(2, 2, 2, 4)}
    ctx = Context(acts, None, jnp.asarray([3, 1]))
    expected = [acts["x"][0, :, :, 3].mean(), acts["x"][1, :, :, 1].mean()]
    np.testing.assert_allclose(obj.channel("x")(ctx), expected)
    np.testing.assert_allclose(obj.channel("x", 2)(ctx), acts["x"][:, :, :, 2].mean(axis=(1, 2)))


def test_arithmetic_combines_layers_and_values():
    acts = {"a": jnp.ones((2, 3, 3, 4)), "b": 2 * jnp.ones((2, 5))}
    ctx = Context(acts, jnp.zeros((2, 4, 4, 3)), jnp.asarray([0, 1]))
    combined = 2 * obj.channel("a", 0) - obj.channel("b", 1) + 3
    assert combined.layers == {"a", "b"}
    np.testing.assert_allclose(combined(ctx), [3.0, 3.0])
    assert len(combined.indexed) == 2


def test_string_forms():
    assert obj.as_objective("features.10:5").indexed == (("features.10", 5),)
    assert obj.as_objective("features.10").indexed == (("features.10", None),)
    assert obj.as_objective("block3_conv3").layers == {"block3_conv3"}


def test_redirected_relu_revives_a_dead_neuron(spec):
    """conv2 unit 5 at the centre is zero for the starting noise: with the true ReLU gradient it
    never moves, with 10 redirected steps first it rises (lucid's remedy for grey images)."""
    dead = obj.neuron("conv2", 5)
    before, after_plain = _scores_before_after(spec, dead, redirect_steps=0)
    _, after_redirected = _scores_before_after(spec, dead, redirect_steps=10)
    assert np.all(before == 0) and np.all(after_plain == 0)
    assert np.all(after_redirected > 0)

"""Objectives' values for fixed activations and images, against NumPy written out by hand.

Each objective's documented formula (jaxvis/objectives.py) is computed here with explicit loops or
plain NumPy on fixed random arrays, and the diversity term also against lucid's definition
(`optvis/objectives.py` `diversity`: the sum over ordered pairs i != j of the cosine similarity of
the Gram matrices, divided by the batch size, to be subtracted; jaxvis gives it per item with the
opposite sign: item i's mean similarity to the others, negated). The blur penalty's blur is checked
against OpenCV's Gaussian blur (the same kernel size and sigma, reflect-101 borders).
"""

import cv2
import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.optvis import objectives as obj
from jaxvis.optvis.objectives import Context

RNG = np.random.default_rng(7)
ACTS = {
    "conv": RNG.normal(size=(3, 5, 6, 4)).astype(np.float32),  # [B, H, W, C]
    "dense": RNG.normal(size=(3, 8)).astype(np.float32),  # [B, N]
    "logits": np.asarray([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-4.0, 1.0, 1.0]], np.float32),
}
IMAGES = RNG.uniform(size=(3, 9, 11, 3)).astype(np.float32)
UNITS = np.asarray([2, 0, 3], np.int32)


def value(objective):
    args = ({k: jnp.asarray(v) for k, v in ACTS.items()}, jnp.asarray(IMAGES), jnp.asarray(UNITS))
    eager = np.asarray(objective(Context(*args)))
    jitted = np.asarray(fast_compile.jit(lambda *a: objective(Context(*a)))(*args))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
    return eager


def close(got, want, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(got, np.asarray(want, np.float64), rtol=rtol, atol=atol)


def test_channel_is_the_spatial_mean_of_each_items_channel():
    a = ACTS["conv"].astype(np.float64)
    close(value(obj.channel("conv")), [a[b, :, :, UNITS[b]].sum() / (5 * 6) for b in range(3)])
    close(value(obj.channel("conv", 1)), [a[b, :, :, 1].sum() / 30 for b in range(3)])
    close(
        value(obj.channel("conv", np.asarray([3, 3, 0]))),
        [a[0, :, :, 3].mean(), a[1, :, :, 3].mean(), a[2, :, :, 0].mean()],
    )
    close(value(obj.channel("dense", 5)), ACTS["dense"][:, 5])


def test_neuron_is_one_position():
    a = ACTS["conv"]
    close(value(obj.neuron("conv")), [a[b, 2, 3, UNITS[b]] for b in range(3)])  # centre: (5 // 2, 6 // 2)
    close(value(obj.neuron("conv", 1, y=4, x=0)), a[:, 4, 0, 1])
    close(value(obj.neuron("dense", 6)), ACTS["dense"][:, 6])


def test_class_logit_is_the_logit_not_the_probability():
    logits = ACTS["logits"]
    got = value(obj.class_logit("logits", 2))
    close(got, [0.5, 3.0, 1.0], rtol=0, atol=0)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.abs(got - softmax[:, 2]).max() > 0.1
    close(value(obj.class_logit("logits", np.asarray([1, 0, 2]))), [-1.0, 0.1, 1.0])


def test_layer_mean_and_direction():
    a = ACTS["conv"].astype(np.float64)
    close(value(obj.layer_mean("conv")), [a[b].sum() / a[b].size for b in range(3)])
    close(value(obj.layer_mean("dense")), ACTS["dense"].mean(axis=1))
    vector = np.asarray([0.5, -1.0, 2.0, 0.25])
    want = [np.mean([a[b, y, x] @ vector for y in range(5) for x in range(6)]) for b in range(3)]
    close(value(obj.direction("conv", vector)), want)


def _lucid_style_diversity(a):
    """Per item: minus the mean over the other items of the cosine similarity of Gram matrices."""
    batch = a.shape[0]
    grams = []
    for b in range(batch):
        f = a[b].reshape(-1, a.shape[-1])
        g = np.array([[np.dot(f[:, i], f[:, j]) for j in range(f.shape[1])] for i in range(f.shape[1])])
        grams.append(g / np.sqrt((g * g).sum()))
    cos = np.array([[(grams[i] * grams[j]).sum() for j in range(batch)] for i in range(batch)])
    per_item = np.array([-sum(cos[i, j] for j in range(batch) if j != i) / (batch - 1) for i in range(batch)])
    lucid = sum(cos[i, j] for i in range(batch) for j in range(batch) if j != i) / batch
    return per_item, lucid


def test_diversity():
    a = ACTS["conv"].astype(np.float64)
    per_item, lucid = _lucid_style_diversity(a)
    got = value(obj.diversity("conv"))
    close(got, per_item)
    close(got.sum(), -lucid * 3 / 2)  # lucid's scalar, per item and with jaxvis's sign
    same = np.repeat(ACTS["conv"][:1], 3, axis=0)  # identical items: similarity 1, the lowest score
    ctx = Context({"conv": jnp.asarray(same)}, None, None)
    close(np.asarray(obj.diversity("conv")(ctx)), [-1.0, -1.0, -1.0])


def test_l1_l2_and_total_variation():
    x = IMAGES.astype(np.float64)
    n = x[0].size
    close(value(obj.l1()), [np.abs(x[b] - 0.5).sum() / n for b in range(3)])
    close(value(obj.l1(0.2)), [np.abs(x[b] - 0.2).sum() / n for b in range(3)])
    close(value(obj.l2()), [np.sqrt(((x[b] - 0.5) ** 2).sum() / n) for b in range(3)])
    close(value(obj.l2(0.0)), [np.sqrt((x[b] ** 2).sum() / n) for b in range(3)])
    tv = []
    for b in range(3):
        dy = [abs(x[b, i + 1, j, c] - x[b, i, j, c]) for i in range(8) for j in range(11) for c in range(3)]
        dx = [abs(x[b, i, j + 1, c] - x[b, i, j, c]) for i in range(9) for j in range(10) for c in range(3)]
        tv.append(np.mean(dy) + np.mean(dx))
    close(value(obj.total_variation()), tv)
    flat = np.full_like(IMAGES, 0.3)
    ctx = Context({}, jnp.asarray(flat), None)
    close(np.asarray(obj.total_variation()(ctx)), [0.0, 0.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_blur_penalty_is_the_squared_distance_to_opencvs_blur(sigma):
    radius = max(1, int(np.ceil(3 * sigma)))
    want = []
    for image in IMAGES:
        blurred = cv2.GaussianBlur(image, (2 * radius + 1, 2 * radius + 1), sigmaX=sigma, sigmaY=sigma,
                                   borderType=cv2.BORDER_REFLECT_101)
        want.append(np.mean((image.astype(np.float64) - blurred) ** 2))
    close(value(obj.blur_penalty(sigma)), want, rtol=1e-4)
    # the blur is a constant (stop_gradient): d/dx mean((x - b)^2) = 2 (x - b) / n
    grad = np.asarray(jax.grad(lambda x: obj.blur_penalty(sigma)(Context({}, x, None)).sum())(jnp.asarray(IMAGES)))
    blurred = np.stack(
        [
            cv2.GaussianBlur(im, (2 * radius + 1,) * 2, sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
            for im in IMAGES
        ]
    )
    close(grad, 2 * (IMAGES - blurred) / IMAGES[0].size, rtol=1e-3, atol=1e-7)


def test_combinations_add_the_values():
    a = ACTS["conv"].astype(np.float64)
    combined = 0.2 * obj.channel("conv", 1) + obj.as_objective("conv:3") - 0.5 * obj.l1() - 2
    want = [
        0.2 * a[b, :, :, 1].mean() + a[b, :, :, 3].mean() - 0.5 * np.abs(IMAGES[b] - 0.5).mean() - 2 for b in range(3)
    ]
    close(value(combined), want)

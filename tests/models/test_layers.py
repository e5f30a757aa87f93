"""Every conv formulation equals torch's float64 conv2d (tests/support/torch_conv_reference.py), in value and
in input gradient, under jit; under vmap it equals lax.conv_general_dilated."""

import functools

import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch_conv_reference

from jaxvis.models.conv_winograd import winograd_conv3x3
from jaxvis.models.layers import Conv2d, Linear, choose_impl, conv2d, conv_taps, normalize_padding

# (name, input HxW, Cin, Cout, kernel (kh, kw), stride, padding, groups)
CASES = [
    ("1x1", (9, 9), 8, 12, (1, 1), 1, 0, 1),
    ("1x1 stride 2 odd/even", (9, 8), 8, 12, (1, 1), 2, 0, 1),
    ("depthwise 3x3 odd", (9, 11), 16, 16, (3, 3), 1, 1, 16),
    ("depthwise 3x3 even", (8, 8), 16, 16, (3, 3), 1, 1, 16),
    ("depthwise 3x3 stride 2 even", (8, 10), 16, 16, (3, 3), 2, 1, 16),
    ("depthwise 3x3 stride 2 odd", (9, 7), 16, 16, (3, 3), 2, 1, 16),
    ("depthwise 3x3 no padding stride 2", (9, 8), 16, 16, (3, 3), 2, 0, 16),
    ("depthwise multiplier 2", (7, 7), 8, 16, (3, 3), 1, 1, 8),
    ("depthwise 5x5 stride 2", (11, 10), 8, 8, (5, 5), 2, 2, 8),
    ("stem 3x3 stride 2 even", (16, 16), 3, 8, (3, 3), 2, 1, 1),
    ("stem 3x3 stride 2 odd", (15, 13), 3, 8, (3, 3), 2, 1, 1),
    ("regular 3x3", (8, 9), 8, 12, (3, 3), 1, 1, 1),
    ("regular 7x7 stride 2 pad 3", (17, 16), 3, 8, (7, 7), 2, 3, 1),
    ("regular 1x7 pad (0, 3)", (8, 9), 4, 6, (1, 7), 1, (0, 3), 1),
    ("regular 11x11 stride 4 pad 2", (35, 33), 3, 4, (11, 11), 4, 2, 1),
    ("grouped 3x3 groups 2", (8, 8), 8, 12, (3, 3), 1, 1, 2),
    ("grouped 3x3 groups 4 stride 2", (9, 9), 8, 8, (3, 3), 2, 1, 4),
    ("asymmetric padding", (8, 8), 4, 4, (3, 3), 2, ((0, 1), (1, 0)), 1),
    ("regular 3x3 stride 1 asymmetric padding", (9, 8), 6, 10, (3, 3), 1, ((0, 1), (2, 0)), 1),
    ("regular 3x3 no padding", (10, 7), 6, 5, (3, 3), 1, 0, 1),
    ("regular 3x3 padding 3", (6, 5), 4, 6, (3, 3), 1, 3, 1),
    ("regular 3x3 stride 2 wide", (9, 10), 16, 8, (3, 3), 2, 1, 1),
    ("regular 5x5 pad 2", (9, 8), 6, 8, (5, 5), 1, 2, 1),
    ("regular 7x1 pad (3, 0)", (9, 8), 6, 4, (7, 1), 1, (3, 0), 1),
]


def _inputs(case, seed=0):
    _, (h, w), cin, cout, (kh, kw), _, _, groups = case
    # NumPy draws: an eager jax.random draw compiles a program per shape (~0.5-1.5 s each on CPU)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, h, w, cin), np.float32))
    # He-like scale keeps outputs O(1), so 1e-5 is a statement about formulation, not magnitude.
    kernel = rng.standard_normal((kh, kw, cin // groups, cout), np.float32) / np.sqrt(kh * kw * cin // groups)
    kernel = jnp.asarray(kernel)
    bias = jnp.asarray(rng.standard_normal(cout, np.float32))
    return x, kernel, bias, rng


# Winograd F(4x4, 3x3) multiplies by transform matrices with entries up to 8 and 1/24: its float32
# rounding is a few times coarser than a direct conv's (still ~1e-6 of the outputs' scale).
TOLERANCE = {"taps": 1e-5, "winograd": 5e-5, "split": 5e-5}


@pytest.mark.parametrize("impl", ["taps", "winograd", "split"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_formulations_match_lax_forward_and_input_gradient(case, impl):
    x, kernel, bias, rng = _inputs(case)
    tolerance = TOLERANCE[impl]
    stride, padding, groups = case[5], case[6], case[7]
    def candidate(x):
        return conv2d(x, kernel, bias, stride=stride, padding=padding, groups=groups, impl=impl)

    def value_and_input_gradient(x, cotangent):  # one compiled program for both
        y, vjp = jax.vjp(candidate, x)
        return y, vjp(cotangent)[0]

    cotangent = rng.standard_normal(jax.eval_shape(candidate, x).shape, np.float32)
    got, got_dx = fast_compile.jit(value_and_input_gradient)(x, cotangent)
    want, want_dx, _ = torch_conv_reference.conv_vjp(x, kernel, cotangent, stride=stride, groups=groups, bias=bias,
                                                     padding=normalize_padding(padding))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=tolerance, rtol=tolerance)
    np.testing.assert_allclose(got_dx, want_dx, atol=tolerance, rtol=tolerance)


GRADIENT_CASES = [c for c in CASES if c[0].startswith(("1x1", "depthwise", "stem"))]


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
def test_kernel_gradient_matches_too(case):
    x, kernel, _, _ = _inputs(case)
    stride, padding, groups = case[5], case[6], case[7]

    def loss(fn, k):
        return (jnp.sin(fn(x, k, stride=stride, padding=padding, groups=groups))).sum()

    _, _, want = torch_conv_reference.conv_vjp(x, kernel, np.cos, stride=stride, groups=groups,
                                               padding=normalize_padding(padding))
    np.testing.assert_allclose(fast_compile.jit(jax.grad(functools.partial(loss, conv_taps)))(kernel), want, atol=1e-4,
                               rtol=1e-5)


WINOGRAD_CASES = [c for c in CASES if c[4] == (3, 3) and c[5] == 1 and c[7] == 1]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=[c[0] for c in WINOGRAD_CASES])
def test_winograd_tiles_match_lax_in_value_and_both_gradients(case, m):
    x, kernel, _, _ = _inputs(case)
    padding = normalize_padding(case[6])

    def loss(fn, x, k):
        return jnp.sin(fn(x, k)).sum()

    candidate = functools.partial(loss, lambda x, k: winograd_conv3x3(x, k, padding=padding, m=m))
    y, dx, dk = torch_conv_reference.conv_vjp(x, kernel, np.cos, padding=padding)
    want = np.sin(y).sum(), (dx, dk)
    got = fast_compile.jit(jax.value_and_grad(candidate, (0, 1)))(x, kernel)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1][0], want[1][0], atol=5e-5, rtol=5e-5)
    np.testing.assert_allclose(got[1][1], want[1][1], atol=1e-4, rtol=1e-5)


def test_winograd_under_vmap_matches_lax():
    x, kernel, _, _ = _inputs(("vmap", (8, 9), 8, 12, (3, 3), 1, 1, 1))
    xs = jnp.stack([x, -2 * x, x[:, ::-1]])  # [3, B, H, W, C]: vmap over a leading axis

    def grad(impl):
        return fast_compile.jit(jax.vmap(jax.grad(lambda x: jnp.sin(conv2d(x, kernel, padding=1, impl=impl)).sum())))

    np.testing.assert_allclose(grad("winograd")(xs), grad("lax")(xs), atol=5e-5, rtol=5e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU choice")
def test_wide_3x3_on_cpu_runs_without_an_xla_convolution_forward_and_backward():
    x, kernel = jnp.zeros((1, 8, 8, 128)), jnp.zeros((3, 3, 128, 128))
    step = fast_compile.jit(jax.grad(lambda x: conv2d(x, kernel, padding=1).sum()))
    assert "convolution(" not in step.lower(x).compile().as_text()
    step = fast_compile.jit(jax.grad(lambda x: conv2d(x, kernel, padding=1, impl="lax").sum()))
    assert "convolution(" in step.lower(x).compile().as_text()


def test_output_size_follows_torch():
    # torch: Ho = (H + 2p - k) // s + 1
    x = jnp.zeros((1, 15, 16, 4))
    y = conv2d(x, jnp.zeros((3, 3, 1, 4)), stride=2, padding=1, groups=4, impl="taps")
    assert y.shape == (1, 8, 8, 4)


def test_auto_choice_per_backend():
    # the XLA formulations ("auto" where the oneDNN custom calls are not built; tests/models/test_conv_onednn.py)
    assert choose_impl((3, 3, 1, 96), 96, backend="cpu", onednn=False) == "taps"  # depthwise
    assert choose_impl((1, 1, 96, 24), 1, backend="cpu", onednn=False) == "taps"  # 1x1
    assert choose_impl((3, 3, 3, 32), 1, backend="cpu", onednn=False) == "taps"  # stem on RGB
    assert choose_impl((3, 3, 64, 64), 1, backend="cpu", onednn=False) == "lax"  # 3x3, too few channels for Winograd
    assert choose_impl((3, 3, 8, 8), 2, backend="cpu", onednn=False) == "split"  # grouped, not depthwise
    assert choose_impl((3, 3, 256, 256), 1, backend="cpu", onednn=False) == "winograd"  # wide 3x3, stride 1
    assert choose_impl((3, 3, 256, 256), 1, backend="cpu", stride=2, onednn=False) == "lax"
    assert choose_impl((3, 3, 256, 256), 1, backend="gpu") == "lax"
    assert choose_impl((3, 3, 8, 8), 1, impl="winograd", backend="gpu") == "winograd"  # forcing wins
    # not a Winograd shape
    assert choose_impl((3, 3, 1, 96), 96, impl="winograd", backend="cpu", onednn=False) == "taps"
    for kernel, groups in [((3, 3, 1, 96), 96), ((1, 1, 96, 24), 1), ((3, 3, 3, 32), 1)]:
        assert choose_impl(kernel, groups, backend="gpu") == "lax"
    assert choose_impl((3, 3, 1, 96), 96, impl="lax", backend="cpu", onednn=False) == "lax"  # forcing wins
    with pytest.raises(ValueError, match="unknown conv formulation"):
        choose_impl((1, 1, 3, 3), 1, impl="fft")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU choice")
def test_depthwise_on_cpu_does_not_use_a_grouped_convolution():
    x, kernel = jnp.zeros((1, 8, 8, 16)), jnp.zeros((3, 3, 1, 16))
    jaxpr = str(jax.make_jaxpr(lambda x: conv2d(x, kernel, stride=2, padding=1, groups=16))(x))
    assert "conv_general_dilated" not in jaxpr
    jaxpr = str(jax.make_jaxpr(lambda x: conv2d(x, kernel, stride=2, padding=1, groups=16, impl="lax"))(x))
    assert "conv_general_dilated" in jaxpr


def test_module_params_do_not_depend_on_the_formulation():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 9, 9, 8), np.float32))
    module = Conv2d(8, 3, stride=2, padding=1, groups=8)
    variables = module.init(jax.random.PRNGKey(0), x)
    assert variables["params"]["kernel"].shape == (3, 3, 1, 8)
    ys = [module.clone(impl=impl).apply(variables, x) for impl in ("lax", "taps", "auto")]
    np.testing.assert_allclose(ys[1], ys[0], atol=1e-5)
    np.testing.assert_allclose(ys[2], ys[0], atol=1e-5)


def test_padding_forms_and_bad_shapes():
    assert normalize_padding(1) == ((1, 1), (1, 1))
    assert normalize_padding((0, 3)) == ((0, 0), (3, 3))
    assert normalize_padding(((0, 1), (2, 3))) == ((0, 1), (2, 3))
    with pytest.raises(ValueError, match="kernel"):
        conv2d(jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 3, 4)))
    with pytest.raises(ValueError, match="does not fit"):
        conv2d(jnp.zeros((1, 2, 2, 4)), jnp.zeros((5, 5, 4, 4)), impl="taps")


def test_linear_matches_torch_linear_in_value_and_gradient():
    import torch

    rng = np.random.default_rng(3)
    x, weight, bias = (rng.standard_normal(shape).astype(np.float32) for shape in ((4, 7), (5, 7), (5,)))
    params = {"params": {"weight": jnp.asarray(weight), "bias": jnp.asarray(bias)}}
    y, grad = jax.value_and_grad(lambda x: (Linear(5).apply(params, x) ** 2).sum())(jnp.asarray(x))
    x_torch = torch.from_numpy(x).requires_grad_()
    y_torch = (torch.nn.functional.linear(x_torch, torch.from_numpy(weight), torch.from_numpy(bias)) ** 2).sum()
    y_torch.backward()
    np.testing.assert_allclose(y, y_torch.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, x_torch.grad.numpy(), rtol=1e-5, atol=1e-4)  # values up to ~100
    shapes = jax.tree.map(np.shape, Linear(5).init(jax.random.PRNGKey(0), jnp.zeros((1, 7))))
    assert shapes == {"params": {"weight": (5, 7), "bias": (5,)}}
    assert jax.tree.map(np.shape, Linear(5, use_bias=False).init(jax.random.PRNGKey(0), jnp.zeros((1, 7)))) == {
        "params": {"weight": (5, 7)}}

"""The oneDNN conv custom calls (csrc/onednn_ffi.cpp) equal torch's conv2d (float64) in value and in
both gradients, on the zoo's conv shapes, under jit and vmap; "auto" picks them on CPU where built.

Like the other custom calls (tests/support/custom_call_support.py), they must be there on x86-64
Linux (the build requires oneDNN there): missing, these tests fail, unless
JAXVIS_ALLOW_NO_CUSTOM_CALLS=1 says a build without them is intended.
"""

import custom_call_support
import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch_conv_reference

from jaxvis.models import conv_onednn
from jaxvis.models.layers import choose_impl, conv2d, normalize_padding

# (name, batch, input HxW, Cin, Cout, kernel (kh, kw), stride, padding, groups, dilation)
CASES = [
    ("3x3 s1", 2, (9, 10), 16, 24, (3, 3), 1, 1, 1, 1),
    ("3x3 s1 wide", 2, (8, 8), 128, 128, (3, 3), 1, 1, 1, 1),
    ("3x3 s2 even", 2, (16, 16), 16, 32, (3, 3), 2, 1, 1, 1),
    ("3x3 s2 odd", 3, (15, 13), 8, 16, (3, 3), 2, 1, 1, 1),
    ("3x3 no padding", 2, (10, 7), 6, 5, (3, 3), 1, 0, 1, 1),
    ("3x3 padding 3", 2, (6, 5), 4, 6, (3, 3), 1, 3, 1, 1),
    ("stem 3x3 RGB", 2, (16, 16), 3, 64, (3, 3), 1, 1, 1, 1),
    ("5x5 pad 2", 2, (9, 8), 6, 8, (5, 5), 1, 2, 1, 1),
    ("7x7 stem s2 pad 3", 2, (17, 16), 3, 8, (7, 7), 2, 3, 1, 1),
    ("11x11 stem s4 pad 2", 2, (35, 33), 3, 4, (11, 11), 4, 2, 1, 1),
    ("1x7 pad (0, 3)", 2, (8, 9), 4, 6, (1, 7), 1, (0, 3), 1, 1),
    ("7x1 pad (3, 0)", 2, (9, 8), 6, 4, (7, 1), 1, (3, 0), 1, 1),
    ("1x1", 2, (9, 9), 8, 12, (1, 1), 1, 0, 1, 1),
    ("grouped 3x3 g2", 2, (8, 8), 8, 12, (3, 3), 1, 1, 2, 1),
    ("grouped 3x3 g4 s2", 2, (9, 9), 8, 8, (3, 3), 2, 1, 4, 1),
    ("depthwise 3x3", 2, (9, 11), 16, 16, (3, 3), 1, 1, 16, 1),
    ("depthwise 3x3 s2 multiplier 2", 2, (9, 8), 8, 16, (3, 3), 2, 1, 8, 1),
    ("dilated 3x3 d2", 2, (12, 11), 8, 8, (3, 3), 1, 2, 1, 2),
    ("asymmetric padding s2", 2, (8, 8), 4, 4, (3, 3), 2, ((0, 1), (1, 0)), 1, 1),
    ("asymmetric padding s1", 2, (9, 8), 6, 10, (3, 3), 1, ((0, 1), (2, 0)), 1, 1),
    ("batch 9 (pieces of unequal size)", 9, (8, 8), 8, 8, (3, 3), 1, 1, 1, 1),
    ("batch 1", 1, (8, 8), 8, 8, (3, 3), 1, 1, 1, 1),
]


def _inputs(case, seed=0):
    """NumPy draws (eager jax.random would compile a program per shape): x, an HWIO kernel, a cotangent seed."""
    _, batch, (h, w), cin, cout, (kh, kw), _, _, groups, _ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, h, w, cin), dtype=np.float32)
    kernel = rng.standard_normal((kh, kw, cin // groups, cout), dtype=np.float32) / np.sqrt(kh * kw * cin // groups)
    return jnp.asarray(x), jnp.asarray(kernel), rng


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_value_and_both_gradients_match_torch(case):
    custom_call_support.require("onednn")
    x, kernel, rng = _inputs(case)
    stride, padding, groups, dilation = case[6], normalize_padding(case[7]), case[8], case[9]

    def candidate(x, k):
        return conv_onednn.conv_onednn(x, k, stride=(stride, stride), padding=padding, groups=groups,
                                       dilation=(dilation, dilation))

    def value_and_gradients(x, k, cotangent):  # one compiled program for all three
        y, vjp = jax.vjp(candidate, x, k)
        return y, *vjp(cotangent)

    cotangent = rng.standard_normal(jax.eval_shape(candidate, x, kernel).shape, dtype=np.float32)
    got, gx, gk = fast_compile.jit(value_and_gradients)(x, kernel, cotangent)
    want, wx, wk = torch_conv_reference.conv_vjp(x, kernel, cotangent, stride=stride, padding=padding, groups=groups,
                                                 dilation=dilation)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(gx, wx, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(gk, wk, atol=1e-4, rtol=1e-5)


def test_conv2d_onednn_matches_lax_and_runs_as_the_custom_call():
    custom_call_support.require("onednn")
    x, kernel, _ = _inputs(CASES[0])
    bias = jnp.arange(kernel.shape[-1], dtype=jnp.float32)
    step = fast_compile.jit(
        jax.value_and_grad(lambda x: jnp.sin(conv2d(x, kernel, bias, padding=1, impl="onednn")).sum())
    )
    want = jax.value_and_grad(lambda x: jnp.sin(conv2d(x, kernel, bias, padding=1, impl="lax")).sum())(x)
    text = step.lower(x).as_text()
    assert "jaxvis_onednn_forward" in text and "jaxvis_onednn_backward_data" in text
    got = step(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=1e-5)


def test_under_vmap_matches_lax():
    custom_call_support.require("onednn")
    x, kernel, _ = _inputs(CASES[0])
    xs = jnp.stack([x, -2 * x, x[:, ::-1]])  # [3, B, H, W, C]: the custom call folds the leading axes

    def grad(impl):
        loss = lambda x: jnp.sin(conv2d(x, kernel, padding=1, impl=impl)).sum()
        return fast_compile.jit(jax.vmap(jax.value_and_grad(loss)))

    (got_value, got_grad), (want_value, want_grad) = grad("onednn")(xs), grad("lax")(xs)
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5)
    np.testing.assert_allclose(got_grad, want_grad, atol=1e-5, rtol=1e-5)


def test_what_it_does_not_take_falls_back_to_xla():
    custom_call_support.require("onednn")
    x, kernel, _ = _inputs(CASES[0])
    # negative padding (a crop) and float16 are not passed to oneDNN
    assert not conv_onednn.applies(x, kernel, ((-1, 0), (0, 0)))
    assert not conv_onednn.applies(x.astype(jnp.float16), kernel, ((1, 1), (1, 1)))
    y = fast_compile.jit(lambda x: conv2d(x, kernel, padding=((-1, 0), (1, 1)), impl="onednn"))
    assert "jaxvis_onednn" not in y.lower(x).as_text()
    want = conv2d(x, kernel, padding=((-1, 0), (1, 1)), impl="lax")
    np.testing.assert_allclose(y(x), want, atol=1e-5, rtol=1e-5)


def test_auto_picks_onednn_on_cpu_only():
    custom_call_support.require("onednn")
    assert choose_impl((3, 3, 64, 64), 1, backend="cpu") == "onednn"
    assert choose_impl((3, 3, 64, 64), 1, backend="cpu", impl="xla") == "lax"
    assert choose_impl((3, 3, 64, 64), 1, backend="cpu", onednn=False) == "lax"
    assert choose_impl((3, 3, 64, 64), 1, backend="gpu") == "lax"
    assert choose_impl((3, 3, 1, 96), 96, backend="cpu") == "onednn"  # depthwise
    assert choose_impl((1, 1, 96, 24), 1, backend="cpu") == "onednn"  # 1x1
    assert choose_impl((3, 3, 3, 64), 1, backend="cpu") == "onednn"  # VGG's stem
    assert choose_impl((7, 7, 3, 64), 1, backend="cpu", stride=2) == "onednn"  # large-kernel RGB stems
    assert choose_impl((3, 3, 1, 96), 96, backend="cpu", impl="xla") == "taps"  # without oneDNN: depthwise taps
    assert choose_impl((1, 1, 96, 24), 1, backend="cpu", onednn=False) == "taps"  # and 1x1 as one einsum
    assert choose_impl((7, 7, 3, 64), 1, backend="cpu", impl="xla", stride=2) == "lax"
    assert choose_impl((3, 3, 8, 256), 32, backend="cpu") == "onednn"  # grouped
    assert choose_impl((3, 3, 8, 256), 32, backend="cpu", impl="split") == "split"  # forcing wins


def test_a_missing_library_turns_the_calls_off(monkeypatch):
    """libdnnl.so.3 not loadable (here: the module not importable): no registration, "auto" picks XLA."""
    from jaxvis.native import custom_calls

    monkeypatch.setitem(custom_calls._OWN_MODULE, "onednn", "jaxvis._no_such_module")
    custom_calls.cpu_targets.cache_clear()
    try:
        assert not conv_onednn.available()
        assert choose_impl((3, 3, 64, 64), 1, backend="cpu") == "lax"
        x, kernel, _ = _inputs(CASES[0])
        text = fast_compile.jit(lambda x: conv2d(x, kernel, padding=1, impl="onednn")).lower(x).as_text()
        assert "jaxvis_onednn" not in text
    finally:
        monkeypatch.undo()
        custom_calls.cpu_targets.cache_clear()

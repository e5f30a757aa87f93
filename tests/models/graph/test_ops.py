"""The graph op library against torch.nn.functional: every attribute of pools, convs and resizes."""

import fast_compile
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxvis.models.graph import ops


def _nhwc(x: torch.Tensor):
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def _jitted(fn, *arrays, **attrs):
    """`fn(*arrays, **attrs)` as one compiled program (eagerly, each primitive compiles on its own)."""
    return fast_compile.jit(lambda *a: fn(*a, **attrs))(*arrays)


def _check(actual, expected: torch.Tensor, tol=1e-5):
    expected = expected.numpy().transpose(0, 2, 3, 1)
    assert np.shape(actual) == expected.shape
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=tol, atol=tol * max(1.0, np.abs(expected).max()))


X = torch.randn(2, 6, 11, 13, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "kernel,stride,padding,dilation,ceil",
    [
        (3, 2, 1, 1, True),
        (3, 2, 0, 1, False),
        (2, 2, 0, 1, True),
        ((3, 2), (2, 3), (1, 0), (2, 1), True),
        (4, 3, 2, 1, True),
    ],
)
def test_max_pool_matches_torch(kernel, stride, padding, dilation, ceil):
    ref = F.max_pool2d(X, kernel, stride, padding, dilation, ceil_mode=ceil)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    pads = tuple((p, p) for p in pair(padding))
    _check(_jitted(ops.max_pool2d, _nhwc(X), kernel=pair(kernel), stride=pair(stride), padding=pads,
                   dilation=pair(dilation), ceil_mode=ceil), ref)


@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("divisor", [None, 5])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 2, 1), (2, 2, 0), (4, 3, 2), ((3, 5), (1, 2), (1, 2))])
def test_avg_pool_matches_torch(kernel, stride, padding, ceil, include_pad, divisor):
    ref = F.avg_pool2d(
        X, kernel, stride, padding, ceil_mode=ceil, count_include_pad=include_pad, divisor_override=divisor
    )
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    pads = tuple((p, p) for p in pair(padding))
    y = _jitted(ops.avg_pool2d, _nhwc(X), kernel=pair(kernel), stride=pair(stride), padding=pads,
                ceil_mode=ceil, count_include_pad=include_pad, divisor_override=divisor)
    _check(y, ref)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (4, 4), (11, 13), (7, 2)])
def test_adaptive_pools_match_torch(size):
    pools = fast_compile.jit(lambda x: (ops.adaptive_avg_pool2d(x, size), ops.adaptive_max_pool2d(x, size)))
    avg, max_ = pools(_nhwc(X))
    _check(avg, F.adaptive_avg_pool2d(X, size))
    _check(max_, F.adaptive_max_pool2d(X, size))


@pytest.mark.parametrize("stride,padding,output_padding,dilation,groups", [
    (2, 1, 1, 1, 1), (2, 0, 0, 1, 3), (3, 2, 1, 2, 2), ((1, 2), (0, 1), (0, 1), 1, 1),
])
def test_conv_transpose_matches_torch(stride, padding, output_padding, dilation, groups):
    from jaxvis.models.graph.ir import convert_weight

    w = torch.randn(6, 4 if groups == 1 else 2, 3, 3)  # [Cin, Cout / groups, kh, kw]
    b = torch.randn(w.shape[1] * groups)
    ref = F.conv_transpose2d(X, w, b, stride, padding, output_padding, groups, dilation)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    y = _jitted(
        ops.conv_transpose2d,
        _nhwc(X),
        jnp.asarray(convert_weight("conv_transpose", w.numpy(), groups)),
        jnp.asarray(b.numpy()),
        stride=pair(stride),
        padding=tuple((p, p) for p in pair(padding)),
        dilation=pair(dilation),
        output_padding=pair(output_padding),
        groups=groups,
    )
    _check(y, ref, 1e-4)


@pytest.mark.parametrize(
    "dilation,groups,padding", [(1, 1, ((1, 2), (0, 1))), (2, 3, ((2, 2), (2, 2))), (3, 6, ((0, 0), (1, 1)))]
)
def test_conv_matches_torch(dilation, groups, padding):
    from jaxvis.models.graph.ir import convert_weight

    w = torch.randn(12, 6 // groups, 3, 3)
    (top, bottom), (left, right) = padding
    ref = F.conv2d(F.pad(X, (left, right, top, bottom)), w, None, 2, 0, dilation, groups)
    y = _jitted(ops.conv2d, _nhwc(X), jnp.asarray(convert_weight("conv", w.numpy())), stride=(2, 2), padding=padding,
                dilation=(dilation, dilation), groups=groups)
    _check(y, ref, 1e-4)


@pytest.mark.parametrize(
    "mode,kwargs",
    [
        ("nearest", {}),
        ("nearest-exact", {}),
        ("bilinear", {"align_corners": False}),
        ("bilinear", {"align_corners": True}),
        ("bicubic", {"align_corners": False}),
        ("bicubic", {"align_corners": True}),
        ("bilinear", {"align_corners": False, "antialias": True}),
        ("bicubic", {"align_corners": False, "antialias": True}),
    ],
)
@pytest.mark.parametrize("size", [(17, 6), (4, 5), (22, 26)])
def test_resize_matches_torch_interpolate(mode, kwargs, size):
    kind = {"nearest": "nearest", "nearest-exact": "nearest", "bilinear": "linear", "bicubic": "cubic"}[mode]
    coord = {"nearest": "asymmetric", "nearest-exact": "tf_half_pixel_for_nn"}.get(
        mode, "align_corners" if kwargs.get("align_corners") else "half_pixel")

    def resize(y):
        for axis, n in zip((1, 2), size):
            antialias = kwargs.get("antialias", False)  # torch's antialiasing drops taps outside the input
            idx, w = ops.resize_taps(y.shape[axis], n, scale=n / y.shape[axis], mode=kind, coordinate_mode=coord,
                                     antialias=antialias, exclude_outside=antialias,
                                     cubic_a=-0.5 if antialias else -0.75)
            y = ops.resize_axis(y, axis, idx, w)
        return y

    _check(fast_compile.jit(resize)(_nhwc(X)), F.interpolate(X, size=size, mode=mode, **kwargs))


def test_group_norm_and_pad_match_torch():
    w, b = torch.rand(6) + 0.5, torch.randn(6)
    modes = [("reflect", "reflect"), ("edge", "replicate"), ("wrap", "circular")]

    @fast_compile.jit
    def run(x, w, b):  # one program for all four
        return ops.group_norm(x, w, b, groups=3, eps=1e-3), [
            ops.pad(x, [(0, 0), (2, 1), (-1, 3), (0, 0)], mode=mode) for mode, _ in modes]

    norm, padded = run(_nhwc(X), jnp.asarray(w.numpy()), jnp.asarray(b.numpy()))
    _check(norm, F.group_norm(X, 3, w, b, 1e-3))
    for y, (_, torch_mode) in zip(padded, modes):
        _check(y, F.pad(X[:, :, :, 1:], (0, 3, 2, 1), mode=torch_mode))  # a negative pad crops

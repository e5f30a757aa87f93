"""torch -> Flax layout rules agree with torch's own ops; the checks name keys and shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxvis.convert.host_buffers import aligned_copy, is_aligned
from jaxvis.convert.torch.layout import (
    Rule,
    apply_rules,
    batchnorm_rule,
    conv_bn_rule,
    conv_kernel,
    conv_rule,
    convert_state_dict,
    fold_batchnorm,
    linear_rule,
    linear_weight,
)
from jaxvis.convert.trees import check_against_init, flatten_tree, unflatten_tree
from jaxvis.errors import WeightFileError
from jaxvis.models.layers import conv2d

RNG = np.random.default_rng(0)


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("groups,cin,cout", [(1, 4, 6), (2, 4, 6), (8, 8, 8), (4, 4, 8)])
def test_conv_kernel_matches_torch_conv(groups, cin, cout):
    x = torch.from_numpy(RNG.standard_normal((2, cin, 9, 8)).astype(np.float32))
    weight = torch.from_numpy(RNG.standard_normal((cout, cin // groups, 3, 3)).astype(np.float32))
    want = _nhwc(F.conv2d(x, weight, stride=2, padding=1, groups=groups))
    got = conv2d(jnp.asarray(_nhwc(x)), conv_kernel(weight.numpy()), stride=2, padding=1, groups=groups)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_linear_weight_reorders_a_flattened_conv_map():
    c, h, w = 3, 2, 4
    fmap = torch.from_numpy(RNG.standard_normal((2, c, h, w)).astype(np.float32))
    weight = RNG.standard_normal((5, c * h * w)).astype(np.float32)
    want = torch.flatten(fmap, 1).numpy() @ weight.T
    got = _nhwc(fmap).reshape(2, -1) @ linear_weight(weight, chw=(c, h, w)).T
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(linear_weight(weight), weight)
    with pytest.raises(ValueError, match="flattened 4x2x4"):
        linear_weight(weight, chw=(4, 2, 4))


def test_layout_rules_give_aligned_arrays_and_share_what_needs_no_change():
    weight = aligned_copy(RNG.standard_normal((6, 24)).astype(np.float32))
    assert linear_weight(weight) is weight  # torch's layout is Linear's: no copy
    permuted = linear_weight(weight[:, :], chw=(3, 2, 4))
    kernel = conv_kernel(RNG.standard_normal((4, 3, 3, 3)).astype(np.float64))
    for array in (permuted, kernel):
        assert array.dtype == np.float32 and is_aligned(array)
        assert not np.shares_memory(array, weight)


def test_fold_batchnorm_equals_conv_then_eval_batchnorm():
    x = torch.from_numpy(RNG.standard_normal((2, 4, 7, 7)).astype(np.float32))
    weight = torch.from_numpy(RNG.standard_normal((6, 4, 3, 3)).astype(np.float32))
    bias = torch.from_numpy(RNG.standard_normal(6).astype(np.float32))
    gamma, beta, mean = (torch.from_numpy(RNG.standard_normal(6).astype(np.float32)) for _ in range(3))
    var = torch.from_numpy(RNG.uniform(0.1, 2, 6).astype(np.float32))
    for eps in (1e-5, 1e-3):
        want = _nhwc(F.batch_norm(F.conv2d(x, weight, bias, padding=1), mean, var, gamma, beta, False, 0.0, eps))
        kernel, folded = fold_batchnorm(conv_kernel(weight.numpy()), bias.numpy(), gamma.numpy(), beta.numpy(),
                                        mean.numpy(), var.numpy(), eps)
        assert kernel.dtype == folded.dtype == np.float32
        np.testing.assert_allclose(conv2d(jnp.asarray(_nhwc(x)), kernel, folded, padding=1), want, atol=1e-4)
    with pytest.raises(ValueError, match="do not fit a conv with 6 outputs"):
        fold_batchnorm(kernel, None, np.ones(5), np.ones(6), np.ones(6), np.ones(6))


def test_trees_round_trip():
    tree = {"params": {"a": {"kernel": 1, "bias": 2}, "b": {"kernel": 3}}, "batch_stats": {"a": {"mean": 4}}}
    flat = flatten_tree(tree)
    assert flat[("params", "a", "kernel")] == 1
    assert unflatten_tree(flat) == tree


def _state():
    return {
        "conv.weight": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn.weight": np.ones(4, np.float32), "bn.bias": np.zeros(4, np.float32),
        "bn.running_mean": np.zeros(4, np.float32), "bn.running_var": np.ones(4, np.float32),
        "bn.num_batches_tracked": np.asarray(3),
        "fc.weight": np.zeros((10, 4), np.float32), "fc.bias": np.zeros(10, np.float32),
    }


def test_apply_rules_builds_the_tree_and_drops_num_batches_tracked():
    rules = [conv_bn_rule(("params", "conv"), "conv", "bn"), linear_rule(("params", "fc"), "fc")]
    tree = apply_rules(_state(), rules)
    assert jax.tree.map(np.shape, tree) == {
        "params": {"conv": {"kernel": (3, 3, 3, 4), "bias": (4,)}, "fc": {"weight": (10, 4), "bias": (10,)}}}
    tree = apply_rules(_state(), [conv_rule(("params", "conv"), "conv", bias=False), batchnorm_rule(("bn",), "bn"),
                                  linear_rule(("params", "fc"), "fc")])
    assert set(tree) == {"params", "batch_stats"}
    assert set(tree["params"]["bn"]) == {"scale", "bias"} and set(tree["batch_stats"]["bn"]) == {"mean", "var"}


def test_apply_rules_lists_missing_and_unused_keys():
    state = _state()
    del state["bn.running_var"]
    with pytest.raises(
        WeightFileError, match="missing from the file: bn.running_var; not used by the model: fc.weight, fc.bias"
    ):
        apply_rules(state, [conv_bn_rule(("params", "conv"), "conv", "bn")], what="the weights in x.pth")


def test_apply_rules_names_a_rule_whose_tensors_disagree():
    state = _state()
    state["bn.bias"] = np.zeros(5, np.float32)
    with pytest.raises(WeightFileError, match=r"at params/conv \(conv.weight \(4, 3, 3, 3\), .*bn.bias \(5,\)"):
        apply_rules(state, [conv_bn_rule(("params", "conv"), "conv", "bn"), linear_rule(("params", "fc"), "fc")])


def test_check_against_init_names_key_and_both_shapes():
    reference = {"params": {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 8), jnp.float32),
                                     "bias": jax.ShapeDtypeStruct((8,), jnp.float32)},
                            "fc": {"kernel": jax.ShapeDtypeStruct((8, 10), jnp.float32)}}}
    good = {
        "params": {"conv": {"kernel": np.zeros((3, 3, 3, 8)), "bias": np.zeros(8)}, "fc": {"kernel": np.zeros((8, 10))}}
    }
    assert check_against_init(good, reference) is good
    bad = {"params": {"conv": {"kernel": np.zeros((3, 3, 3, 4))}, "fc": {"kernel": np.zeros((8, 10))},
                      "extra": {"kernel": np.zeros(1)}}}
    with pytest.raises(WeightFileError) as error:
        check_against_init(bad, reference, what="the weights in m.pth")
    message = str(error.value)
    assert "\n" not in message
    assert ("params/conv/kernel has shape (3, 3, 3, 4) in the weights in m.pth but (3, 3, 3, 8) in the model"
            in message)
    assert "missing: params/conv/bias" in message and "unexpected: params/extra/kernel" in message


def test_rule_with_relative_paths():
    rule = Rule(("params", "x"), ("fc.bias",), lambda b: {("deep", "bias"): b})
    assert apply_rules({"fc.bias": np.ones(2)}, [rule])["params"]["x"]["deep"]["bias"].shape == (2,)


def test_convert_state_dict_names_the_torch_tensor_of_a_mismatched_leaf():
    reference = {"params": {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 8), jnp.float32),
                                     "bias": jax.ShapeDtypeStruct((8,), jnp.float32)},
                            "fc": {"weight": jax.ShapeDtypeStruct((10, 4), jnp.float32),
                                   "bias": jax.ShapeDtypeStruct((10,), jnp.float32)}}}
    rules = [conv_bn_rule(("params", "conv"), "conv", "bn"), linear_rule(("params", "fc"), "fc")]
    with pytest.raises(WeightFileError) as error:
        convert_state_dict(_state(), rules, reference, what="the weights in m.pth")
    message = str(error.value)
    assert (
        "params/conv/kernel has shape (3, 3, 3, 4) in the weights in m.pth (from conv.weight (4, 3, 3, 3), " in message
    )
    assert "but (3, 3, 3, 8) in the model" in message and "\n" not in message
    reference["params"]["conv"] = {"kernel": jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32),
                                   "bias": jax.ShapeDtypeStruct((4,), jnp.float32)}
    tree = convert_state_dict(_state(), rules, reference)
    assert tree["params"]["fc"]["weight"].shape == (10, 4)

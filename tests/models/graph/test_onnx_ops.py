"""Single ONNX ops with their attributes, each against onnxruntime on the same file.

Every case is a one-node model on a batch of two [4, 9, 11] NCHW images (plus constant inputs),
loaded with `load_graph_model` and compared at the node's output to 1e-4 relative. A node that moves
or mixes the batch axis makes jaxvis run each image alone (`graph.per_item`); onnxruntime then runs
each image alone too, and the activations are stacked per image.
"""

import sys
from pathlib import Path

import fast_compile
import numpy as np
import pytest

from jaxvis.models.graph import load_graph_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_torch_models import apply_jitted, relative_error  # noqa: E402

RNG = np.random.default_rng(0)
SHAPE = (2, 4, 9, 11)


def _f(*shape, scale=1.0):
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def _i(*values):
    return np.asarray(values, np.int64)


# (case id, op type, attributes, constant inputs after x (name -> array or None for absent), opset)
CASES = [
    (
        "resize_nearest_asym_ceil",
        "Resize",
        dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="round_prefer_ceil"),
        [None, np.float32([1, 1, 1.7, 0.6])],
        13,
    ),
    (
        "resize_nearest_half_floor",
        "Resize",
        dict(mode="nearest", nearest_mode="floor"),
        [None, None, _i(2, 4, 14, 5)],
        13,
    ),
    (
        "resize_linear_align",
        "Resize",
        dict(mode="linear", coordinate_transformation_mode="align_corners"),
        [None, None, _i(2, 4, 17, 6)],
        13,
    ),
    (
        "resize_linear_pytorch",
        "Resize",
        dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
        [None, np.float32([1, 1, 2, 0.5])],
        13,
    ),
    (
        "resize_cubic_tf",
        "Resize",
        dict(mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1),
        [None, np.float32([1, 1, 1.5, 2])],
        13,
    ),
    (
        "resize_linear_antialias",
        "Resize",
        dict(mode="linear", antialias=1),
        [None, None, _i(5, 4)],
        18,
        dict(axes=[2, 3]),
    ),
    (
        "resize_cubic_antialias",
        "Resize",
        dict(mode="cubic", antialias=1),
        [None, None, _i(5, 4)],
        18,
        dict(axes=[2, 3]),
    ),
    (
        "resize_linear_symmetric",
        "Resize",
        dict(mode="linear", coordinate_transformation_mode="half_pixel_symmetric"),
        [None, np.float32([1, 1, 1.3, 0.7])],
        19,
    ),
    (
        "resize_nearest_tf_half",
        "Resize",
        dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="ceil"),
        [None, None, _i(2, 4, 13, 7)],
        13,
    ),
    ("maxpool_same_upper", "MaxPool", dict(kernel_shape=[3, 2], strides=[2, 3], auto_pad="SAME_UPPER"), [], 13),
    (
        "maxpool_ceil_dilated",
        "MaxPool",
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], dilations=[2, 1], ceil_mode=1),
        [],
        13,
    ),
    ("avgpool_same_lower", "AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER"), [], 13),
    (
        "avgpool_ceil_include_pad",
        "AveragePool",
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
        [],
        13,
    ),
    ("lppool", "LpPool", dict(kernel_shape=[2, 3], strides=[1, 2], p=3), [], 13),
    (
        "conv_same_lower_group",
        "Conv",
        dict(auto_pad="SAME_LOWER", strides=[2, 2], group=2),
        [_f(6, 2, 3, 2, scale=0.3), _f(6)],
        13,
    ),
    (
        "convtranspose_output_shape",
        "ConvTranspose",
        dict(strides=[2, 2], output_shape=[20, 21]),
        [_f(4, 3, 3, 3, scale=0.3)],
        13,
    ),
    (
        "convtranspose_same_upper",
        "ConvTranspose",
        dict(strides=[2, 3], auto_pad="SAME_UPPER", group=2),
        [_f(4, 1, 3, 4, scale=0.3), _f(2)],
        13,
    ),
    ("lrn", "LRN", dict(size=3, alpha=0.001, beta=0.6, bias=1.5), [], 13),
    ("depth_to_space_dcr", "DepthToSpace", dict(blocksize=2, mode="DCR"), [], 13),
    ("depth_to_space_crd", "DepthToSpace", dict(blocksize=2, mode="CRD"), [], 13),
    ("instance_norm", "InstanceNormalization", dict(epsilon=1e-3), [_f(4), _f(4)], 13),
    ("group_norm_18", "GroupNormalization", dict(num_groups=2, epsilon=1e-3), [_f(2), _f(2)], 18),
    ("group_norm_21", "GroupNormalization", dict(num_groups=2), [_f(4), _f(4)], 21),
    ("layer_norm_axis1", "LayerNormalization", dict(axis=1), [_f(4, 9, 11), _f(4, 9, 11)], 17),
    ("softmax_opset11_axis1", "Softmax", dict(axis=1), [], 11),
    ("logsoftmax_axis2", "LogSoftmax", dict(axis=2), [], 13),
    ("hardsigmoid", "HardSigmoid", dict(alpha=0.3, beta=0.4), [], 13),
    ("selu", "Selu", dict(alpha=1.5, gamma=1.2), [], 13),
    ("celu", "Celu", dict(alpha=0.7), [], 13),
    ("elu", "Elu", dict(alpha=0.4), [], 13),
    ("leaky", "LeakyRelu", dict(alpha=0.2), [], 13),
    ("prelu_broadcast", "PRelu", {}, [_f(4, 1, 1)], 13),
    ("clip_const", "Clip", {}, [np.float32(-0.5), np.float32(0.8)], 13),
    ("clip_relu6", "Clip", {}, [np.float32(0), np.float32(6)], 13),
    ("gelu_tanh", "Gelu", dict(approximate="tanh"), [], 20),
    ("pad_reflect", "Pad", dict(mode="reflect"), [_i(0, 0, 2, 1, 0, 0, 1, 3)], 13),
    ("pad_edge_negative", "Pad", dict(mode="edge"), [_i(0, 0, -1, 2, 0, 0, 3, -2)], 13),
    ("pad_constant_axes", "Pad", {}, [_i(1, 2, 3, 0), np.float32(0.5), _i(2, 3)], 18),
    ("slice_negative_step", "Slice", {}, [_i(-1, 8), _i(-100, 1), _i(3, 2), _i(-2, -3)], 13),
    ("split_num_outputs", "Split", dict(axis=3, num_outputs=3), [], 18),
    ("reduce_l2_keep", "ReduceL2", dict(keepdims=1), [_i(1, 3)], 18),
    ("reduce_logsumexp", "ReduceLogSumExp", dict(keepdims=0), [_i(2)], 18),
    ("reduce_sum_13", "ReduceSum", dict(keepdims=0), [_i(-1, 1)], 13),
    ("reduce_max_11", "ReduceMax", dict(axes=[0, 2], keepdims=1), [], 11),
    ("flatten_axis2", "Flatten", dict(axis=2), [], 13),
    ("flatten_axis0", "Flatten", dict(axis=0), [], 13),
    ("transpose_default", "Transpose", {}, [], 13),
    ("gather_runtime_axis1", "Gather", dict(axis=1), [_i(3, 0, 3)], 13),
    ("tile", "Tile", {}, [_i(1, 2, 1, 3)], 13),
    ("expand_numpy", "Expand", {}, [_i(3, 1, 1, 1, 1)], 13),
    ("cumsum_reverse_exclusive", "CumSum", dict(reverse=1, exclusive=1), [np.int64(2)], 13),
    ("mean_variadic", "Mean", {}, [_f(4, 1, 11), _f(1, 9, 1)], 13),
    ("max_variadic", "Max", {}, [_f(1, 4, 1, 1)], 13),
    ("pow_const", "Pow", {}, [np.float32(2.0)], 13),
    ("argmax_keep", "ArgMax", dict(axis=1, keepdims=1), [], 13),
    ("einsum", "Einsum", dict(equation="bchw, c -> bwh"), [_f(4)], 13),
    ("scatter_nd_add", "ScatterND", dict(reduction="add"), [_i(0, 1, 0, 3).reshape(2, 2), _f(2, 9, 11)], 16),
    ("thresholded_relu", "ThresholdedRelu", dict(alpha=0.3), [], 13),
    ("shrink", "Shrink", dict(lambd=0.4, bias=0.1), [], 13),
]


def _model(path, op_type, attrs, consts, opset, extra_attrs=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SHAPE[1:]])
    names, inits = ["x"], []
    for i, value in enumerate(consts):
        if value is None:
            names.append("")
        else:
            names.append(f"c{i}")
            inits.append(numpy_helper.from_array(np.asarray(value), f"c{i}"))
    n_out = attrs.get("num_outputs", 1)
    outputs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outputs, name="op", **attrs, **(extra_attrs or {}))
    graph = helper.make_graph([node], "single", [x], [helper.make_empty_tensor_value_info(o) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return outputs


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_single_op_matches_onnxruntime(case, tmp_path):
    name, op_type, attrs, consts, opset, *extra = case
    path = tmp_path / f"{name}.onnx"
    outputs = _model(path, op_type, attrs, consts, opset, extra[0] if extra else None)
    x = RNG.normal(size=SHAPE).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = load_graph_model(str(path), input_size=SHAPE[2:])
    graph = spec.module.graph
    if graph.per_item:
        items = [[r.transpose(0, 2, 3, 1) if r.ndim == 4 else r for r in session.run(outputs, {"x": x[i:i + 1]})]
                 for i in range(len(x))]
        expected = [np.stack(per) for per in zip(*items)]
        expected = [e[:, 0] if e.ndim > 1 and e.shape[1] == 1 else e for e in expected]
    else:
        expected = [r.transpose(0, 2, 3, 1) if r.ndim == 4 else r for r in session.run(outputs, {"x": x})]
    layer_of = {value: layer for layer, value in graph.layers}
    got = apply_jitted(spec, x.transpose(0, 2, 3, 1), tuple(layer_of[o] for o in outputs))
    for out, value in zip(outputs, expected):
        actual = np.asarray(got[layer_of[out]])
        assert actual.shape == value.shape, (actual.shape, value.shape)
        assert relative_error(actual, value) < 1e-4, relative_error(actual, value)


def test_quantized_qdq_model_matches_onnxruntime(tmp_path):
    """A QDQ-quantized conv (int8 per-channel weights, uint8 activations), as deployed models ship."""
    w = _f(6, 4, 3, 3, scale=0.3)
    w_scale = (np.abs(w).reshape(6, -1).max(1) / 127).astype(np.float32)
    w_q = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(w_q, "w_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(6, np.int8), "w_zero"),
        numpy_helper.from_array(np.float32(0.02), "a_scale"),
        numpy_helper.from_array(np.uint8(128), "a_zero"),
        numpy_helper.from_array(np.float32(0.05), "o_scale"),
        numpy_helper.from_array(np.uint8(0), "o_zero"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "a_scale", "a_zero"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
             helper.make_node("Conv", ["xd", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "o_scale", "o_zero"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "o_scale", "o_zero"], ["y"], name="out")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))
    graph = helper.make_graph(nodes, "qdq", [x], [helper.make_empty_tensor_value_info("y")], inits)
    path = str(tmp_path / "qdq.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    images = RNG.normal(size=SHAPE).astype(np.float32)
    expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(["y"], {"x": images})[0]
    spec = load_graph_model(path)
    import jax

    # the activation and its input gradient from one compiled program
    def total(v):
        out = spec.apply_preprocessed(v, ("out",))["out"]
        return out.sum(), out

    grad, out = fast_compile.jit(jax.grad(total, has_aux=True))(images.transpose(0, 2, 3, 1))
    out = np.asarray(out)
    # one quantization step of the output is the most a rounding tie may move a value
    assert np.max(np.abs(out - expected.transpose(0, 2, 3, 1))) <= 0.05 + 1e-6
    assert np.mean(np.abs(out - expected.transpose(0, 2, 3, 1)) < 1e-5) > 0.99
    assert np.count_nonzero(np.asarray(grad)) > 0.5 * grad.size  # rounding passes gradients straight through

"""`.onnx` files from torch.onnx.export load onto GraphModule and match onnxruntime and torch.

Each model is exported with torch 2.13 (`torch.onnx.export`, the dynamo exporter, opset 18+; and
the TorchScript exporter at opsets 11 / 13 with symbolic sizes) and loaded with
`load_graph_model`. Every layer (ONNX node) matches onnxruntime run on the same file with that
node's output exposed, and the model's output matches the torch module, to 1e-4 relative.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: the torchvision-layout references

import graph_torch_models as gm  # noqa: E402

from jaxvis.errors import JaxvisError  # noqa: E402
from jaxvis.models.graph import load_graph_model  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MODELS = gm.MODELS


def _export(model, path, size=64, legacy_opset=None):
    x = torch.zeros(1, 3, size, size)
    if legacy_opset is None:
        torch.onnx.export(model, (x,), str(path), dynamo=True)
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=legacy_opset, input_names=["image"],
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}})
    return str(path)


def _onnxruntime_layers(path, spec, images_nhwc):
    """Every layer's value from onnxruntime for each image alone (NCHW outputs as NHWC)."""
    model = onnx.load(path)
    values = [value for _, value in spec.module.graph.layers]
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in values)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    per_image = []
    name = session.get_inputs()[0].name
    for x in images_nhwc:
        results = session.run(values, {name: np.ascontiguousarray(x[None].transpose(0, 3, 1, 2))})
        per_image.append({
            layer: (r.transpose(0, 2, 3, 1) if r.ndim == 4 else r)
            for (layer, _), r in zip(spec.module.graph.layers, results)
        })
    return per_image


def _check_against_onnxruntime_and_torch(model, spec, path, x):
    """Every layer, for each image of the batch, against onnxruntime on that image alone (the file's
    batch is one); the output for the batch against torch. One compiled program gives every layer
    of the batch."""
    out = gm.apply_jitted(spec, x, spec.layer_names)
    per_item = spec.module.graph.per_item  # then a layer whose batch is not on axis 0 gains one in front
    graph = spec.module.graph
    for i, expected in enumerate(_onnxruntime_layers(path, spec, x)):
        assert set(expected) == set(spec.layer_names)
        for layer, value in expected.items():
            got = out[layer][i:i + 1]
            if per_item and np.shape(got) != value.shape:
                got = got[0]
            assert np.shape(got) == value.shape, layer
            assert gm.relative_error(got, value) < 1e-4, (layer, i)
    output = [layer for layer, value in graph.layers if value == graph.outputs[0]][-1]
    assert np.shape(out[output])[0] == len(x)
    assert gm.relative_error(out[output], gm.capture(model, x)[""]) < 1e-4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_node_matches_onnxruntime_and_the_output_matches_torch(name, tmp_path):
    model = gm.randomize(MODELS[name]())
    path = _export(model, tmp_path / f"{name}.onnx")
    spec = load_graph_model(path)
    x = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    _check_against_onnxruntime_and_torch(model, spec, path, x)


@pytest.mark.parametrize("name,opset", [("resnet18", 11), ("mobilenet_v3_block", 14), ("unet_decoder", 13),
                                        ("convnext_block", 17)])
def test_older_opsets_with_symbolic_sizes_take_an_input_size(name, opset, tmp_path):
    model = gm.randomize(MODELS[name]())
    path = _export(model, tmp_path / f"{name}_{opset}.onnx", legacy_opset=opset)
    assert load_graph_model(path).input_shape == (224, 224, 3)  # symbolic height and width: 224 by default
    spec = load_graph_model(path, input_size=(48, 56))
    assert spec.input_shape == (48, 56, 3)
    x = np.random.default_rng(1).uniform(size=(2, 48, 56, 3)).astype(np.float32)
    _check_against_onnxruntime_and_torch(model, spec, path, x)


def test_layers_are_node_names_and_logits_precede_the_softmax(tmp_path):
    model = gm.randomize(gm.SmallVGG())
    seq = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
    spec = load_graph_model(_export(seq, tmp_path / "vgg_softmax.onnx"))
    graph = spec.module.graph
    producer = graph.nodes[graph.producers()[graph.outputs[0]]]
    assert producer.op == "softmax"
    assert graph.layer_values[spec.logits_layer] == producer.inputs[0]
    assert all(name for name in spec.layer_names)


def _tiny_onnx(path, op_type, dims=(1, 3, 8, 8), **attrs):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    relu = helper.make_node("Relu", ["x"], ["r"], name="first")
    odd = helper.make_node(op_type, ["r"], ["y"], name="the_odd_one", **attrs)
    graph = helper.make_graph([relu, odd], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_unsupported_op_is_one_error_naming_op_node_and_supported_ops(tmp_path):
    path = _tiny_onnx(tmp_path / "hardmax.onnx", "Hardmax")
    with pytest.raises(JaxvisError) as error:
        load_graph_model(path)
    message = str(error.value)
    assert "Hardmax" in message and "the_odd_one" in message and "Conv" in message and "\n" not in message


def test_dynamic_shape_without_input_size_names_the_dimension(tmp_path):
    dynamic_channels = _tiny_onnx(tmp_path / "dync.onnx", "Sigmoid", dims=("N", "C", 5, 7))
    with pytest.raises(JaxvisError, match=r"channel dimension is dynamic \('C'\)"):
        load_graph_model(dynamic_channels)
    path = _tiny_onnx(tmp_path / "dyn.onnx", "Sigmoid", dims=("N", 3, "H", "W"))
    assert load_graph_model(path).input_shape == (224, 224, 3)
    spec = load_graph_model(path, input_size=(5, 7))
    out = spec.apply_preprocessed(np.zeros((3, 5, 7, 3), np.float32) - 1.0, ("the_odd_one",))["the_odd_one"]
    np.testing.assert_allclose(out, 0.5)


def test_channels_last_input_as_tensorflow_exports_it(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = rng.normal(size=(5, 3, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["unk__1", 10, 12, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
             helper.make_node("Conv", ["nchw", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 3, 1], name="to_nhwc")]
    r = helper.make_tensor_value_info("r", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "tf", [x], [y, r], [numpy_helper.from_array(w, "w")])
    path = str(tmp_path / "tf.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    spec = load_graph_model(path)
    assert spec.input_shape == (10, 12, 3)
    images = rng.uniform(size=(2, 10, 12, 3)).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    expected = session.run(["y", "r"], {"images": images})
    out = spec.apply_preprocessed(images, ("to_nhwc", "relu"))
    assert gm.relative_error(out["to_nhwc"], expected[0]) < 1e-5
    assert gm.relative_error(out["relu"], expected[1].transpose(0, 2, 3, 1)) < 1e-5

"""The ONNX reader: plain data and NumPy arrays out, one-line errors for bad files."""

import numpy as np
import pytest

from jaxvis.convert.onnx_file import read_onnx
from jaxvis.errors import WeightFileError

onnx = pytest.importorskip("onnx")


def _model(path, opset=17, external=False):
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 10
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    clip = helper.make_node("Clip", ["c", "lo", ""], ["y"], name="clip")
    graph = helper.make_graph([conv, clip], "g", [x], [y], [numpy_helper.from_array(w, "w"),
                                                          numpy_helper.from_array(np.float32(0.0), "lo")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
                  size_threshold=0)
    else:
        onnx.save(model, str(path))
    return w


def test_reads_nodes_initializers_and_inputs(tmp_path):
    w = _model(tmp_path / "m.onnx")
    model = read_onnx(str(tmp_path / "m.onnx"))
    np.testing.assert_array_equal(model.initializers["w"], w)
    assert model.inputs == (("x", ("N", 3, 8, 8), 1),)
    conv, clip = model.nodes
    assert conv.op_type == "Conv" and conv.attrs["pads"] == [1, 1, 1, 1]
    assert clip.inputs == ("c", "lo", "") and model.outputs == ("y",) and model.opsets["ai.onnx"] == 17


def test_external_data_next_to_the_model(tmp_path):
    w = _model(tmp_path / "ext.onnx", external=True)
    np.testing.assert_array_equal(read_onnx(str(tmp_path / "ext.onnx")).initializers["w"], w)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(WeightFileError, match="missing"):
        read_onnx(str(tmp_path / "ext.onnx"))


def _one_line(path, match):
    with pytest.raises(WeightFileError, match=match) as error:
        read_onnx(str(path))
    assert "\n" not in str(error.value)


def test_bad_files_are_one_line_errors(tmp_path):
    _model(tmp_path / "m.onnx")
    data = (tmp_path / "m.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    _one_line(tmp_path / "cut.onnx", "truncated or corrupt")
    _model(tmp_path / "old.onnx", opset=9)
    _one_line(tmp_path / "old.onnx", "opset 9 is not supported")
    _one_line(tmp_path / "none.onnx", "no such file")

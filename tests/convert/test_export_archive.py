"""The torch-free `.pt2` reader: tensors as torch saved them, and one-line errors for bad archives."""

import json
import mmap
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from jaxvis.convert.export_archive import read_export_archive
from jaxvis.convert.host_buffers import is_aligned
from jaxvis.convert.zip_members import crc32
from jaxvis.errors import WeightFileError
from jaxvis.models.graph import load_graph_model


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        self.register_buffer("strided", base.t())  # a non-contiguous view: strides (1, 4)
        self.register_buffer("brain", torch.linspace(-1, 1, 5).to(torch.bfloat16))

    def forward(self, x):
        return self.bn(self.conv(x)) + self.strided.sum() + self.brain.float().sum()


@pytest.fixture
def archive(tmp_path):
    model = _Net().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 8, 8),)), str(path))
    return model, path


def test_reads_every_weight_and_buffer_as_torch_has_it(archive):
    model, path = archive
    read = read_export_archive(str(path))
    for name, tensor in model.state_dict().items():
        if name in read.tensors:
            np.testing.assert_array_equal(read.tensors[name], tensor.float().numpy() if tensor.dtype == torch.bfloat16
                                          else tensor.numpy())
    assert {"conv.weight", "bn.running_var", "strided", "brain"} <= set(read.tensors)
    assert read.tensors["strided"].shape == (4, 3)
    assert "nodes" in read.program["graph"] and read.meta["torch_version"].startswith("2.")


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = edit(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item, data)


def _one_line_error(path, match):
    with pytest.raises(WeightFileError, match=match) as error:
        read_export_archive(str(path))
    assert "\n" not in str(error.value)


def test_truncated_archive_is_one_error(archive, tmp_path):
    _, path = archive
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.pt2"
        bad.write_bytes(data[:cut])
        _one_line_error(bad, "truncated|corrupt")


def test_pickled_weights_are_refused_never_unpickled(archive, tmp_path):
    _, path = archive

    def claim_pickle(name, data):
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            for entry in config["config"].values():
                entry["use_pickle"] = True
            return json.dumps(config).encode()
        return data

    bad = tmp_path / "pickled.pt2"
    _rewrite(path, bad, claim_pickle)
    _one_line_error(bad, "use_pickle")


def test_not_an_export_archive(tmp_path, archive):
    _, path = archive
    bad = tmp_path / "nomodel.pt2"
    _rewrite(path, bad, lambda name, data: None if name.endswith("models/model.json") else data)
    _one_line_error(bad, "models/model.json")
    text = tmp_path / "text.pt2"
    text.write_text("hello")
    _one_line_error(text, "zip")
    _one_line_error(tmp_path / "missing.pt2", "no such file")


def test_contiguous_float32_weights_are_read_only_views_of_the_mapped_file(archive):
    _, path = archive
    weight = read_export_archive(str(path)).tensors["conv.weight"]
    assert is_aligned(weight) and not weight.flags.writeable  # torch aligns records to 64 bytes; no copy
    base = weight
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def test_loaded_weights_own_their_memory_so_the_file_can_change_under_them(archive):
    model, path = archive
    spec = load_graph_model(str(path))
    before = {k: np.array(v) for k, v in spec.variables["params"].items()}
    path.write_bytes(b"")  # truncated in place: any view of the old mapping would now fault (SIGBUS)
    for name, value in spec.variables["params"].items():
        np.testing.assert_array_equal(np.asarray(value), before[name])
    np.testing.assert_array_equal(np.asarray(spec.variables["params"]["conv.weight"]),
                                  model.conv.weight.detach().numpy().transpose(2, 3, 1, 0))


@pytest.mark.parametrize("size", [0, 1, 4095, 1 << 20])
def test_the_crc_is_zlibs(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    assert crc32(data) == zlib.crc32(data.tobytes())


def test_a_flipped_byte_in_a_weight_fails_its_crc_check(archive, tmp_path):
    _, path = archive
    bad = tmp_path / "flipped.pt2"
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/weights/" in i.filename and not i.filename.endswith(".json"))
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)  # the local header's
    data[info.header_offset + 30 + name_length + extra_length + 1] ^= 0xFF  # a byte of the weight's data
    bad.write_bytes(bytes(data))
    _one_line_error(bad, "CRC")


def test_reader_imports_no_model_code():
    import subprocess
    import sys

    code = (
        "import sys, jaxvis.convert.export_archive, jaxvis.convert.onnx_file; "
        "bad = [m for m in sys.modules if m.startswith(('jaxvis.models', 'torch', 'jax.'))]; print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

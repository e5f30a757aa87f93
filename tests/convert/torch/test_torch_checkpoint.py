"""The torch-free checkpoint reader: every format equals torch.load exactly, and no file ever runs code."""

import dataclasses
import io
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import jaxvis
from jaxvis.convert.torch.checkpoint import load_pickled_object, load_state_dict
from jaxvis.errors import WeightFileError

FORMATS = ("zip", "legacy")
WHOLE_MODEL = "holds a pickled whole model ({}), not a state_dict: in PyTorch, run torch.save(model.state_dict(), path)"


def save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def crafted_state_dict(with_views=True):
    """Every dtype and layout torch.save can put in a state_dict."""
    g = torch.Generator().manual_seed(0)
    sd = OrderedDict()
    sd["conv.weight"] = torch.randn(4, 3, 3, 3, generator=g)
    sd["conv.bias"] = torch.randn(4, generator=g).half()
    sd["attn.bf16"] = torch.randn(3, 5, generator=g).bfloat16()
    sd["double"] = torch.randn(2, 3, generator=g).double()
    sd["bn.num_batches_tracked"] = torch.tensor(7)
    sd["ids"] = torch.randint(-(2**40), 2**40, (6,), generator=g)
    sd["int32"] = torch.randint(-1000, 1000, (2, 2), generator=g, dtype=torch.int32)
    sd["int16"] = torch.randint(-1000, 1000, (3,), generator=g, dtype=torch.int16)
    sd["int8"] = torch.randint(-100, 100, (3,), generator=g, dtype=torch.int8)
    sd["uint8"] = torch.randint(0, 255, (2, 3), generator=g, dtype=torch.uint8)
    sd["mask"] = torch.rand(3, 4, generator=g) > 0.5
    sd["scalar"] = torch.tensor(3.5)
    sd["bf16_scalar"] = torch.tensor(-1.25, dtype=torch.bfloat16)
    sd["empty"] = torch.empty(0, 7)
    if with_views:
        shared = torch.randn(20, generator=g)
        sd["fc.weight_t"] = torch.randn(3, 5, generator=g).t()
        sd["view_a"] = shared[2:8]
        sd["view_b"] = shared[5:17].view(3, 4)
        sd["strided"] = torch.randn(6, 6, generator=g)[::2, 1::3]
        sd["expanded"] = torch.randn(3, 1, generator=g).expand(3, 4)
        sd["bf16_t"] = torch.randn(4, 2, generator=g).bfloat16().t()
        sd["complex"] = torch.randn(3, generator=g, dtype=torch.complex64)
    return sd


def as_numpy(t):
    t = t.detach().resolve_conj().resolve_neg()
    if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        t = t.float()
    return t.numpy()


def assert_same(ours, reference):
    """Same keys in the same order, same dtype, shape and bits; arrays C-contiguous, writable, native order."""
    assert list(ours) == list(reference)
    for key, tensor in reference.items():
        want, got = as_numpy(tensor), ours[key]
        assert isinstance(got, np.ndarray), key
        assert got.flags.c_contiguous and got.flags.writeable and got.dtype.isnative, key
        assert (got.dtype, got.shape) == (want.dtype, want.shape), key
        np.testing.assert_array_equal(got, want, err_msg=key)


def assert_one_line_error(path, match=None):
    with pytest.raises(WeightFileError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    if match is not None:
        assert match in message, message
    return message


# ---------------------------------------------------------------------------------------------
# Equal to torch.load.


@pytest.mark.parametrize("fmt", FORMATS)
def test_crafted_state_dict_matches_torch_load(tmp_path, fmt):
    path = save(crafted_state_dict(), tmp_path / "sd.pth", fmt)
    assert_same(load_state_dict(path), torch.load(path, weights_only=True))


def test_legacy_save_really_is_legacy(tmp_path):
    path = save(crafted_state_dict(), tmp_path / "sd.pth", "legacy")
    assert not zipfile.is_zipfile(path)
    assert path.read_bytes()[:2] == b"\x80\x02"


def test_safetensors_matches_safetensors_torch(tmp_path):
    from safetensors.torch import load_file, save_file

    sd = {k: v.contiguous().clone() for k, v in crafted_state_dict(with_views=False).items()}
    path = tmp_path / "sd.safetensors"
    save_file(sd, path)
    ours, reference = load_state_dict(path), load_file(path)
    assert sorted(ours) == sorted(reference)
    assert_same(ours, {k: reference[k] for k in ours})
    renamed = path.rename(tmp_path / "sd.bin")  # found by its content, not by its extension
    assert_same(load_state_dict(renamed), {k: reference[k] for k in ours})


@pytest.mark.parametrize("fmt", FORMATS)
def test_rare_dtypes_and_tensor_flags_match_torch_load(tmp_path, fmt):
    g = torch.Generator().manual_seed(1)
    sd = {
        "param": nn.Parameter(torch.randn(3, generator=g)),
        "frozen": nn.Parameter(torch.randn(2, 2, generator=g), requires_grad=False),
        "conj": torch.randn(4, generator=g, dtype=torch.complex64).conj(),
        "neg": torch.randn(3, generator=g, dtype=torch.complex64).conj().imag,
        "cdouble": torch.randn(2, generator=g, dtype=torch.complex128),
        "conj_scalar": torch.tensor(1 + 2j, dtype=torch.complex64).conj(),
        "neg_scalar": torch.tensor(1 + 2j, dtype=torch.complex64).conj().imag,
    }
    if fmt == "zip":  # torch itself cannot read these back from a legacy file
        sd["u16"] = torch.tensor([1, 65535], dtype=torch.uint16)
        sd["u32"] = torch.tensor([[7, 2**32 - 1]], dtype=torch.uint32)
        sd["fp8"] = torch.randn(5, generator=g).to(torch.float8_e4m3fn)
        sd["fp8b"] = torch.randn(2, 3, generator=g).to(torch.float8_e5m2).t()
    path = save(sd, tmp_path / "rare.pth", fmt)
    assert_same(load_state_dict(path), torch.load(path, weights_only=True))


def test_real_mobilenet_checkpoint_matches_torch_load(mobilenet_checkpoint):
    with open(mobilenet_checkpoint, "rb") as f:
        assert f.read(4) == b"\x80\x02\x8a\x0a"  # the legacy format: a pickled magic number comes first
    ours = load_state_dict(mobilenet_checkpoint)
    assert len(ours) == 314
    assert_same(ours, torch.load(mobilenet_checkpoint, weights_only=True))
    assert ours["features.0.0.weight"].shape == (32, 3, 3, 3)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd, "epoch": 3, "arch": "tiny"},
    lambda sd: {"model": sd, "optimizer": torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1).state_dict()},
    lambda sd: {"model_state_dict": sd, "loss": 0.25},
    lambda sd: {"net": sd},
    lambda sd: {"model": {"state_dict": sd}, "step": 10},
    lambda sd: OrderedDict(("module." + k, v) for k, v in sd.items()),
    lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 1},
], ids=["state_dict", "model", "model_state_dict", "net", "nested", "dataparallel", "nested-dataparallel"])
def test_containers_are_unwrapped_and_module_prefix_stripped(tmp_path, fmt, wrap):
    sd = crafted_state_dict()
    path = save(wrap(sd), tmp_path / "ckpt.pth", fmt)
    assert_same(load_state_dict(path), sd)


def test_only_a_leading_module_prefix_is_stripped(tmp_path):
    sd = {"module.conv.weight": torch.ones(1), "head.module.bias": torch.zeros(1)}
    assert list(load_state_dict(save(sd, tmp_path / "m.pth", "zip"))) == ["conv.weight", "head.module.bias"]


def test_module_prefix_collision_is_an_error(tmp_path):
    path = save({"module.w": torch.ones(1), "w": torch.zeros(1)}, tmp_path / "clash.pth", "zip")
    assert_one_line_error(path, "'w'")


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_pickled_object_keeps_the_metadata(tmp_path, fmt):
    sd = crafted_state_dict(with_views=False)
    obj = {"epoch": 3, "arch": "mobilenet_v2", "best": 0.5, "tags": ["a", ("b", 1)], "state_dict": sd}
    loaded = load_pickled_object(save(obj, tmp_path / "ckpt.pth", fmt))
    assert {k: loaded[k] for k in ("epoch", "arch", "best", "tags")} == {
        "epoch": 3, "arch": "mobilenet_v2", "best": 0.5, "tags": ["a", ("b", 1)]}
    assert type(loaded["state_dict"]) is OrderedDict
    assert_same(loaded["state_dict"], sd)


def test_a_bare_tensor_is_no_state_dict(tmp_path):
    path = save(torch.ones(3), tmp_path / "t.pth", "zip")
    np.testing.assert_array_equal(load_pickled_object(path), np.ones(3, np.float32))
    assert_one_line_error(path, "not a state_dict")


def test_a_dict_with_stray_values_is_no_state_dict(tmp_path):
    assert_one_line_error(save({"w": torch.ones(1), "epoch": 3}, tmp_path / "x.pth", "zip"), "'epoch' is a int")


def _byteswapped_copy(src, dst, numpy_dtype, edit=None):
    """A copy of a zip checkpoint as a big-endian machine would write it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif re.fullmatch(r"[^/]+/data/\d+", info.filename):
                data = np.frombuffer(data, numpy_dtype).byteswap().tobytes()
            zout.writestr(info.filename, data)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.int64, torch.bfloat16])
def test_big_endian_byteorder_record_is_honoured(tmp_path, dtype):
    g = torch.Generator().manual_seed(2)
    base = torch.randn(30, generator=g) * 100
    sd = {"a": base[:12].view(3, 4).to(dtype), "b": base[12:].to(dtype).view(3, 6).t(), "c": base[5].to(dtype)}
    little = save(sd, tmp_path / "little.pth", "zip")
    big = tmp_path / "big.pth"
    _byteswapped_copy(little, big, {torch.bfloat16: np.uint16}.get(dtype, as_numpy(sd["a"]).dtype))
    assert_same(load_state_dict(big), torch.load(big, weights_only=True))  # torch swaps the bytes too
    assert_same(load_state_dict(big), sd)


# ---------------------------------------------------------------------------------------------
# Never runs code.


class Payload:
    """Unpickling this runs `os.system(command)`."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw-pickle"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    obj = {"w": torch.ones(2), "evil": Payload(f"touch {marker}")}
    path = tmp_path / "evil.pth"
    if fmt == "raw-pickle":
        path.write_bytes(pickle.dumps(Payload(f"touch {marker}"), protocol=2))
        pickle.loads(path.read_bytes())  # the control: the payload is live
    else:
        save(obj, path, fmt)
        torch.load(path, weights_only=False)  # the control: the payload is live
    assert marker.exists()
    marker.unlink()

    message = assert_one_line_error(path, f"asks for {os.system.__module__}.system, which jaxvis never executes")
    assert message.startswith(f"refused to load {path}")
    with pytest.raises(WeightFileError):
        load_pickled_object(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("call", [
    (eval, ("1+1",)), (exec, ("x=1",)), (__import__, ("os",)), (getattr, ("s", "upper")),
    (subprocess.Popen, (["true"],)), (os.system, ("true",)),
], ids=["eval", "exec", "__import__", "getattr", "Popen", "system"])
def test_dangerous_globals_are_refused(tmp_path, protocol, call):
    class Reduce:
        def __reduce__(self):
            return call

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": Reduce()}, protocol=protocol))
    # protocol 0 is text, which torch never writes: refused before any pickle is read
    assert_one_line_error(path, "which jaxvis never executes" if protocol else "not a PyTorch checkpoint")


def _zip_with_pickle(path, payload: bytes, extra=()):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", b"little")
        for name, data in extra:
            z.writestr(name, data)
    return path


@pytest.mark.parametrize("payload", [
    b"\x80\x02ctorch\nFloatStorage\n)R.",  # REDUCE on an allow-listed non-callable
    b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x03\x00\x00\x00_fnK\x01sb.",  # BUILD into a rebuilder
    b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x03\x00\x00\x00_fnK\x01s\x86b.",  # BUILD, slot state
    b"\x80\x02ccollections\nOrderedDict\nN}X\x04\x00\x00\x00keysK\x01s\x86b.",  # BUILD into a builtin class
    b"\x80\x02ctorch\nFloatStorage\nN}X\x05\x00\x00\x00dtypeK\x01s\x86b.",  # BUILD into a frozen stand-in
    b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x00)))NtR.",  # a tensor without a storage
], ids=["reduce-storage", "build-dict", "build-slots", "build-ordereddict", "build-stand-in", "no-storage"])
def test_allow_listed_globals_cannot_be_abused(tmp_path, payload):
    assert_one_line_error(_zip_with_pickle(tmp_path / "abuse.pth", payload))
    good = save(crafted_state_dict(), tmp_path / "good.pth", "zip")  # the stand-ins are unchanged
    assert_same(load_state_dict(good), torch.load(good, weights_only=True))


@pytest.mark.parametrize("pid", [("module", 1, 2, 3), ("foo", "0"), "0"])
def test_persistent_ids_other_than_storages_are_refused(tmp_path, pid):
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return pid if isinstance(obj, Payload) else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": Payload("true")})
    message = assert_one_line_error(_zip_with_pickle(tmp_path / "pid.pth", buf.getvalue()))
    if pid[0] == "module":
        assert "whole model" in message


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3)


@dataclasses.dataclass
class TrainConfig:
    lr: float = 0.1


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_model_is_refused_with_a_fix(tmp_path, fmt):
    path = save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), tmp_path / "model.pth", fmt)
    message = assert_one_line_error(path, WHOLE_MODEL.format("torch.nn.modules.container.Sequential"))
    assert message.startswith(str(path))


@pytest.mark.parametrize("fmt", FORMATS)
def test_user_model_class_is_refused_as_a_whole_model(tmp_path, fmt):
    path = save({"model": TinyNet(), "epoch": 1}, tmp_path / "model.pth", fmt)
    assert_one_line_error(path, WHOLE_MODEL.format(f"{TinyNet.__module__}.TinyNet"))


def test_other_user_classes_are_refused_plainly(tmp_path):
    path = save({"w": torch.ones(1), "config": TrainConfig()}, tmp_path / "cfg.pth", "zip")
    assert_one_line_error(path, f"asks for {TrainConfig.__module__}.TrainConfig, which jaxvis never executes")


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_quantized_tensors_are_named_as_unsupported(tmp_path):
    q = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)
    assert_one_line_error(save({"q": q}, tmp_path / "q.pth", "zip"), "does not read (torch._utils._rebuild_qtensor)")


def test_reader_works_without_torch(tmp_path, mobilenet_checkpoint):
    path = save(crafted_state_dict(), tmp_path / "sd.pth", "zip")
    script = (
        "import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
        "from jaxvis.convert.torch.checkpoint import load_state_dict\n"
        f"a = load_state_dict({str(mobilenet_checkpoint)!r}); b = load_state_dict({str(path)!r})\n"
        "assert sys.modules['torch'] is None\n"
        "print(len(a), len(b))\n"
    )
    root = os.path.dirname(os.path.dirname(jaxvis.__file__))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["314", str(len(crafted_state_dict()))]


# ---------------------------------------------------------------------------------------------
# Bad files: always one WeightFileError line, never another exception.


def test_missing_empty_and_directory(tmp_path):
    assert_one_line_error(tmp_path / "nope.pth", "no such weight file")
    (tmp_path / "empty.pth").write_bytes(b"")
    assert_one_line_error(tmp_path / "empty.pth", "is empty")
    (tmp_path / "dir.pth").mkdir()
    assert_one_line_error(tmp_path / "dir.pth", "is a directory")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = rng.bytes(int(rng.integers(1, 5000)))
    if seed % 2:  # also random bytes behind each format's magic
        data = [b"PK\x03\x04", b"\x80\x02", b"\x10\x00\x00\x00\x00\x00\x00\x00{"][seed % 3] + data
    (tmp_path / "r.pth").write_bytes(data)
    assert_one_line_error(tmp_path / "r.pth")


def test_foreign_files(tmp_path):
    png = tmp_path / "image.pth"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00")
    assert_one_line_error(png, "is a PNG image, not a PyTorch checkpoint")
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "keras.pth", "w") as f:
        f["w"] = np.ones(3)
    assert_one_line_error(tmp_path / "keras.pth", "is an HDF5 file")
    (tmp_path / "plain.pth").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    assert_one_line_error(tmp_path / "plain.pth", "not one written by torch.save")


def test_zip_without_data_pkl(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.pth", "w") as z:
        z.writestr("readme.txt", "hello")
    assert_one_line_error(tmp_path / "other.pth", "zip archive without data.pkl")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive(tmp_path):
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), tmp_path / "scripted.pt")
    assert_one_line_error(tmp_path / "scripted.pt", "TorchScript")


def test_storage_shorter_than_the_tensor(tmp_path):
    src = save({"w": torch.randn(4, 5)}, tmp_path / "ok.pth", "zip")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp_path / "short.pth", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info.filename, data[: len(data) // 2] if info.filename.endswith("/data/0") else data)
    assert_one_line_error(tmp_path / "short.pth", "holds 40 bytes, but a tensor of shape (4, 5) at offset 0 needs 80")


def test_real_checkpoint_cut_in_half(tmp_path, mobilenet_checkpoint):
    with open(mobilenet_checkpoint, "rb") as f:
        data = f.read()
    (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
    assert_one_line_error(tmp_path / "half.pth", "is truncated")
    zipped = save(torch.load(mobilenet_checkpoint, weights_only=True), tmp_path / "zip.pth", "zip")
    (tmp_path / "zhalf.pth").write_bytes(zipped.read_bytes()[: zipped.stat().st_size // 2])
    assert_one_line_error(tmp_path / "zhalf.pth", "truncated or corrupt zip")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_truncation_is_a_weight_file_error(tmp_path, fmt):
    data = save(crafted_state_dict(), tmp_path / "sd.pth", fmt).read_bytes()
    cut = tmp_path / "cut.pth"
    for size in range(1, len(data), 5 if fmt == "legacy" else 13):
        cut.write_bytes(data[:size])
        assert_one_line_error(cut)


@pytest.mark.parametrize("index", [2**31 - 1, 2**24])
def test_a_memo_index_the_pickle_cannot_have_made_is_refused_before_allocating_for_it(tmp_path, index):
    """CPython's C unpickler grows its memo array to the largest index a PUT names: a LONG_BINPUT of
    2**31 - 1 in a few bytes of pickle asks for 16+ GB (a corrupted legacy byte did this, and the
    process was killed for memory). The loader refuses it first, without allocating."""
    import resource
    import struct

    pickled = b"\x80\x02}r" + struct.pack("<I", index) + b"."  # PROTO 2, EMPTY_DICT, LONG_BINPUT, STOP
    path = tmp_path / "memo.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert_one_line_error(path, f"memo entry {index}")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kB


def _entries_changed(got: dict, want: dict) -> int:
    """How many of `want`'s entries are missing from `got` or differ in shape, dtype or bytes."""
    return sum(key not in got or got[key].shape != value.shape or got[key].dtype != value.dtype
               or got[key].tobytes() != value.tobytes() for key, value in want.items())


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupted_bytes_load_or_fail_cleanly(tmp_path, fmt):
    """Three random bytes rewritten: a one-line WeightFileError, or a load that is the original up to
    what the three bytes can explain -- exactly the original for zip (every record has a CRC); for
    legacy files (no checksums) at most 3 entries differ, since one byte is one key's character, one
    tensor's metadata or one byte of one tensor's storage.

    Legacy files get no views here: a byte of a storage that two views share changes both, and a
    stride-0 (expanded) or partial view takes a corrupted size that stays inside its storage. The
    legacy file names storages by memory address, so its bytes (and which corruptions land where)
    change from run to run; the bound holds for any of them."""
    data = save(crafted_state_dict(with_views=fmt == "zip"), tmp_path / "sd.pth", fmt).read_bytes()
    want = load_state_dict(tmp_path / "sd.pth")
    bad = tmp_path / "bad.pth"
    rng = np.random.default_rng(3)
    loaded = 0
    for _ in range(300):
        flipped = bytearray(data)
        for pos in rng.integers(0, min(len(data), 3000), size=3):
            flipped[pos] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(flipped))
        try:
            got = load_state_dict(bad)
        except WeightFileError as err:
            assert "\n" not in str(err)
            continue
        loaded += 1
        assert _entries_changed(got, want) <= (0 if fmt == "zip" else 3)
    assert loaded < 30  # most corruptions are caught

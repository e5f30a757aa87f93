"""One way in: `load_model` and the CLI's `--model` / `--arch`, `jaxvis layers FILE`, `jaxvis convert`."""

import pytest

from jaxvis.cli import main
from jaxvis.errors import JaxvisError
from jaxvis.models.load import describe_source, load_model

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    from keras_reference import fast_init, keras, randomize

    L = keras.layers
    keras.backend.clear_session()
    with fast_init():
        model = keras.Sequential([keras.Input((20, 20, 3)), L.Conv2D(4, 3, activation="relu", name="c1"),
                                  L.MaxPooling2D(name="p1"), L.Flatten(name="f"), L.Dense(3, name="logits")],
                                 name="small")
    randomize(model, 1)
    folder = tmp_path_factory.mktemp("keras")
    model.save(folder / "small.keras")
    model.save(folder / "small.h5")
    return folder


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_describe_source(keras_files, tmp_path):
    assert describe_source(None) == "zoo" and describe_source("tiny_cnn") == "zoo"
    assert describe_source(str(keras_files / "small.keras")) == "keras"
    assert describe_source(str(keras_files / "small.h5")) == "keras"
    (tmp_path / "w.pth").write_bytes(b"x")
    (tmp_path / "m.jaxvis").write_bytes(b"x")
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "m.pt2").write_bytes(b"x")
    (tmp_path / "m.tflite").write_bytes(b"x")
    assert describe_source(str(tmp_path / "w.pth")) == "torch"
    assert describe_source(str(tmp_path / "m.jaxvis")) == "converted"
    assert describe_source(str(tmp_path / "m.onnx")) == describe_source(str(tmp_path / "m.pt2")) == "graph"
    with pytest.raises(JaxvisError, match="unknown model file type.*[.]onnx"):
        describe_source(str(tmp_path / "m.tflite"))
    with pytest.raises(JaxvisError, match="is a directory"):
        describe_source(str(tmp_path))
    with pytest.raises(JaxvisError, match="no such model file"):
        describe_source(str(tmp_path / "missing.pth"))
    with pytest.raises(JaxvisError, match="unknown model .*'vgg99'; valid: .*tiny_cnn"):
        describe_source("vgg99")


def test_torch_file_needs_a_known_arch(mobilenet_checkpoint):
    with pytest.raises(JaxvisError, match="--arch .*mobilenet_v2"):
        load_model(mobilenet_checkpoint)
    with pytest.raises(JaxvisError, match="unknown architecture 'resnet9'; valid: .*mobilenet_v2"):
        load_model(mobilenet_checkpoint, arch="resnet9")
    with pytest.raises(JaxvisError, match="tiny_cnn takes no weight file"):
        load_model(mobilenet_checkpoint, arch="tiny_cnn")
    with pytest.raises(JaxvisError, match="mobilenet_v2-b0353104.pth"):
        load_model(mobilenet_checkpoint, arch="keras_vgg16")  # a torch file is not a Keras one


def test_layers_of_a_pth_with_arch(capsys, mobilenet_checkpoint):
    code, out, err = run(capsys, "layers", mobilenet_checkpoint, "--arch", "mobilenet_v2")
    assert code == 0, err
    assert "mobilenet_v2: input 224x224x3" in out and "features.18" in out


@pytest.mark.parametrize("file", ["small.keras", "small.h5"])
def test_layers_of_keras_files(capsys, keras_files, file):
    code, out, err = run(capsys, "layers", str(keras_files / file))
    assert code == 0, err
    assert f"{file}: input 20x20x3, 4 layers" in out and "c1 " in out and "(3,)" in out


def test_convert_then_layers_and_model_option(capsys, keras_files, tmp_path):
    out_file = tmp_path / "small.jaxvis"
    code, out, err = run(capsys, "convert", str(keras_files / "small.h5"), "--out", str(out_file))
    assert code == 0, err
    assert out_file.exists() and "small.h5: 4 layers" in out
    code, out, err = run(capsys, "layers", str(out_file))
    assert code == 0, err
    assert "small.h5: input 20x20x3, 4 layers" in out
    # --model takes the file too, for every job (and `layers` with --model as with MODEL)
    code, out, err = run(capsys, "layers", "--model", str(out_file))
    assert code == 0 and "small.h5: input 20x20x3, 4 layers" in out, err
    code, out, err = run(capsys, "convert", "tiny_cnn", "--out", str(tmp_path / "tiny.jaxvis"))
    assert code == 0, err
    code, out, err = run(capsys, "layers", str(tmp_path / "tiny.jaxvis"))
    assert code == 0 and "conv3" in out


@pytest.mark.parametrize("argv, message", [
    (["layers", "{tmp}/missing.pth", "--arch", "mobilenet_v2"], "no such model file"),
    (["layers", "{tmp}"], "is a directory"),
    (["convert", "{tmp}/missing.keras", "--out", "{tmp}/x.jaxvis"], "no such model file"),
    (["convert", "tiny_cnn", "--out", "{tmp}/x.bin"], "--out must end with .jaxvis"),
    (["layers", "{tmp}/w.pth"], "--arch"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, argv, message):
    (tmp_path / "w.pth").write_bytes(b"\x80\x02}q\x00.")
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_preprocess_labels_and_input_size_are_the_users(tmp_path):
    from jaxvis.models.spec import KERAS_CAFFE, KERAS_TF, Preprocess

    assert load_model("tiny_cnn", preprocess="tf").preprocess == KERAS_TF
    assert load_model("tiny_cnn", preprocess="caffe").preprocess == KERAS_CAFFE
    custom = load_model("tiny_cnn", preprocess="mean=0.4,0.5,0.6,std=0.2,0.2,0.3,scale=1,bgr").preprocess
    assert custom == Preprocess(mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.3), scale=1.0, bgr=True)
    names = [f"class {i}" for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    assert load_model("tiny_cnn", labels=str(tmp_path / "labels.txt")).class_names == tuple(names)
    assert load_model("tiny_cnn", labels=",".join(names)).class_names == tuple(names)
    assert load_model("tiny_cnn", input_size="40,48").input_shape == (40, 48, 3)
    with pytest.raises(JaxvisError, match="unknown preprocessing .*'imagenet'; valid: .*caffe"):
        load_model("tiny_cnn", preprocess="imagenet")
    with pytest.raises(JaxvisError, match="std must not be 0"):
        load_model("tiny_cnn", preprocess="mean=0.5,std=0")
    with pytest.raises(JaxvisError, match="3 labels given for the 10 classes"):
        load_model("tiny_cnn", labels="a,b,c")
    with pytest.raises(JaxvisError, match="at least 8 pixels"):
        load_model("tiny_cnn", input_size="4,4")


def test_convert_keeps_the_users_preprocess_and_labels(capsys, tmp_path):
    labels = ",".join(f"digit{i}" for i in range(10))
    out = tmp_path / "tiny.jaxvis"
    code, _, err = run(capsys, "convert", "tiny_cnn", "--preprocess", "raw", "--labels", labels, "--out", str(out))
    assert code == 0, err
    spec = load_model(str(out))
    assert spec.preprocess.scale == 255.0 and spec.class_names[3] == "digit3"
    code, _, err = run(capsys, "atlas", "--model", str(out), "--layer", "logits", "--filters", "3", "--steps", "2",
                       "--size", "32", "--octaves", "1", "--out", str(tmp_path / "atlas"), "--quiet", "--no-cache")
    assert code == 0, err
    import json

    manifest = json.loads((tmp_path / "atlas" / "logits" / "manifest.json").read_text())
    assert manifest["filters"][0]["label"] == "3 digit3"

"""Keras 3 (JAX backend) references for the Keras converter tests: build, randomize, save, probe.

`KERAS_BACKEND=jax` is set by conftest before anything imports keras. Keras draws its initial
weights with one freshly compiled JAX program per weight shape (tens of seconds for InceptionV3
on 2 cores), so models are built under `fast_init()` (zeros) and then given random weights with
NumPy by `randomize`, which also makes every BatchNorm non-trivial.
"""

from __future__ import annotations

import contextlib
import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import fast_compile  # noqa: E402
import keras  # noqa: E402
import numpy as np
from keras.src import backend as keras_backend  # noqa: E402


@contextlib.contextmanager
def fast_init():
    """Build Keras models with zero initial weights (no per-shape JAX compiles); `randomize` after."""
    names = ("uniform", "normal", "truncated_normal")
    saved = {name: getattr(keras_backend.random, name) for name in names}

    def zeros(shape, *args, dtype=None, seed=None, **kwargs):
        return np.zeros(tuple(shape), dtype or "float32")

    for name in names:
        setattr(keras_backend.random, name, zeros)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(keras_backend.random, name, fn)


def randomize(model, seed: int = 0):
    """Random weights in a trained-like regime: LeCun-normal kernels (variance 1 / fan_in), random BN stats.

    (He scaling with random BN statistics drives MobileNetV2 into saturated, chaotic ReLU6s, where
    float32 rounding differences between two correct conv formulations grow to 1e-4 by block 16.)
    """
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        shape, path = tuple(weight.shape), weight.path
        leaf = path.rsplit("/", 1)[-1]
        if len(shape) >= 2:
            fan_in = (
                int(np.prod(shape[:-1]))
                if "depthwise" not in path and leaf != "depthwise_kernel"
                else int(np.prod(shape[:-2]))
            )
            value = rng.standard_normal(shape) * np.sqrt(1.0 / max(fan_in, 1))
        elif leaf == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(0.0, 0.1, shape)
        values.append(value.astype(np.float32))
    model.set_weights(values)
    return model


def reference(model, x, names):
    """Keras's activations `{name: array}` of `names` for `x` (softmax layers give probabilities, as in
    Keras), plus `<name>/pre_softmax` for each softmax-activated layer among them: its output with the
    softmax swapped for a linear activation (keras-vis's swap).

    One program computes them all: each swapped layer's linear twin (same class, config and weights)
    is called on the layer's own input next to it.
    """
    tensors = {name: model.get_layer(name).output for name in names}
    for name in names:
        layer = model.get_layer(name)
        if getattr(layer, "activation", None) is keras.activations.softmax:
            config = {**layer.get_config(), "activation": "linear", "name": f"{name}_pre_softmax"}
            twin = type(layer).from_config(config)
            with fast_init():
                tensors[f"{name}/pre_softmax"] = twin(layer.input)
            twin.set_weights(layer.get_weights())
    probe = keras.Model(model.inputs, list(tensors.values()))
    forward = fast_compile.jit(lambda trainable, other, x: probe.stateless_call(trainable, other, x, training=False)[0])
    outputs = forward([v.value for v in probe.trainable_variables], [v.value for v in probe.non_trainable_variables],
                      np.asarray(x))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {name: np.asarray(out) for name, out in zip(tensors, outputs, strict=True)}


def relative_error(got, want) -> float:
    """max |got - want| / max |want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


# ---------------------------------------------------------------------------------------------
# Keras 2 files, written by hand (Keras 3 only writes its own config format, even in legacy .h5).

_KERAS2_WEIGHT_NAMES = {"DepthwiseConv2D": {"kernel": "depthwise_kernel"}}


def keras2_layer_config(layer) -> dict:
    """A Keras 3 layer's config in Keras 2 spelling (string dtype, batch_input_shape)."""
    config = dict(layer.get_config())
    config["dtype"] = "float32"
    if type(layer).__name__ == "InputLayer":
        config = {"batch_input_shape": list(config["batch_shape"]), "dtype": "float32", "sparse": False,
                  "ragged": False, "name": layer.name}
    return config


def _inbound_names(layer) -> list[str]:
    node = layer._inbound_nodes[0]  # noqa: SLF001 -- test fixture: read Keras's own graph
    return [tensor._keras_history[0].name for tensor in node.input_tensors]  # noqa: SLF001


def keras2_model_config(model, *, sequential_list: bool = False) -> dict:
    """The Keras 2 `model_config` of a Keras 3 Sequential / Functional model."""
    if isinstance(model, keras.Sequential):
        entries = []
        for i, layer in enumerate(model.layers):
            config = keras2_layer_config(layer)
            if i == 0 and sequential_list:
                config["batch_input_shape"] = [None, *model.input_shape[1:]]
            entries.append({"class_name": type(layer).__name__, "config": config})
        if sequential_list:  # Keras 2.0-2.2: the config is the layer list, input shape on the first layer
            return {"class_name": "Sequential", "config": entries}
        input_entry = {"class_name": "InputLayer", "config": {
            "batch_input_shape": [None, *model.input_shape[1:]], "dtype": "float32", "sparse": False,
            "ragged": False, "name": f"{model.layers[0].name}_input"}}
        return {"class_name": "Sequential", "config": {"name": model.name, "layers": [input_entry] + entries}}
    layers = []
    for layer in model.layers:
        inbound = [] if type(layer).__name__ == "InputLayer" else [[[name, 0, 0, {}] for name in _inbound_names(layer)]]
        layers.append({"class_name": type(layer).__name__, "config": keras2_layer_config(layer), "name": layer.name,
                       "inbound_nodes": inbound})
    outputs = [[t._keras_history[0].name, 0, 0] for t in model.outputs]  # noqa: SLF001
    inputs = [[t._keras_history[0].name, 0, 0] for t in model.inputs]  # noqa: SLF001
    return {"class_name": "Functional", "config": {"name": model.name, "layers": layers, "input_layers": inputs,
                                                   "output_layers": outputs}}


def _write_layer_groups(group, model, *, layer_names=None, weight_name=None):
    names = layer_names or [layer.name for layer in model.layers]
    group.attrs["layer_names"] = [name.encode() for name in names]
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = b"2.2.4"
    for name, layer in zip(names, model.layers):
        sub = group.create_group(name)
        weight_names = []
        for weight in layer.weights:
            leaf = weight.path.rsplit("/", 1)[-1]
            leaf = _KERAS2_WEIGHT_NAMES.get(type(layer).__name__, {}).get(leaf, leaf)
            full = weight_name(name, leaf) if weight_name else f"{name}/{leaf}:0"
            sub.create_dataset(full, data=np.asarray(weight))
            weight_names.append(full.encode())
        sub.attrs["weight_names"] = weight_names


def write_keras2_model_h5(model, path, *, sequential_list: bool = False):
    """A Keras 2 full-model .h5 (`model_config` + `model_weights`), as Keras 2.2-2.4 wrote them."""
    import h5py

    config = keras2_model_config(model, sequential_list=sequential_list)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps({**config, "keras_version": "2.2.4", "backend": "tensorflow"}).encode()
        _write_layer_groups(f.create_group("model_weights"), model)
    return path


def write_keras2_weights_h5(model, path, *, layer_names=None, skip=(), weight_name=None):
    """A Keras 2 weights-only .h5 (layer groups at the root), e.g. the Keras Applications downloads.

    `layer_names` renames the layers (positional loading), `skip` leaves layers out (a `_notop` file),
    `weight_name(layer, leaf)` spells the weight names (the VGG16 download: `block1_conv1_W_1:0`).
    """
    import h5py

    kept = [layer for layer in model.layers if layer.name not in set(skip)]

    class _View:
        layers = kept

    with h5py.File(path, "w") as f:
        _write_layer_groups(f, _View, layer_names=layer_names, weight_name=weight_name)
    return path

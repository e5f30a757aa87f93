"""Keras models nested in models (the transfer-learning pattern): loaded from `.keras` and `.h5`,
inner layers addressed by path (`vgg16/block5_conv3`), outer ones by name, each equal to Keras's.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from fast_compile import jit
from keras_reference import fast_init, keras, randomize, relative_error

from jaxvis.models import load_model
from jaxvis.models.converted import save_converted

L = keras.layers
TOLERANCE = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def vgg_transfer():
    """`Sequential([VGG16(include_top=False), Flatten(), Dense()])`, as in Deep Learning with Python 5.3."""
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    return keras.Sequential([base, L.Flatten(name="flatten"), L.Dense(16, activation="relu", name="fc"),
                             L.Dense(3, activation="softmax", name="out")], name="transfer")


def functional_calling_submodels():
    """A functional model calling a functional sub-model (with BatchNorm, whose moving statistics Keras 2
    stores after all trainable weights) that itself holds a Sequential."""
    inner_seq = keras.Sequential([keras.Input((16, 16, 8)), L.Conv2D(8, 3, padding="same", name="conv"),
                                  L.BatchNormalization(name="bn")], name="inner_seq")
    image = L.Input((16, 16, 3), name="sub_in")
    x = L.Conv2D(8, 3, padding="same", name="conv")(image)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Add(name="add")([x, inner_seq(x)])
    sub = keras.Model(image, x, name="block")
    outer_in = L.Input((16, 16, 3), name="image")
    y = L.Conv2D(3, 1, name="conv")(outer_in)
    y = sub(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(outer_in, L.Dense(4, name="logits")(y), name="outer")


def _probe(model, x, paths):
    """Keras's activation of each path: inner layers are probed inside their own model, fed with what
    the outer model passes that model (itself probed in the outer model); the layers of one model are
    probed together, and each model's feed is computed once."""
    feeds = {(): np.asarray(x)}  # owner path -> (owner, what the owner is fed)
    owners = {(): model}

    def owner_of(parts):
        if parts not in owners:
            parent, value = owner_of(parts[:-1]), feeds[parts[:-1]]
            sub = parent.get_layer(parts[-1])
            feed = sub._inbound_nodes[-1].input_tensors[0]  # noqa: SLF001 -- the tensor the sub-model is called on
            if feed is not parent.inputs[0]:
                value = keras.Model(parent.inputs, feed).predict(value, verbose=0)
            owners[parts], feeds[parts] = sub, value
        return owners[parts]

    groups = {}
    for path in paths:
        *parts, leaf = path.split("/")
        groups.setdefault(tuple(parts), []).append(leaf)
    out = {}
    for parts, leaves in groups.items():
        owner = owner_of(parts)
        tensors = []
        for leaf in leaves:
            layer = owner.get_layer(leaf)
            # a nested model's `.output` is its own graph's: take the output of its call in `owner` instead
            tensors.append(layer._inbound_nodes[-1].output_tensors[0] if isinstance(layer, keras.Model)  # noqa: SLF001
                           else layer.output)
        values = keras.Model(owner.inputs, tensors).predict(feeds[parts], verbose=0)
        values = values if isinstance(values, (list, tuple)) else [values]
        out.update({"/".join((*parts, leaf)): value for leaf, value in zip(leaves, values, strict=True)})
    return {path: out[path] for path in paths}


def _build(fn, seed):
    keras.backend.clear_session()
    with fast_init():
        model = fn()
    return randomize(model, seed)


CASES = {
    "vgg_transfer": (vgg_transfer, (32, 32, 3),
                     ["vgg16", "vgg16/block1_conv1", "vgg16/block3_pool", "vgg16/block5_conv3", "flatten", "fc",
                      "out"]),
    "functional": (functional_calling_submodels, (16, 16, 3),
                   ["conv", "block/conv", "block/bn", "block/inner_seq/conv", "block/inner_seq/bn",
                    "block/inner_seq", "block/add", "block", "gap", "logits"]),
}


@pytest.fixture(scope="module", params=list(CASES))
def nested(request, tmp_path_factory):
    fn, shape, names = CASES[request.param]
    model = _build(fn, seed=len(request.param))
    folder = tmp_path_factory.mktemp(request.param)
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    x = np.random.default_rng(0).uniform(-1, 1, (2, *shape)).astype(np.float32)
    return model, folder, x, names, _probe(model, x, names)


@pytest.mark.parametrize("file", ["model.keras", "model.h5"])
def test_nested_models_match_keras(nested, file):
    model, folder, x, names, want = nested
    spec = load_model(folder / file)
    assert set(names) <= set(spec.layer_names)
    got = jit(lambda v, x: spec.module.apply(v, x, outputs=tuple(names)))(spec.variables, jnp.asarray(x))
    errors = {name: relative_error(got[name], want[name]) for name in names}
    assert max(errors.values()) < TOLERANCE, errors


def test_inner_layers_are_named_by_path(nested):
    model, folder, _, _, _ = nested
    spec = load_model(folder / "model.keras")
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)][0]
    assert all(f"{inner.name}/{layer.name}" in spec.layer_names for layer in inner.layers)


def test_nested_model_converts_to_a_jaxvis_file(nested, tmp_path):
    """`jaxvis convert` keeps a nested model: the `.jaxvis` file gives the same activations."""
    _, folder, x, names, _ = nested
    spec = load_model(folder / "model.keras")
    again = load_model(save_converted(spec, tmp_path / "model.jaxvis"))
    assert again.layer_names == spec.layer_names
    forward = jit(lambda module, v, x: module.apply(v, x, outputs=tuple(names)), static_argnums=0)
    first, second = (forward(s.module, s.variables, jnp.asarray(x)) for s in (spec, again))
    assert all(np.array_equal(first[name], second[name]) for name in names)


def test_legacy_nested_group_is_split_by_weight_path():
    """A Keras 2 `.h5` stores a nested model's weights in one group, every trainable weight before the
    moving statistics: they are grouped by their layer path, not by position."""
    from jaxvis.convert.keras.file import LegacyWeights, Misfit

    def arrays(*names):
        return [(name, np.full((1,), i, np.float32)) for i, name in enumerate(names)]

    weights = LegacyWeights({
        "base": arrays("conv/kernel:0", "bn/gamma:0", "bn/beta:0", "sub/conv/kernel:0", "bn/moving_mean:0",
                       "bn/moving_variance:0"),
        "dense": arrays("dense/kernel:0"),
    })
    got = weights.match(["base/conv", "base/bn", "base/sub/conv", "dense"], [])
    assert [name for name, _ in got["base/bn"]] == ["bn/gamma:0", "bn/beta:0", "bn/moving_mean:0",
                                                     "bn/moving_variance:0"]
    assert [name for name, _ in got["base/sub/conv"]] == ["sub/conv/kernel:0"]
    assert [name for name, _ in got["base/conv"]] == ["conv/kernel:0"]
    with pytest.raises(Misfit, match="base/sub/conv"):  # weights the model does not use are named
        weights.match(["base/conv", "base/bn", "dense"], [])

"""ModelSpec: channel counts agree with the layers' output shapes and are traced once per layer and size;
wrong image shapes are one clear error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis.errors import JaxvisError
from jaxvis.models import load_model
from jaxvis.models.spec import ModelSpec, check_image_batch
from jaxvis.models.torchvision.googlenet import GoogLeNet


def test_channel_count_matches_output_shapes_and_is_traced_once(monkeypatch):
    spec = load_model("tiny_cnn")
    shapes = spec.output_shapes((24, 24))
    traces = []
    real_apply = ModelSpec.apply_preprocessed
    monkeypatch.setattr(
        ModelSpec, "apply_preprocessed", lambda self, *a, **k: traces.append(1) or real_apply(self, *a, **k)
    )
    for _ in range(3):
        assert [spec.channel_count(name, (24, 24)) for name in spec.layer_names] == [
            shapes[n][-1] for n in spec.layer_names
        ]
    assert len(traces) == len(spec.layer_names)
    spec.channel_count(spec.layer_names[0], (32, 32))  # another size: traced again
    load_model("tiny_cnn", seed=1).channel_count(spec.layer_names[0], (24, 24))  # another spec: its own entry
    assert len(traces) == len(spec.layer_names) + 2


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 64, 64), r"must have shape \[batch, height, width, 3\], got \(2, 64, 64\)"),
     ((2, 64, 64, 1), r"must have shape \[batch, height, width, 3\], got \(2, 64, 64, 1\)"),
     ((2, 16, 64, 3), "must be at least 32x32 pixels, got 16x64")],
)
def test_a_zoo_model_names_a_wrong_input_shape(shape, message):
    module = GoogLeNet()
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    with pytest.raises(JaxvisError, match="googlenet's input " + message):
        jax.eval_shape(module.init, jax.random.PRNGKey(0), x)


def test_check_image_batch_accepts_a_batch_of_the_right_shape():
    check_image_batch(np.zeros((1, 8, 8, 3)), 3, minimum=8)
    with pytest.raises(JaxvisError, match="the image must be at least 9x9 pixels, got 8x8"):
        check_image_batch(np.zeros((1, 8, 8, 3)), 3, "the image", minimum=9)

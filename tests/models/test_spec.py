"""ModelSpec: channel counts agree with the layers' output shapes and are traced once per layer and size."""

from jaxvis.models import load_model
from jaxvis.models.spec import ModelSpec


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

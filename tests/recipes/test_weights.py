"""Weight statistics equal torch's; histograms count what they draw; BatchNorm counters are skipped."""

import csv
import json

import numpy as np
import pytest
import torch
from mobilenet_cache import mobilenet

from jaxvis.convert.torch.checkpoint import load_state_dict
from jaxvis.recipes.weights import parameter_tensors, save_weights_report, tensor_stats


def _check_stats(tensors, stats):
    """Against torch's float64 reductions (not the implementation's NumPy lines)."""
    assert [s.name for s in stats] == list(tensors)
    for s in stats:
        t = torch.from_numpy(np.array(tensors[s.name], np.float64)).flatten()
        assert s.count == t.numel()
        assert s.mean == pytest.approx(t.mean().item(), rel=1e-10, abs=1e-15)
        assert s.std == pytest.approx(t.std().item(), rel=1e-10, abs=1e-15)  # Bessel-corrected
        assert s.min == t.min().item() and s.max == t.max().item()


def test_checkpoint_stats_equal_numpy_and_skip_counters(mobilenet_checkpoint, tmp_path):
    state = load_state_dict(mobilenet_checkpoint)
    raw = torch.load(mobilenet_checkpoint, weights_only=True)
    counters = [k for k in raw if k.endswith("num_batches_tracked")]
    assert counters  # the checkpoint has them...
    tensors = parameter_tensors(state)
    assert not any(k.endswith("num_batches_tracked") for k in tensors)  # ...the report does not
    assert set(tensors) == set(raw) - set(counters)  # running means and variances are kept
    for name in ("features.0.0.weight", "features.0.1.running_var", "classifier.1.bias"):
        np.testing.assert_array_equal(tensors[name], raw[name].numpy())
    stats = tensor_stats(tensors)
    _check_stats(tensors, stats)
    manifest = save_weights_report(state, tmp_path, histograms="none", model="ckpt")
    with open(tmp_path / "weights.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(tensors) == len(manifest["tensors"])
    for row, s in zip(rows, stats):
        assert row["name"] == s.name and float(row["std"]) == s.std and float(row["mean"]) == s.mean
    assert manifest["first_conv"]["name"] == "features.0.0.weight" and manifest["first_conv"]["kernels"] == [
        32,
        3,
        3,
        3,
    ]


def test_model_tensors_histograms_equal_numpy(mobilenet_checkpoint, tmp_path, monkeypatch):
    spec = mobilenet(mobilenet_checkpoint)
    tensors = parameter_tensors(spec)
    assert list(tensors)[:2] == ["features.0.kernel", "features.0.bias"]  # model order, kernel then bias
    _check_stats(tensors, tensor_stats(tensors))
    # the histogram drawn is np.histogram with 50 bins: capture what matplotlib is asked to draw
    from matplotlib.axes import Axes

    drawn = []  # in drawing order (the title is set after the bars)
    original = Axes.hist

    def spy(ax, values, bins=None, **kwargs):
        counts, edges, patches = original(ax, values, bins=bins, **kwargs)
        drawn.append((np.asarray(values), counts, edges))
        return counts, edges, patches

    monkeypatch.setattr(Axes, "hist", spy)
    subset = {name: tensors[name] for name in list(tensors)[:3]}
    save_weights_report(subset, tmp_path, histograms="each", model="mobilenet_v2")
    assert len(drawn) == 3
    for (name, array), (values, counts, edges) in zip(subset.items(), drawn):
        np.testing.assert_array_equal(values, np.asarray(array, np.float64).ravel())
        flat = np.asarray(array, np.float64).ravel()  # counted by hand against the drawn edges, not np.histogram
        assert len(counts) == 50 and edges[0] == flat.min() and edges[-1] == flat.max()
        np.testing.assert_allclose(np.diff(edges), (flat.max() - flat.min()) / 50, rtol=1e-9)
        inside = [
            (flat >= lo) & ((flat < hi) | ((i == 49) & (flat == hi)))
            for i, (lo, hi) in enumerate(zip(edges, edges[1:]))
        ]
        np.testing.assert_array_equal(counts, [int(m.sum()) for m in inside])
        assert (tmp_path / "histograms" / f"{name}.png").is_file()
    manifest = json.loads((tmp_path / "weights.json").read_text())
    assert manifest["bins"] == 50 and len(manifest["files"]["histograms"]) == 3

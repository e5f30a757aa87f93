"""Weight statistics and histograms against references computed independently of jaxvis.recipes.weights.

Statistics: what the report writes (`weights.csv`, `weights.json`) against torch's reductions
(`mean`, `std` with Bessel's correction, `min`, `max`, `numel`, in float64) of the tensors as
`torch.load` reads the checkpoint, and of the Flax variables as the spec holds them. Histograms:
the bars matplotlib is asked to draw are counted again by hand, value by value, against their own
edges (left-closed bins, the last one closed), and the edges must span [min, max] in 50 equal bins.
"""

import csv
import json

import jax
import numpy as np
import pytest
import torch
from mobilenet_cache import mobilenet

from jaxvis.convert.torch.checkpoint import load_state_dict
from jaxvis.recipes.weights import save_weights_report


def torch_stats(tensor) -> dict:
    if isinstance(tensor, torch.Tensor):
        t = tensor.detach().double().flatten()
    else:
        t = torch.from_numpy(np.array(tensor, np.float64)).flatten()  # a copy: spec arrays are read-only
    return {
        "count": t.numel(),
        "mean": t.mean().item(),
        "std": t.std().item(),
        "min": t.min().item(),
        "max": t.max().item(),
    }


def check(record, want):
    assert int(record["count"]) == want["count"]
    for key in ("mean", "std", "min", "max"):
        assert float(record[key]) == pytest.approx(want[key], rel=1e-10, abs=1e-15), (record["name"], key)


def test_checkpoint_report_matches_torch(mobilenet_checkpoint, tmp_path):
    raw = torch.load(mobilenet_checkpoint, weights_only=True)
    kept = {k: v for k, v in raw.items() if not k.endswith("num_batches_tracked")}
    save_weights_report(load_state_dict(mobilenet_checkpoint), tmp_path, histograms="none", model="ckpt")
    with open(tmp_path / "weights.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == list(kept)  # the checkpoint's order, counters left out
    for row in rows:
        check(row, torch_stats(kept[row["name"]]))
        assert row["shape"] == "x".join(map(str, kept[row["name"]].shape))
    records = json.loads((tmp_path / "weights.json").read_text())["tensors"]
    for record in records:
        check(record, torch_stats(kept[record["name"]]))
    # the stats differ from tensor to tensor: a report of one tensor's numbers repeated would fail above
    assert len({round(float(r["std"]), 12) for r in rows}) > 100


def test_model_report_matches_torch(mobilenet_checkpoint, tmp_path):
    spec = mobilenet(mobilenet_checkpoint)
    leaves = {".".join(str(k.key) for k in path[1:]): leaf
              for path, leaf in jax.tree_util.tree_flatten_with_path(spec.variables)[0] if path[0].key == "params"}
    manifest = save_weights_report(spec, tmp_path, histograms="none")
    records = {r["name"]: r for r in manifest["tensors"]}
    assert set(records) == set(leaves)
    for name, leaf in leaves.items():
        check(records[name], torch_stats(leaf))


def test_histograms_count_what_they_draw(mobilenet_checkpoint, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    drawn = []
    original = Axes.hist

    def spy(ax, values, bins=None, **kwargs):
        counts, edges, patches = original(ax, values, bins=bins, **kwargs)
        drawn.append((np.asarray(values), np.asarray(counts), np.asarray(edges)))
        return counts, edges, patches

    monkeypatch.setattr(Axes, "hist", spy)
    raw = torch.load(mobilenet_checkpoint, weights_only=True)
    names = ["features.0.0.weight", "features.1.conv.0.1.running_var", "classifier.1.bias"]
    save_weights_report({name: raw[name].numpy() for name in names}, tmp_path, histograms="pages")
    assert len(drawn) == 3
    for name, (values, counts, edges) in zip(names, drawn):
        want_values = raw[name].double().flatten().numpy()
        np.testing.assert_array_equal(np.sort(values), np.sort(want_values))  # every value, once
        assert len(counts) == 50 and edges[0] == want_values.min() and edges[-1] == want_values.max()
        np.testing.assert_allclose(np.diff(edges), (edges[-1] - edges[0]) / 50, rtol=1e-9)
        by_hand = [sum(1 for v in want_values if edges[i] <= v < edges[i + 1] or (i == 49 and v == edges[50]))
                   for i in range(50)]
        np.testing.assert_array_equal(counts, by_hand)
        assert sum(by_hand) == want_values.size

"""The prepared GPU check runs its code paths end to end at toy sizes on the CPU (`gpu_check.sh --smoke`)."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_smoke_writes_every_part(tmp_path):
    out = tmp_path / "gpu_check_smoke.json"
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--smoke", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["smoke"] is True and record["environment"]["backend"] == "cpu"
    assert set(record["block5_conv3"]) == {"f32", "bf16"}
    assert all(run["filters"] == 4 and run["seconds"] > 0 for run in record["block5_conv3"].values())
    assert record["vgg16_conv_atlas"] == {**record["vgg16_conv_atlas"], "layers": 2, "filters": 8}
    assert [row["precision"] for row in record["bench"]] == ["f32", "bf16"]
    assert all(row["filters_per_s"] > 0 and row["gflop_per_step"] > 0 for row in record["bench"])

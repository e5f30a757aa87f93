"""Where every benchmark's JSON goes: printed, and written to `benchmarks/results/<name>.json`.

Each file records the machine (CPU, cores, load), the versions and the time of the run beside the
figures, so results from different machines or days are never compared by accident.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def environment() -> dict:
    import jax
    import numpy as np

    import jaxvis

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cpu": _cpu(),
            "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__,
            "jaxvis": jaxvis.__version__}


def write(name: str, result: dict, *, out: str | None = None) -> Path:
    """Print `result` (with the environment) as JSON and write it to `out` or `results/<name>.json`."""
    record = {"benchmark": name, "environment": environment(), **result}
    text = json.dumps(record, indent=1)
    print(text)
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path

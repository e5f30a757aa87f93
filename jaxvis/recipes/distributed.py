"""Multi-process runs: the processes that share one atlas.

Contract: `initialize(...)` joins a multi-process run through
`jax.distributed` (gloo collectives on CPU); `share(items)` is this process's part of a list;
`barrier(name)` waits for every process. A single-process run needs none of it.
"""

from __future__ import annotations

import os
import socket
import time

import jax
import numpy as np

from jaxvis.errors import JaxvisError

__all__ = ["barrier", "initialize", "share"]


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, timeout_s: int | None = None) -> tuple[int, int]:
    """Join a multi-process run; arguments default to JAXVIS_COORDINATOR / JAXVIS_NUM_PROCESSES /
    JAXVIS_PROCESS_ID. Returns (process_id, num_processes); (0, 1) when no run is configured."""
    coordinator = coordinator or os.environ.get("JAXVIS_COORDINATOR")
    num_processes = num_processes or _int_env("JAXVIS_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _int_env("JAXVIS_PROCESS_ID")
    if not coordinator and not num_processes:
        return 0, 1
    timeout_s = timeout_s or _int_env("JAXVIS_INIT_TIMEOUT") or 120
    if not coordinator or not num_processes or process_id is None:
        raise JaxvisError("a multi-process run needs --coordinator HOST:PORT, --num-processes N and --process-id I")
    if not 0 <= process_id < num_processes:
        raise JaxvisError(f"process id {process_id} is out of range for {num_processes} processes")
    if process_id != 0:  # process 0 hosts the coordinator; the others wait for it to listen
        _wait_for_coordinator(coordinator, timeout_s)
    # Only the CPU client reads this; asking jax.default_backend() here would start the backend,
    # which jax.distributed.initialize must precede.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout_s)
    except Exception as error:  # jax raises RuntimeError/XlaRuntimeError with a long gRPC text
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise JaxvisError(f"cannot join the run at coordinator {coordinator} within {timeout_s} s: {first}") from None
    return process_id, num_processes


def _wait_for_coordinator(coordinator: str, timeout_s: int) -> None:
    """Return once HOST:PORT accepts TCP connections; a JaxvisError after `timeout_s`.

    Checked here because jax's client, failing to register with an unreachable coordinator,
    aborts the whole process (a fatal log in C++), which no `except` can turn into a clear error."""
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise JaxvisError(f"the coordinator address must be HOST:PORT, got {coordinator!r}")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise JaxvisError(
                    f"cannot join the run at coordinator {coordinator} within {timeout_s} s: {error}"
                ) from None
            time.sleep(0.2)


def share(items, process_id: int, num_processes: int):
    """This process's share of `items`: a contiguous block, sizes differing by at most one."""
    items = list(items)
    bounds = np.linspace(0, len(items), num_processes + 1).round().astype(int)
    return items[bounds[process_id] : bounds[process_id + 1]]


def barrier(name: str) -> None:
    """Wait until every process of the run gets here (no-op in a single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise JaxvisError(f"{name} must be an integer, got {value!r}") from None

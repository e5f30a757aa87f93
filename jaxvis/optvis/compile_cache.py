"""Compiling once: JAX's persistent compilation cache for jaxvis's programs, and a clock for compile time.

Contract: `enable(directory=None)` points JAX's persistent compilation cache at `directory`
(default: `$JAXVIS_CACHE_DIR`, else `$XDG_CACHE_HOME/jaxvis/xla`, else `~/.cache/jaxvis/xla`) and
caches every program however quickly it compiled, so a second run of the same job in a new process
compiles nothing; it returns the directory. Call it before the first compilation of the process
(JAX reads the setting once). `CompileClock()` is a context manager that adds up, while it is
active, the seconds JAX spends tracing, lowering and compiling (`compile_seconds`) and loading
executables from the cache (`cache_load_seconds`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import jax

from jaxvis.errors import JaxvisError

__all__ = ["CompileClock", "default_directory", "enable"]

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_CACHE_LOAD_EVENT = "/jax/compilation_cache/cache_retrieval_time_sec"


def default_directory() -> Path:
    """`$JAXVIS_CACHE_DIR`, else the user's cache folder + `jaxvis/xla`."""
    if os.environ.get("JAXVIS_CACHE_DIR"):
        return Path(os.environ["JAXVIS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxvis" / "xla"


def enable(directory=None) -> Path:
    """Turn on the persistent compilation cache in `directory` (see the module docstring)."""
    path = Path(directory) if directory is not None else default_directory()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JaxvisError(f"cannot use {path} as the compilation cache: {err.strerror or err}") from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # the octave programs compile in ~1-3 s
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


_ACTIVE: list[CompileClock] = []
_LOCK = threading.Lock()
_LISTENING = False


def _listen(event: str, seconds: float, **_) -> None:
    with _LOCK:
        for clock in _ACTIVE:
            if event in _COMPILE_EVENTS:
                clock.compile_seconds += seconds
            elif event == _CACHE_LOAD_EVENT:
                clock.cache_load_seconds += seconds


class CompileClock:
    """Seconds spent compiling and loading from the compilation cache inside a `with` block."""

    def __init__(self):
        self.compile_seconds = 0.0
        self.cache_load_seconds = 0.0

    def __enter__(self) -> CompileClock:
        global _LISTENING
        with _LOCK:
            if not _LISTENING:  # JAX has no way to remove a listener: register one for all clocks
                jax.monitoring.register_event_duration_secs_listener(_listen)
                _LISTENING = True
            _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        with _LOCK:
            _ACTIVE.remove(self)

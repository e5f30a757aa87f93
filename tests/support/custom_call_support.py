"""Whether the C++ custom calls must be there: fail, don't skip, where they are built by default.

On x86-64 Linux the build compiles the warp and spectral XLA FFI custom calls (CMakeLists.txt stops
when jaxlib's FFI headers are missing), so a test that needs them fails when they are absent: a
broken build must not show up as skips. `JAXVIS_ALLOW_NO_CUSTOM_CALLS=1` says a build without them
is intended (`-DJAXVIS_CUSTOM_CALLS=OFF`, other platforms): then those tests skip. The calls are
CPU-only, so on another default backend the tests that run them skip.
"""

from __future__ import annotations

import os
import platform

import jax
import pytest

from jaxvis.native import custom_calls

OPT_OUT = "JAXVIS_ALLOW_NO_CUSTOM_CALLS"
GROUPS = {"warp": ("forward", "backward"), "spectral": ("forward", "backward", "image_forward", "image_backward")}
# in an extension module of their own (jaxvis._onednn, linked to oneDNN's libdnnl)
OWN_MODULE_GROUPS = {"onednn": ("forward", "backward_data", "pack")}


_ONEDNN_HINT = " and find oneDNN: pip install onednn-devel-cpu-gomp before building"


def expected() -> bool:
    """Whether this platform's build has the custom calls (x86-64 Linux) and no opt-out is set."""
    return (platform.system() == "Linux" and platform.machine().lower() in ("x86_64", "amd64")
            and os.environ.get(OPT_OUT, "") != "1")


def require(group: str) -> None:
    """Fail (not skip) the calling test when the `group` custom calls are missing but expected;
    skip it where they are not expected or the default backend is not the CPU."""
    if jax.default_backend() != "cpu":
        pytest.skip(f"the {group} custom call is CPU-only (default backend: {jax.default_backend()})")
    if custom_calls.cpu_targets(group):
        return
    if expected():
        hint = _ONEDNN_HINT if group == "onednn" else ""
        pytest.fail(f"the {group} custom call is not built or not registered on x86-64 Linux (the build "
                    f"must compile csrc/{group}_ffi.cpp{hint}); set {OPT_OUT}=1 if a build without it is intended")
    pytest.skip(f"the {group} custom call is not built ({OPT_OUT}=1 or not x86-64 Linux)")

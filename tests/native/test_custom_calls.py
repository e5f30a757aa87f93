"""The C++ custom calls (warp, spectral, and the oneDNN convs in jaxvis._onednn) are built and
registered where the build makes them.

A build without them turns every custom-call test into a failure on x86-64 Linux, not a skip
(tests/custom_call_support.py); this file states it once, directly, for both groups.
"""

import custom_call_support
import fast_compile
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvis import _core
from jaxvis.native import custom_calls
from jaxvis.optvis import transforms as T
from jaxvis.optvis.param import spatial


@pytest.mark.parametrize("group", sorted(custom_call_support.GROUPS))
def test_the_extension_exports_the_handlers(group):
    if not custom_call_support.expected():
        pytest.skip(f"{custom_call_support.OPT_OUT}=1 or not x86-64 Linux: the custom calls may be left out")
    handlers = getattr(_core, f"{group}_ffi_handlers")()
    assert sorted(handlers) == sorted(custom_call_support.GROUPS[group]), (
        f"jaxvis._core was built without the {group} custom calls (XLA FFI headers missing at build time?)")
    assert custom_calls.cpu_targets(group), (
        f"the {group} custom calls did not register (or JAXVIS_NATIVE_{group.upper()}=0)"
    )


def test_the_onednn_convs_are_built_and_registered():
    if not custom_call_support.expected():
        pytest.skip(f"{custom_call_support.OPT_OUT}=1 or not x86-64 Linux: the custom calls may be left out")
    try:
        from jaxvis import _onednn
    except ImportError as error:
        pytest.fail(f"jaxvis._onednn is missing or cannot load libdnnl.so.3 ({error}): build with "
                    "onednn-devel-cpu-gomp installed, run with onednn-cpu-gomp")
    assert sorted(_onednn.ffi_handlers()) == sorted(custom_call_support.OWN_MODULE_GROUPS["onednn"])
    assert custom_calls.cpu_targets("onednn"), "the onednn custom calls did not register (or JAXVIS_NATIVE_ONEDNN=0)"


def test_the_warp_runs_as_its_custom_call():
    custom_call_support.require("warp")
    image = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 12, 10, 3)), jnp.float32)
    warp = fast_compile.jit(jax.vmap(lambda x: T.warp(x, jnp.float32(0.9), jnp.float32(0.1), 1.0, -2.0)))
    assert "jaxvis_warp_forward" in warp.lower(image).as_text()
    assert np.isfinite(np.asarray(warp(image))).all()  # compiles and runs: the target is registered


def test_the_spectral_transform_runs_as_its_custom_call():
    custom_call_support.require("spectral")
    params = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 8, 5, 2)), jnp.float32)
    assert spatial.use_native_spectral(params)
    to_latent = fast_compile.jit(spatial.fft().to_latent)
    assert "jaxvis_spectral_forward" in to_latent.lower(params).as_text()
    assert to_latent(params).shape == (2, 8, 8, 3)

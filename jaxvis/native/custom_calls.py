"""The C++ extension's XLA FFI custom calls (csrc/*_ffi.cpp), registered for CPU on first use.

Contract: `cpu_targets(group)` registers `jaxvis._core.<group>_ffi_handlers()` (for "onednn":
`jaxvis._onednn.ffi_handlers()`, a module of its own, linked to libdnnl) as the CPU custom
calls `jaxvis_<group>_<name>` and says whether they exist; `False` when the extension is missing
(or cannot load its library),
was built without XLA's FFI headers, or `JAXVIS_NATIVE_<GROUP>=0` is set (for comparisons: the
pure-JAX path everywhere). `call(group, name, out_shape, *args)` emits one. Each JAX function that
uses a custom call keeps its pure-JAX definition for other backends and as the tests' reference.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

__all__ = ["call", "cpu_targets", "usable"]

# groups whose handlers live in an extension module of their own (`<module>.ffi_handlers()`)
_OWN_MODULE = {"onednn": "jaxvis._onednn"}


@functools.cache
def cpu_targets(group: str) -> bool:
    """Register the `group` custom calls for CPU (once); whether they are available."""
    if os.environ.get(f"JAXVIS_NATIVE_{group.upper()}", "1") == "0":
        return False
    try:
        if group in _OWN_MODULE:  # a module of its own, linked to a library that may be missing
            import importlib

            handlers = importlib.import_module(_OWN_MODULE[group]).ffi_handlers()
        else:
            from jaxvis import _core

            handlers = getattr(_core, f"{group}_ffi_handlers")()
    except (ImportError, AttributeError):
        return False
    if not handlers:
        return False
    for name, handler in handlers.items():
        jax.ffi.register_ffi_target(f"jaxvis_{group}_{name}", handler, platform="cpu")
        # Each image is handled on its own, so a batch sharded over devices stays sharded (without
        # this, XLA's partitioner would gather the whole batch onto every device for the call).
        # Not the oneDNN convs: their weights operand has no batch dim (sharded, they are correct but
        # gather the batch; see benchmarks/README.md).
        if hasattr(jax.ffi, "register_ffi_target_as_batch_partitionable") and group != "onednn":
            jax.ffi.register_ffi_target_as_batch_partitionable(f"jaxvis_{group}_{name}")
    return True


def usable(group: str, *arrays) -> bool:
    """Whether to run `group`'s custom call on these float32 arrays now (CPU backend, built)."""
    return all(a.dtype == jnp.float32 for a in arrays) and jax.default_backend() == "cpu" and cpu_targets(group)


def call(group: str, name: str, out_shape, *args, vmap_method: str = "broadcast_all", **attributes):
    """The custom call `jaxvis_<group>_<name>` on `args`, returning float32 `out_shape`. The kernels
    treat leading dimensions as batch; `vmap_method` (jax.ffi.ffi_call's) says how vmap gives them."""
    cpu_targets(group)  # registered before its first use (a no-op after the first call)
    out = jax.ShapeDtypeStruct(tuple(out_shape), jnp.float32)
    return jax.ffi.ffi_call(f"jaxvis_{group}_{name}", out, vmap_method=vmap_method)(*args, **attributes)

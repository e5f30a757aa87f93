"""`jit` for the parity tests' one-shot forwards (jaxvis and Keras references), with quick XLA CPU options.

Each parity program runs once or twice, so its compile is most of a test's time: LLVM at -O0 without
the fusion emitters compiles these networks about 4x faster (DenseNet121 at 32 px: 9 s -> 1.8 s) and
computes the same values (to ~1e-6 relative of the default build, far inside the tests' 1e-4).
"""

import functools

import jax

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)

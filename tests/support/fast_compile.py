"""`jit` for the tests' own one-shot programs, with quick XLA CPU options.

The tests jit their harnesses (parity forwards of jaxvis and Keras models, a jaxvis function with its
gradient, a reference's gradient) to run them once or twice, so compiling is most of a test's time:
LLVM at -O0 without the fusion emitters compiles them several times faster (benchmarks/README.md)
and computes the same values (to ~1e-6 relative of the default build, far inside the tests'
tolerances). The code under test is the same HLO either way; jaxvis's own compiled
programs (render, CAM, dream) keep XLA's defaults, as users get them.
"""

import dataclasses
import functools

import jax

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)


def activations(spec, images, layers) -> dict:
    """`spec.activations(images, layers)` as one program with the variables an argument (run eagerly,
    every op of a network compiles on its own; two specs with the same module and preprocessing run
    the same program)."""
    run = jit(lambda variables, x: dataclasses.replace(spec, variables=variables).activations(x, layers))
    return run(spec.variables, jax.numpy.asarray(images))

"""jaxvis: compiled, batched feature visualization for CNNs on JAX/Flax."""

__version__ = "0.1.0"

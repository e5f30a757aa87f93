"""Weight files (PyTorch, Keras) into Flax variables, without torch or TensorFlow."""

__all__ = []

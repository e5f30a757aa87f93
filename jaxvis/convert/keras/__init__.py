"""Keras files without TensorFlow or Keras: what a `.h5` / `.keras` / `.weights.h5` file holds."""

__all__ = []

"""Keras models: layer graphs read from a Keras file's config, run by one Flax module, and the Keras
Applications generated as such graphs."""

__all__ = []

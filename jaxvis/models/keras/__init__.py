"""Keras models: layer graphs read from a Keras file's config (or generated: the Keras Applications),
lowered onto the graph IR (`lower`) and run by `jaxvis.models.graph.GraphModule`."""

__all__ = []

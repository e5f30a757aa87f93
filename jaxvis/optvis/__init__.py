"""The optimization engine: objectives, image parameterizations, transforms and the render loop.

Data flow: `param` makes images from parameters, `transforms` jitter them, the model's activations
feed an `objectives.Objective`, and `render.render` runs batched gradient ascent on the parameters.
"""

__all__ = []

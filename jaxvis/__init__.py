"""jaxvis: compiled, batched feature visualization for CNNs on JAX/Flax.

The public API, imported lazily (so `import jaxvis` is cheap and initialises no JAX backend):

    import jaxvis
    spec = jaxvis.load_model("mobilenet_v2")
    result = jaxvis.render(spec, "features.10", units=range(16), config=jaxvis.RenderConfig(steps=64))

Packages, in the direction data flows (each imports only those before it): `errors`; `native`
(the C++ extension), `convert` (files -> named arrays), `output` (files, grids, figures);
`models` (architectures, the zoo, loading); `optvis` (objectives, parameterizations, transforms,
the render loop); `recipes` (atlases, DeepDream, feature maps, weight reports, CAM); `cli`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "JaxvisError": "jaxvis.errors",
    "WeightFileError": "jaxvis.errors",
    "ModelSpec": "jaxvis.models.spec",
    "Preprocess": "jaxvis.models.spec",
    "load_model": "jaxvis.models.load",
    "model_names": "jaxvis.models.registry",
    "objectives": "jaxvis.optvis.objectives",
    "RenderConfig": "jaxvis.optvis.render",
    "RenderResult": "jaxvis.optvis.render",
    "render": "jaxvis.optvis.render",
    "render_atlas": "jaxvis.recipes.atlas",
    "write_atlas_page": "jaxvis.recipes.page",
    "dataset_examples": "jaxvis.recipes.examples",
    "DreamConfig": "jaxvis.recipes.dream",
    "dream": "jaxvis.recipes.dream",
    "feature_maps": "jaxvis.recipes.features",
    "save_feature_maps": "jaxvis.recipes.features",
    "tensor_stats": "jaxvis.recipes.weights",
    "save_weights_report": "jaxvis.recipes.weights",
    "CamConfig": "jaxvis.recipes.cam",
    "cam": "jaxvis.recipes.cam",
    "visualize_cam": "jaxvis.recipes.cam",
    "save_cam": "jaxvis.recipes.cam",
}
_MODULES = {"objectives"}  # exported as modules, not as a name inside one

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'jaxvis' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

"""Keras Applications (VGG16, VGG19, ResNet50, InceptionV3, MobileNetV2) as zoo entries.

Contract: the generated layer graphs (`jaxvis.models.keras.architectures`) line up with Keras
weight files by name or by position, and `GraphModule` runs them (lowered onto the graph IR) with Keras's
results. The zoo builders
(`keras_vgg16`, `keras_vgg19`, `keras_resnet50`, `keras_inception_v3`,
`keras_mobilenet_v2`) take `weights=<any Keras file>` (see `jaxvis.models.keras.load`) and give
random Keras-default init without one (their `source` says so). Whether the file holds the
classifier (`include_top`) and how many classes it has are read from the file unless given.

Preprocessing is the one Keras's `preprocess_input` applies: "caffe" (RGB->BGR, ImageNet mean
subtraction on 0-255 pixels: `KERAS_CAFFE`) for VGG and ResNet50, "tf" (pixels to [-1, 1]:
`KERAS_TF`) for InceptionV3 and MobileNetV2. `predictions` is captured before its softmax.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable

from jaxvis.convert.keras.file import read_keras_file
from jaxvis.errors import JaxvisError, WeightFileError
from jaxvis.models.graph.executor import GraphModule
from jaxvis.models.keras.architectures import inception_v3_layers, mobilenet_v2_layers, resnet50_layers, vgg_layers
from jaxvis.models.keras.graph import Graph, build_graph
from jaxvis.models.keras.lower import lower
from jaxvis.models.keras.parse import LayerConfig
from jaxvis.models.keras.variables import random_variables, softmax_layers
from jaxvis.models.keras.weights import match_weights, variables_for_graph
from jaxvis.models.registry import register
from jaxvis.models.spec import KERAS_CAFFE, KERAS_TF, ModelSpec, Preprocess

__all__ = [
    "APPLICATIONS", "ARCHITECTURES", "Application", "inception_v3_layers", "match_application",
    "mobilenet_v2_layers", "resnet50_layers", "vgg_layers",
]


# ---------------------------------------------------------------------------------------------
# The zoo.


@dataclasses.dataclass(frozen=True)
class Application:
    """One Keras Applications family: how to generate it, its preprocessing and default size."""

    arch: str  # zoo name
    keras_name: str  # the Keras model's name (a regex for MobileNetV2's "mobilenetv2_1.00_224")
    layers: Callable[..., list[LayerConfig]]
    preprocess: Preprocess
    default_size: int
    min_size: int

    def graph(self, *, include_top=True, input_shape=None, classes=1000, pooling=None, **options) -> Graph:
        layers = self.layers(include_top=include_top, input_shape=input_shape, classes=classes, pooling=pooling,
                             **options)
        name = self.keras_name
        if self.arch == "keras_mobilenet_v2":
            rows = layers[0].config["batch_shape"][1]
            name = f"mobilenetv2_{float(options.get('alpha', 1.0)):0.2f}_{rows}"
        return build_graph(layers, name=name)

    def class_names(self, graph: Graph) -> tuple[str, ...] | None:
        node = graph.by_name.get("predictions")
        if node is None or getattr(node.op, "units", None) != 1000:
            return None
        try:
            from jaxvis.models.imagenet import imagenet_class_names
        except ImportError:
            return None
        return imagenet_class_names()


APPLICATIONS = {
    app.arch: app for app in (
        Application("keras_vgg16", "vgg16", lambda **kw: vgg_layers((2, 2, 3, 3, 3), **kw), KERAS_CAFFE, 224, 32),
        Application("keras_vgg19", "vgg19", lambda **kw: vgg_layers((2, 2, 4, 4, 4), **kw), KERAS_CAFFE, 224, 32),
        Application("keras_resnet50", "resnet50", resnet50_layers, KERAS_CAFFE, 224, 32),
        Application("keras_inception_v3", "inception_v3", inception_v3_layers, KERAS_TF, 299, 75),
        Application("keras_mobilenet_v2", r"mobilenetv2_[0-9.]+_\w+", mobilenet_v2_layers, KERAS_TF, 224, 32),
    )
}


def match_application(graph: Graph) -> Application | None:
    """The Keras Application a loaded model is (same model name and layer classes in the same order), if any."""
    classes = [node.class_name for node in graph.nodes]
    include_top = "predictions" in graph.by_name
    for app in APPLICATIONS.values():
        if not re.fullmatch(app.keras_name, graph.name):
            continue
        for pooling in ((None,) if include_top else (None, "avg", "max")):
            try:
                layers = app.layers(include_top=include_top, input_shape=None if include_top else (None, None, 3),
                                    classes=1000, pooling=pooling) if not include_top else app.layers(
                    include_top=True, input_shape=graph.input_shape, classes=graph.by_name["predictions"].op.units)
            except JaxvisError:
                continue
            if [layer.class_name for layer in layers] == classes:
                return app
    return None


def _from_file(app: Application, path: str, include_top, classes, graph_options):
    """Read a Keras file and decide include_top / classes from it where not given."""
    file = read_keras_file(path)
    if include_top is None:
        counted = len(file.weights.weighted)
        notop = len(app.graph(include_top=False, **graph_options).weighted)
        include_top = not (counted == notop and counted != len(app.graph(include_top=True, **graph_options).weighted))
    if include_top and classes is None:
        classes = 1000
        try:
            arrays = match_weights(file, app.graph(include_top=True, **graph_options))["predictions"]
            classes = int(arrays[0][1].shape[-1])
        except (WeightFileError, KeyError, IndexError):
            pass  # the weights do not line up: variables_for_graph below says how
    return file, include_top, classes


def build(arch: str, weights=None, *, include_top: bool | None = None, input_shape=None, classes: int | None = None,
          pooling: str | None = None, conv_impl: str = "auto", seed: int = 0, **options) -> ModelSpec:
    """The zoo model `arch` with the weights of a Keras file (or random init); see the module docstring."""
    import jax

    app = APPLICATIONS[arch]
    graph_options = dict(input_shape=input_shape, pooling=pooling, **options)
    file = None
    if weights is not None:
        file, include_top, classes = _from_file(app, os.fspath(weights), include_top, classes, graph_options)
    include_top = True if include_top is None else include_top
    classes = 1000 if classes is None else classes
    graph = app.graph(include_top=include_top, classes=classes, **graph_options)
    size = tuple(app.default_size if d is None else d for d in graph.input_shape[:2]) + (graph.input_shape[2],)
    if file is not None:
        variables, source = variables_for_graph(file, graph, input_shape=size), file.path
    else:
        variables, source = (
            random_variables(graph, seed=seed, input_shape=size),
            f"random init (Keras defaults, seed {seed}); no weights given",
        )
    return ModelSpec(
        name=arch,
        module=GraphModule(lower(graph, size), conv_impl=conv_impl),
        variables=jax.device_put(variables),
        input_shape=size,
        layer_names=graph.layer_names,
        preprocess=app.preprocess,
        logits_layer="predictions" if include_top else None,
        softmax_layers=softmax_layers(graph),
        class_names=app.class_names(graph),
        source=source,
        recipe={
            "zoo": arch,
            "options": {
                "include_top": include_top,
                "input_shape": input_shape,
                "classes": classes,
                "pooling": pooling,
                "conv_impl": conv_impl,
                **options,
            },
        },
    )


def _entry_fields(arch: str) -> dict:
    """The registry fields of a Keras Applications zoo entry."""
    app = APPLICATIONS[arch]
    return dict(framework="keras", module_class=GraphModule, preprocess=app.preprocess,
                input_shape=(app.default_size, app.default_size, 3))


_DOC_OPTIONS = """
    Args:
      weights: a Keras file with this architecture's weights (legacy .h5 full model or weights,
        .keras, .weights.h5); None: random Keras-default init.
      include_top: with the classifier (`predictions`); default: whatever the file holds (True
        without a file).
      input_shape: (height, width, 3) as Keras takes it; default the ImageNet size.
      classes: classifier width; default: the file's (1000 without a file).
      pooling: without the top: None, "avg" or "max" (Keras's `pooling`).
      conv_impl: conv formulation (`jaxvis.models.layers`).
"""


@register("keras_vgg16", "Keras Applications VGG16 (weights=<Keras file>; random init without)",
          **_entry_fields("keras_vgg16"))
def keras_vgg16(weights=None, **options) -> ModelSpec:
    """Keras Applications VGG16 with KERAS_CAFFE preprocessing."""
    return build("keras_vgg16", weights, **options)


@register("keras_vgg19", "Keras Applications VGG19 (weights=<Keras file>; random init without)",
          **_entry_fields("keras_vgg19"))
def keras_vgg19(weights=None, **options) -> ModelSpec:
    """Keras Applications VGG19 with KERAS_CAFFE preprocessing."""
    return build("keras_vgg19", weights, **options)


@register("keras_resnet50", "Keras Applications ResNet50 (weights=<Keras file>; random init without)",
          **_entry_fields("keras_resnet50"))
def keras_resnet50(weights=None, **options) -> ModelSpec:
    """Keras Applications ResNet50 with KERAS_CAFFE preprocessing."""
    return build("keras_resnet50", weights, **options)


@register("keras_inception_v3", "Keras Applications InceptionV3, 299x299 (weights=<Keras file>; random init without)",
          **_entry_fields("keras_inception_v3"))
def keras_inception_v3(weights=None, **options) -> ModelSpec:
    """Keras Applications InceptionV3 with KERAS_TF preprocessing."""
    return build("keras_inception_v3", weights, **options)


@register("keras_mobilenet_v2", "Keras Applications MobileNetV2, alpha 1.0 (weights=<Keras file>; random init without)",
          **_entry_fields("keras_mobilenet_v2"))
def keras_mobilenet_v2(weights=None, **options) -> ModelSpec:
    """Keras Applications MobileNetV2 with KERAS_TF preprocessing (`alpha=` other widths)."""
    return build("keras_mobilenet_v2", weights, **options)


for _builder in (keras_vgg16, keras_vgg19, keras_resnet50, keras_inception_v3, keras_mobilenet_v2):
    _builder.__doc__ += _DOC_OPTIONS

ARCHITECTURES = {
    "keras_vgg16": keras_vgg16, "keras_vgg19": keras_vgg19, "keras_resnet50": keras_resnet50,
    "keras_inception_v3": keras_inception_v3, "keras_mobilenet_v2": keras_mobilenet_v2,
}

"""Keras model files as `ModelSpec`s: the file's own graph, or its weights on a Keras zoo architecture.

Contract: `load_keras(path, arch=None)` returns a `ModelSpec` whose module is a `GraphModule` running
the file's graph lowered onto the graph IR (`jaxvis.models.keras.lower`; layer names are the file's
Keras layer names), or raises a `WeightFileError` / `JaxvisError` with
one line naming the file and what is wrong with it. The file is read by
`jaxvis.convert.keras.file` (nothing in it runs); the weights are checked against the model's own
shapes.

Preprocessing: a user's model gets `UNIT` (images in [0, 1], as the Keras tutorials' own models
take them), or raw pixels (`scale=255`) when its first layer is a `Rescaling`; a file holding a
Keras Applications model (recognized by its name and layers) and every `arch=` load get the
architecture's own (`KERAS_CAFFE` for VGG / ResNet50, `KERAS_TF` for InceptionV3 / MobileNetV2),
and the other families (recognized by their Keras model name) what their `preprocess_input` does.
"""

from __future__ import annotations

import os
import re

import jax

from jaxvis.convert.keras.file import read_keras_file
from jaxvis.errors import JaxvisError, WeightFileError, unknown_name
from jaxvis.models.graph.executor import GraphModule
from jaxvis.models.keras import applications
from jaxvis.models.keras.config import graph_from_keras_config
from jaxvis.models.keras.graph import Graph
from jaxvis.models.keras.lower import lower
from jaxvis.models.keras.ops import Rescale
from jaxvis.models.keras.variables import logits_layer, softmax_layers
from jaxvis.models.keras.weights import variables_for_graph
from jaxvis.models.spec import KERAS_CAFFE, KERAS_TF, RAW, TORCH_IMAGENET, UNIT, ModelSpec, Preprocess

__all__ = ["load_keras"]


def _image_input_shape(graph: Graph, path: str) -> tuple[int, int, int]:
    shape = graph.input_shape
    if len(shape) != 3 or shape[-1] is None:
        raise JaxvisError(f"{path}: model {graph.name!r} takes inputs of shape {shape}; jaxvis visualizes image "
                          f"models, whose input is (height, width, channels)")
    return tuple(224 if d is None else int(d) for d in shape[:2]) + (int(shape[2]),)


# The other keras.applications families, by the model name Keras gives them: what their
# `preprocess_input` does (EfficientNet, ConvNeXt and MobileNetV3 take 0-255 pixels and preprocess inside).
_FAMILY_PREPROCESS = (
    (r"resnet(101|152)", KERAS_CAFFE),
    (r"resnet(50|101|152)v2|xception|inception_resnet_v2|nasnet_(mobile|large)|mobilenet_[0-9.]+_\d+", KERAS_TF),
    (r"densenet(121|169|201)", TORCH_IMAGENET),
    (r"efficientnet(b[0-7]|v2-\w+)|convnext_(tiny|small|base|large|xlarge)|MobileNetV3(Small|Large)", RAW),
)


def _user_preprocess(graph: Graph) -> Preprocess:
    for pattern, preprocess in _FAMILY_PREPROCESS:
        if re.fullmatch(pattern, graph.name):
            return preprocess
    first = next((node for node in graph.nodes[1:] if graph.input.name in node.inputs), None)
    if first is not None and isinstance(first.op, Rescale):
        return Preprocess(scale=255.0)  # the model rescales raw pixels itself
    return UNIT


def load_keras(path, arch: str | None = None, **options) -> ModelSpec:
    """A Keras model file, or a Keras weight file on the zoo architecture `arch`, as a `ModelSpec`.

    Args:
      path: a `.h5` (full model or weights), `.keras` or `.weights.h5` file.
      arch: a Keras zoo architecture (`keras_vgg16`, `keras_vgg19`, `keras_resnet50`,
        `keras_inception_v3`, `keras_mobilenet_v2`): required for weights-only files; for a
        full-model file it replaces the file's own architecture.
      options: passed to the architecture's builder (e.g. `classes=2`, `include_top=False`).

    Raises:
      WeightFileError: a missing, truncated, corrupt or foreign file, or weights that do not fit.
      JaxvisError: an unknown `arch`, or a model with layers jaxvis does not support.
    """
    path = os.fspath(path)
    if arch is not None:
        if arch not in applications.ARCHITECTURES:
            raise unknown_name("Keras architecture", arch, applications.ARCHITECTURES)
        return applications.ARCHITECTURES[arch](weights=path, **options)
    if options:
        raise JaxvisError(f"options {sorted(options)} only apply with arch=")
    file = read_keras_file(path)
    if file.config is None:
        raise WeightFileError(f"{path} holds weights only, no architecture: pass arch= (one of "
                              f"{', '.join(applications.ARCHITECTURES)}) to load them onto a zoo model")
    try:
        graph = graph_from_keras_config(file.config)
    except JaxvisError as err:
        raise JaxvisError(f"{path}: {err}") from None
    input_shape = _image_input_shape(graph, path)
    try:
        ir_graph = lower(graph, input_shape)
    except JaxvisError as err:
        raise JaxvisError(f"{path}: {err}") from None
    variables = variables_for_graph(file, graph, input_shape=input_shape)
    application = applications.match_application(graph)
    if application is not None:
        preprocess, class_names = application.preprocess, application.class_names(graph)
    else:
        preprocess, class_names = _user_preprocess(graph), None
    return ModelSpec(
        name=os.path.basename(path), module=GraphModule(ir_graph), variables=jax.device_put(variables),
        input_shape=input_shape, layer_names=graph.layer_names, preprocess=preprocess,
        logits_layer=logits_layer(graph), class_names=class_names, source=path,
        recipe={"keras_config": file.config}, softmax_layers=softmax_layers(graph),
    )

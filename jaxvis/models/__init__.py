"""Flax models with their source framework's layer names: the zoo, model files, and what a model is.

`load_model(name_or_path)` is the way in (`jaxvis.models.load`); `ModelSpec` / `Preprocess` say what a
loaded model is and takes (`jaxvis.models.spec`); the zoo's entries live in `jaxvis.models.registry`.
"""

from jaxvis.models import mnist, tiny  # noqa: F401  (register torch_mnist_cnn, tiny_cnn)
from jaxvis.models.keras import applications  # noqa: F401  (registers keras_vgg16, ..., keras_mobilenet_v2)
from jaxvis.models.load import describe_source, load_model
from jaxvis.models.registry import DEFAULT_MODEL, ZooEntry, describe_models, entries, entry, model_names, register
from jaxvis.models.spec import KERAS_CAFFE, KERAS_TF, TORCH_IMAGENET, UNIT, ModelSpec, Preprocess
from jaxvis.models.torchvision import (  # noqa: F401  (register mobilenet_v2, vgg16, vgg19, alexnet, resnet*, ...)
    googlenet,
    inception_v3,
    mobilenet_v2,
    resnet,
    vgg,
)

__all__ = [
    "DEFAULT_MODEL", "KERAS_CAFFE", "KERAS_TF", "TORCH_IMAGENET", "UNIT", "ModelSpec", "Preprocess", "ZooEntry",
    "describe_models", "describe_source", "entries", "entry", "load_model", "model_names", "register",
]

"""Flax models with their source framework's layer names, and the zoo registry."""

from jaxvis.models.registry import DEFAULT_MODEL, describe_models, load_model, model_names, register
import jaxvis.models.tiny  # noqa: F401  (registers tiny_cnn)
import jaxvis.models.mobilenet_v2  # noqa: F401  (registers mobilenet_v2)
import jaxvis.models.keras_apps  # noqa: F401  (registers keras_vgg16, keras_vgg19, keras_resnet50, keras_inception_v3, keras_mobilenet_v2)
from jaxvis.models import googlenet, inception_v3, mnist, resnet, vgg  # noqa: F401  (registers vgg16, vgg19, alexnet, resnet18/34/50, googlenet, inception_v3, torch_mnist_cnn)
from jaxvis.models.spec import KERAS_CAFFE, KERAS_TF, TORCH_IMAGENET, UNIT, ModelSpec, Preprocess

__all__ = [
    "DEFAULT_MODEL", "describe_models", "load_model", "model_names", "register",
    "KERAS_CAFFE", "KERAS_TF", "TORCH_IMAGENET", "UNIT", "ModelSpec", "Preprocess",
]

"""Flax models with their source framework's layer names, and the zoo registry."""

from jaxvis.models.registry import DEFAULT_MODEL, describe_models, load_model, model_names, register
import jaxvis.models.tiny  # noqa: F401  (registers tiny_cnn)
from jaxvis.models.spec import KERAS_CAFFE, KERAS_TF, TORCH_IMAGENET, UNIT, ModelSpec, Preprocess

__all__ = [
    "DEFAULT_MODEL", "describe_models", "load_model", "model_names", "register",
    "KERAS_CAFFE", "KERAS_TF", "TORCH_IMAGENET", "UNIT", "ModelSpec", "Preprocess",
]

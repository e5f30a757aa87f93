"""Class-activation maps and gradient attributions: `cam` computes them (`methods`), `save_cam` draws
them over the photos (`report`)."""

from jaxvis.recipes.cam.methods import (
    CAM_METHODS,
    GRADIENT_METHODS,
    METHODS,
    MODIFIERS,
    CamConfig,
    CamResult,
    cam,
    check_classes,
    class_label,
    default_cam_layer,
    top_classes,
    visualize_cam,
)
from jaxvis.recipes.cam.report import gradient_image, overlay, save_cam
from jaxvis.recipes.features import FITS

__all__ = [
    "CAM_METHODS", "FITS", "GRADIENT_METHODS", "METHODS", "MODIFIERS", "CamConfig", "CamResult", "cam", "check_classes",
    "class_label", "default_cam_layer", "gradient_image", "overlay", "save_cam", "top_classes", "visualize_cam",
]

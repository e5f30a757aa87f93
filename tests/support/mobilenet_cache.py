"""One jaxvis MobileNetV2 per test process: the seed-recipe tests share it (loading costs ~5 s)."""

import functools


@functools.cache
def mobilenet(path: str):
    """`load_model("mobilenet_v2", weights=path)`, loaded once per path."""
    from jaxvis.models import load_model

    return load_model("mobilenet_v2", weights=path)

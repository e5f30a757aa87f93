"""One way in: a zoo name or any supported model / weight file becomes a `ModelSpec`.

Contract: `resolve_model(model, weights=, arch=)` returns a `ModelSpec` or raises a `JaxvisError`
with one line. The kind of input is decided by `describe_source` from the name alone (zoo names
first, then the file's suffix); each file format's reader then checks the bytes themselves:

* None: the default zoo model; a zoo name: `load_model(name, weights=weights)`;
* `.pth` / `.pt` / `.bin` / `.safetensors`: a PyTorch state_dict, loaded onto the zoo architecture
  `arch` (required) -- `load_model(arch, weights=path)`; a `.safetensors` file written by
  `jaxvis convert` is recognized by its metadata and loads as a converted model;
* `.h5` / `.hdf5` / `.keras` / `.weights.h5`: a Keras file (`jaxvis.convert.keras_h5.load_keras`;
  `arch` a `keras_*` architecture for weights-only files);
* `.jaxvis`: a converted model (`jaxvis.convert.converted.load_converted`).
"""

from __future__ import annotations

import os

from jaxvis.errors import JaxvisError, WeightFileError

__all__ = ["KERAS_SUFFIXES", "TORCH_SUFFIXES", "describe_source", "resolve_model"]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
KERAS_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
CONVERTED_SUFFIXES = (".jaxvis",)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or "." in os.path.basename(text)


def describe_source(model: str | None) -> str:
    """'zoo', 'torch', 'keras' or 'converted' for a `--model` value (no file is read).

    Raises:
      JaxvisError: an unknown name that is not a path, a missing file, a directory, or an unknown suffix.
    """
    from jaxvis.models import model_names

    if model is None or model in model_names():
        return "zoo"
    path = os.fspath(model)
    if not os.path.exists(path):
        if not _looks_like_path(path):
            from jaxvis.errors import unknown_name

            raise unknown_name("model (a zoo name or a model file)", path, model_names())
        raise WeightFileError(f"{path}: no such model file")
    if os.path.isdir(path):
        raise WeightFileError(f"{path} is a directory; give a model file (.pth, .safetensors, .h5, .keras, .jaxvis)")
    lower = path.lower()
    if lower.endswith(CONVERTED_SUFFIXES):
        return "converted"
    if lower.endswith(KERAS_SUFFIXES):
        return "keras"
    if lower.endswith(TORCH_SUFFIXES):
        return "torch"
    raise JaxvisError(f"{path}: unknown model file type; expected one of "
                      f"{', '.join(TORCH_SUFFIXES + KERAS_SUFFIXES + CONVERTED_SUFFIXES)} or a zoo name")


def _torch_arch(path: str, arch: str | None) -> str:
    from jaxvis.errors import unknown_name
    from jaxvis.models import model_names

    torch_zoo = [name for name in model_names() if not name.startswith("keras_") and _takes_weights(name)]
    if arch is None:
        raise JaxvisError(f"{path} holds weights only: name their architecture with --arch (one of "
                          f"{', '.join(torch_zoo)})")
    if arch not in model_names():
        raise unknown_name("architecture", arch, torch_zoo)
    if not _takes_weights(arch):
        raise JaxvisError(f"zoo model {arch} takes no weight file; architectures that do: "
                          f"{', '.join(n for n in torch_zoo if _takes_weights(n))}")
    return arch


def _takes_weights(name: str) -> bool:
    import inspect

    from jaxvis.models.registry import _BUILDERS

    parameters = inspect.signature(_BUILDERS[name]).parameters
    return "weights" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def resolve_model(model: str | None, *, weights: str | None = None, arch: str | None = None):
    """The `ModelSpec` of a zoo name or a model / weight file (see the module docstring).

    Args:
      model: a zoo name, a file path, or None for the default model.
      weights: with a zoo name: a weight file for it (as `load_model(name, weights=...)`).
      arch: with a weights-only file: the zoo architecture to load them onto.

    Raises:
      JaxvisError: one line, for an unknown name, a missing or unreadable file, an unknown suffix, a
        missing or wrong `arch`, or weights that do not fit it.
    """
    from jaxvis.models import DEFAULT_MODEL, load_model

    kind = describe_source(model)
    if kind == "zoo":
        if arch is not None:
            raise JaxvisError(f"--arch applies to weight files; {model or DEFAULT_MODEL} is a zoo name")
        return load_model(model or DEFAULT_MODEL, **({"weights": weights} if weights else {}))
    path = os.fspath(model)
    if weights is not None:
        raise JaxvisError(f"--weights applies to zoo names; {path} is a file (use --arch to name its architecture)")
    if kind == "converted":
        from jaxvis.convert.converted import load_converted

        return load_converted(path)
    if kind == "keras":
        from jaxvis.convert.keras_h5 import load_keras

        return load_keras(path, arch)
    if path.lower().endswith(".safetensors"):
        from jaxvis.convert.converted import is_converted, load_converted

        if is_converted(path):
            return load_converted(path)
    return load_model(_torch_arch(path, arch), weights=path)

"""One way in: a zoo name or any supported model / weight file becomes a `ModelSpec`.

This is the one module that composes the file readers (`jaxvis.convert`) with the zoo.

Contract: `load_model(model, weights=, arch=)` returns a `ModelSpec` or raises a `JaxvisError`
with one line. The kind of input is decided by `describe_source` from the name alone (zoo names
first, then the file's suffix); each file format's reader then checks the bytes themselves:

* None: the default zoo model; a zoo name: the entry's builder (with `weights=` when it takes them);
* `.pth` / `.pt` / `.bin` / `.safetensors`: a PyTorch state_dict, loaded onto the zoo architecture
  `arch` (required); a `.safetensors` file written by `jaxvis convert` is recognized by its
  metadata and loads as a converted model;
* `.h5` / `.hdf5` / `.keras` / `.weights.h5`: a Keras file (`jaxvis.models.keras.load.load_keras`;
  `arch` a `keras_*` architecture for weights-only files);
* `.pt2` / `.onnx`: a model with its own graph (`jaxvis.models.graph.load_graph_model`): a
  torch.export archive or an ONNX file, read without torch or a runtime;
* `.jaxvis`: a converted model (`jaxvis.models.converted.load_converted`).
"""

from __future__ import annotations

import dataclasses
import os

from jaxvis.convert.jaxvis_file import is_converted
from jaxvis.errors import JaxvisError, WeightFileError, unknown_name
from jaxvis.models import registry
from jaxvis.models.converted import load_converted
from jaxvis.models.graph import load_graph_model
from jaxvis.models.keras.load import load_keras
from jaxvis.models.spec import ModelSpec, Preprocess, parse_preprocess

__all__ = [
    "CONVERTED_SUFFIXES",
    "GRAPH_SUFFIXES",
    "KERAS_SUFFIXES",
    "TORCH_SUFFIXES",
    "describe_source",
    "load_model",
    "parse_input_size",
    "parse_labels",
]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
KERAS_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
CONVERTED_SUFFIXES = (".jaxvis",)
GRAPH_SUFFIXES = (".pt2", ".onnx")  # files that carry their own graph: torch.export archives, ONNX
_TORCH_FRAMEWORKS = ("torchvision", "pytorch")


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or "." in os.path.basename(text)


def describe_source(model: str | None) -> str:
    """'zoo', 'torch', 'keras' or 'converted' for a `--model` value (no file is read).

    Raises:
      JaxvisError: an unknown name that is not a path, a missing file, a directory, or an unknown suffix.
    """
    if model is None or model in registry.model_names():
        return "zoo"
    path = os.fspath(model)
    if not os.path.exists(path):
        if not _looks_like_path(path):
            raise unknown_name("model (a zoo name or a model file)", path, registry.model_names())
        raise WeightFileError(f"{path}: no such model file")
    if os.path.isdir(path):
        raise WeightFileError(
            f"{path} is a directory; give a model file (.pth, .safetensors, .h5, .keras, .pt2, .onnx, .jaxvis)"
        )
    lower = path.lower()
    if lower.endswith(CONVERTED_SUFFIXES):
        return "converted"
    if lower.endswith(GRAPH_SUFFIXES):
        return "graph"
    if lower.endswith(KERAS_SUFFIXES):
        return "keras"
    if lower.endswith(TORCH_SUFFIXES):
        return "torch"
    raise JaxvisError(
        f"{path}: unknown model file type; expected one of "
        f"{', '.join(TORCH_SUFFIXES + KERAS_SUFFIXES + GRAPH_SUFFIXES + CONVERTED_SUFFIXES)} or a zoo name"
    )


def _torch_arch(path: str, arch: str | None) -> registry.ZooEntry:
    torch_zoo = [item.name for item in registry.entries() if item.framework in _TORCH_FRAMEWORKS and item.takes_weights]
    if arch is None:
        raise JaxvisError(f"{path} holds weights only: name their architecture with --arch (one of "
                          f"{', '.join(torch_zoo)})")
    if arch not in registry.model_names():
        raise unknown_name("architecture", arch, torch_zoo)
    item = registry.entry(arch)
    if not item.takes_weights:
        raise JaxvisError(f"zoo model {arch} takes no weight file; architectures that do: {', '.join(torch_zoo)}")
    return item  # a Keras architecture reads the file as a Keras file, and says what is wrong with it


def _zoo(name: str, weights) -> ModelSpec:
    item = registry.entry(name)
    if weights is not None and not item.takes_weights:
        raise JaxvisError(f"zoo model {name} takes no weight file")
    return item.build(**({"weights": weights} if weights is not None else {}))


def parse_labels(labels) -> tuple[str, ...]:
    """Class names from a text file (one per line) or a comma-separated list, or a sequence of names."""
    if isinstance(labels, (list, tuple)):
        return tuple(str(name) for name in labels)
    text = os.fspath(labels)
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            names = [line.strip() for line in f]
        while names and not names[-1]:
            names.pop()
    else:
        names = [name.strip() for name in text.split(",")]
    if not names or not all(names):
        raise JaxvisError(f"labels {text!r}: give a file with one class name per line, or names separated by commas")
    return tuple(names)


def parse_input_size(size) -> tuple[int, int]:
    """(height, width) from "H,W", "S" or a pair of ints, each at least 8."""
    try:
        values = tuple(
            int(v)
            for v in (size.split(",") if isinstance(size, str) else (size if hasattr(size, "__len__") else [size]))
        )
    except (TypeError, ValueError):
        raise JaxvisError(f"input size takes H,W (or one size for both), got {size!r}") from None
    values = values * 2 if len(values) == 1 else values
    if len(values) != 2 or min(values) < 8:
        raise JaxvisError(f"input size takes H,W of at least 8 pixels each, got {size!r}")
    return values


def _customized(spec: ModelSpec, preprocess, labels, input_size) -> ModelSpec:
    """`spec` with the user's preprocessing, class names and input size."""
    changes = {}
    if preprocess is not None:
        changes["preprocess"] = preprocess if isinstance(preprocess, Preprocess) else parse_preprocess(preprocess)
    if input_size is not None:
        changes["input_shape"] = (*parse_input_size(input_size), spec.input_shape[2])
    if labels is not None:
        names = parse_labels(labels)
        if spec.logits_layer is None:
            raise JaxvisError(f"{spec.name} has no class-score layer to name with labels")
        count = spec.channel_count(spec.logits_layer)
        if len(names) != count:
            raise JaxvisError(f"{len(names)} labels given for the {count} classes of {spec.name} {spec.logits_layer}")
        changes["class_names"] = names
    return dataclasses.replace(spec, **changes) if changes else spec


def load_model(model: str | None = None, *, weights=None, arch: str | None = None, preprocess=None, labels=None,
               input_size=None, **options) -> ModelSpec:
    """The `ModelSpec` of a zoo name or a model / weight file, customized (see the module docstring).

    Args:
      model: a zoo name (`jaxvis.models.model_names()`), a file path, or None for the default model.
      weights: with a zoo name: a weight file for it (default: the entry's default weights, or
        random init).
      arch: with a weights-only file: the zoo architecture to load them onto.
      preprocess: what the model expects as input, when the file does not say: a `Preprocess`, a
        name (`unit` [0, 1], `raw` 0..255, `tf` [-1, 1], `torch` ImageNet mean/std, `caffe` BGR
        0..255 minus the ImageNet mean) or `mean=...,std=...[,scale=...][,bgr]`.
      labels: class names of the logits layer: a file (one per line), "a,b,c" or a sequence.
      input_size: (height, width) the model takes (for models whose file leaves it open).
      options: with a zoo name: the builder's options (e.g. `conv_impl="lax"`, `seed=1`).

    Raises:
      JaxvisError: one line, for an unknown name, a missing or unreadable file, an unknown suffix, a
        missing or wrong `arch`, weights that do not fit it, or bad preprocess / labels / input size.
    """
    if model is not None and describe_source(model) == "graph":  # the graph's shapes are folded for the size
        if weights is not None or arch is not None or options:
            raise JaxvisError(f"{model} carries its own graph and weights: no --weights, --arch or options")
        return _customized(load_graph_model(os.fspath(model), input_size=input_size), preprocess, labels, None)
    spec = _load(model, weights=weights, arch=arch, **options)
    return _customized(spec, preprocess, labels, input_size)


def _load(model: str | None = None, *, weights=None, arch: str | None = None, **options) -> ModelSpec:
    kind = describe_source(model)
    if kind == "zoo":
        name = model or registry.DEFAULT_MODEL
        if arch is not None:
            raise JaxvisError(f"--arch applies to weight files; {name} is a zoo name")
        if options:
            return registry.entry(name).build(**({"weights": weights} if weights is not None else {}), **options)
        return _zoo(name, weights)
    path = os.fspath(model)
    if weights is not None:
        raise JaxvisError(f"--weights applies to zoo names; {path} is a file (use --arch to name its architecture)")
    if options:
        raise JaxvisError(f"options {sorted(options)} apply to zoo names, not to the file {path}")
    if kind == "converted":
        return load_converted(path)
    if kind == "keras":
        return load_keras(path, arch)
    if path.lower().endswith(".safetensors") and is_converted(path):
        return load_converted(path)
    return _torch_arch(path, arch).build(weights=path)

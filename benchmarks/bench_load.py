"""Loading a VGG16-sized (~528 MB) weight file into jaxvis variables, per format, against merely reading it.

For each format a file of random VGG16 weights is written to a temp dir (torch for the .pth files,
h5py for the Keras layouts, `save_converted` for .jaxvis); then, with the page cache warm, the
best of `--repeats` runs of

* load: the file into a `ModelSpec` whose variables are on the device (`jax.block_until_ready`);
* read: only its bytes -- every zip member (zip .pth), every HDF5 dataset (Keras files), the whole
  file (legacy .pth, .safetensors, .jaxvis);

and their ratio (target: <= 2). Torch files load onto the zoo's `vgg16` when it exists, else
`load_state_dict` + `jax.device_put` (the torch reader alone). Prints one JSON object.

    python benchmarks/bench_load.py [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import zipfile

import _results  # benchmarks/_results.py: print and write benchmarks/results/<name>.json
import jax
import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")

# torchvision VGG16 state_dict (features.N conv layers, classifier.{0,3,6}) and Keras VGG16 layers.
_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512), (512, 512),
          (512, 512), (512, 512), (512, 512), (512, 512)]
_TORCH_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
_KERAS_CONV_NAMES = [f"block{b}_conv{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)]
_DENSE = [(25088, 4096), (4096, 4096), (4096, 1000)]


def _rng_array(rng, shape):
    return rng.standard_normal(shape, dtype=np.float32) * 0.01


def write_files(folder: str) -> dict[str, str]:
    import h5py
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    keras_layers = {}
    for name, (cin, cout) in zip(_KERAS_CONV_NAMES, _CONVS):
        keras_layers[name] = [_rng_array(rng, (3, 3, cin, cout)), _rng_array(rng, (cout,))]
    for name, (n_in, n_out) in zip(("fc1", "fc2", "predictions"), _DENSE):
        keras_layers[name] = [_rng_array(rng, (n_in, n_out)), _rng_array(rng, (n_out,))]
    state = {}
    for index, name in zip(_TORCH_CONV_INDEX, _KERAS_CONV_NAMES):
        kernel, bias = keras_layers[name]
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(bias)
    for index, name in zip((0, 3, 6), ("fc1", "fc2", "predictions")):
        kernel, bias = keras_layers[name]
        state[f"classifier.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.T))
        state[f"classifier.{index}.bias"] = torch.from_numpy(bias)
    paths = {name: os.path.join(folder, file) for name, file in (
        ("torch_zip_pth", "vgg16.pth"), ("torch_legacy_pth", "vgg16_legacy.pth"), ("safetensors", "vgg16.safetensors"),
        ("keras_legacy_h5", "vgg16_weights_tf_dim_ordering_tf_kernels.h5"), ("keras_weights_h5", "vgg16.weights.h5"),
        ("jaxvis_converted", "vgg16.jaxvis"))}
    torch.save(state, paths["torch_zip_pth"])
    torch.save(state, paths["torch_legacy_pth"], _use_new_zipfile_serialization=False)
    save_file(state, paths["safetensors"])
    all_names = ["input_1"] + [n for n in _KERAS_CONV_NAMES] + ["flatten", "fc1", "fc2", "predictions"]
    with h5py.File(paths["keras_legacy_h5"], "w") as f:  # the Keras Applications download's layout
        f.attrs["layer_names"] = [n.encode() for n in all_names]
        for name in all_names:
            group = f.create_group(name)
            arrays = keras_layers.get(name, [])
            names = [f"{name}/kernel:0", f"{name}/bias:0"][:len(arrays)]
            for weight_name, array in zip(names, arrays):
                group.create_dataset(weight_name, data=array)
            group.attrs["weight_names"] = [n.encode() for n in names]
    with h5py.File(paths["keras_weights_h5"], "w") as f:  # Keras 3's save_weights layout
        layers = f.create_group("layers")
        counts: dict[str, int] = {}
        for name in all_names[1:]:
            base = "dense" if name in ("fc1", "fc2", "predictions") else ("flatten" if name == "flatten" else "conv2d")
            path = base if base not in counts else f"{base}_{counts[base] + 1}"
            counts[base] = counts.get(base, -1) + 1
            variables = layers.create_group(path).create_group("vars")
            variables.attrs["name"] = name
            for i, array in enumerate(keras_layers.get(name, [])):
                variables.create_dataset(str(i), data=array)
    from jaxvis.models import load_model
    from jaxvis.models.converted import save_converted

    save_converted(load_model("keras_vgg16", weights=paths["keras_legacy_h5"]), paths["jaxvis_converted"])
    return paths


def read_zip(path):
    with zipfile.ZipFile(path) as archive:
        return sum(len(archive.read(info)) for info in archive.infolist())


def read_h5(path):
    import h5py

    total = 0
    with h5py.File(path, "r") as f:
        def visit(_, item):
            nonlocal total
            if isinstance(item, h5py.Dataset):
                total += item[()].nbytes
        f.visititems(visit)
    return total


def read_file(path):
    with open(path, "rb") as f:
        return len(f.read())


def _torch_loader(path):
    from jaxvis.models import load_model, model_names

    if "vgg16" in model_names():
        return load_model("vgg16", weights=path).variables
    from jaxvis.convert.torch.checkpoint import load_state_dict

    return jax.device_put(load_state_dict(path))


def _keras_loader(path):
    from jaxvis.models import load_model

    return load_model("keras_vgg16", weights=path).variables


def _converted_loader(path):
    from jaxvis.models.converted import load_converted

    return load_converted(path).variables


def best(fn, path, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(path))
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", default=None, help="write the files here (default: a temp dir, removed)")
    args = parser.parse_args()
    from jaxvis.models import model_names

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or tmp
        os.makedirs(folder, exist_ok=True)
        start = time.perf_counter()
        paths = write_files(folder)
        written = time.perf_counter() - start
        plan = {
            "torch_zip_pth": (_torch_loader, read_zip, "zip members"),
            "torch_legacy_pth": (_torch_loader, read_file, "file"),
            "safetensors": (_torch_loader, read_file, "file"),
            "keras_legacy_h5": (_keras_loader, read_h5, "h5py datasets"),
            "keras_weights_h5": (_keras_loader, read_h5, "h5py datasets"),
            "jaxvis_converted": (_converted_loader, read_file, "file"),
        }
        results = {}
        for name, (load, read, read_what) in plan.items():
            path = paths[name]
            read(path)  # warm the page cache, and the loader's imports / traces
            load(path)
            read_s, load_s = best(read, path, args.repeats), best(load, path, args.repeats)
            results[name] = {"file_mb": round(os.path.getsize(path) / 1e6, 1), "read_s": round(read_s, 3),
                             "read": read_what, "load_s": round(load_s, 3), "ratio": round(load_s / read_s, 2)}
    _results.write("bench_load", {
        "device": str(jax.devices()[0]), "jax": jax.__version__,
        "numpy": np.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
        "torch_target": "zoo vgg16" if "vgg16" in model_names() else "load_state_dict + device_put (no zoo vgg16)",
        "write_files_s": round(written, 1), "repeats": args.repeats, "results": results,
    })


if __name__ == "__main__":
    main()

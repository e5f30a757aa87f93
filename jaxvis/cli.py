"""The `jaxvis` command line: thin argparse front-ends over the library's jobs.

Every `JaxvisError` becomes one line on stderr and exit status 2; progress goes to stderr (tqdm).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from jaxvis.errors import JaxvisError

DEFAULT_ATLAS_LAYER = "features.10"  # a mid layer of the default model: parts of objects, 64 filters


def _add_model_argument(parser):
    parser.add_argument("--model", default=None,
                        help="zoo name (see `jaxvis models`) or a model file (.pth/.safetensors with --arch, .h5, "
                             ".keras, .jaxvis); default: mobilenet_v2")
    parser.add_argument("--weights", default=None, help="weight file for the zoo model (default: its packaged weights)")
    _add_arch_argument(parser)


def _add_arch_argument(parser):
    parser.add_argument("--arch", default=None,
                        help="zoo architecture of a weights-only file (torch state_dict, Keras weights)")


def _load(args):
    from jaxvis.convert.resolve import resolve_model

    return resolve_model(args.model, weights=getattr(args, "weights", None), arch=getattr(args, "arch", None))


# `jaxvis atlas` render flags (argparse dest -> RenderConfig field). They default to None: a flag
# given replaces the preset's value; one not given keeps it.
PRESET_FLAGS = {"size": "size", "steps": "steps", "octaves": "octaves", "octave_scale": "octave_scale",
                "start_size": "start_size", "octave_blur": "octave_blur", "param": "param", "space": "space",
                "valid_range": "valid_range", "transforms": "transforms",
                "optimizer": "optimizer", "lr": "learning_rate", "weight_decay": "weight_decay",
                "relu_redirect_steps": "relu_redirect_steps"}
NO_PRESET = {"octaves": 2}  # without --preset: lucid with the CLI's two octaves (as before presets)


def _render_config(args):
    from jaxvis.render import RenderConfig

    overrides = {field: getattr(args, dest) for dest, field in PRESET_FLAGS.items() if getattr(args, dest, None) is not None}
    if args.init_range:
        try:
            low, high = (float(v) for v in args.init_range.split(","))
        except ValueError:
            raise JaxvisError(f"--init-range takes LOW,HIGH in [0, 1], got {args.init_range!r}") from None
        overrides["init_range"] = (low, high)
    if args.no_decorrelate:
        overrides["decorrelate"] = False
    if args.preset is None:
        overrides = {**NO_PRESET, **overrides}
    return RenderConfig.preset(args.preset or "lucid", batch=args.batch or 16, seed=args.seed,
                               precision=getattr(args, "precision", "f32"), **overrides)


def cmd_models(args):
    from jaxvis.models import describe_models

    for name, description in describe_models().items():
        print(f"{name:24s} {description}")


def cmd_layers(args):
    spec = _load(args)
    size = (args.size, args.size) if args.size else None
    shapes = spec.output_shapes(size)
    h, w = size or spec.input_shape[:2]
    print(f"{spec.name}: input {h}x{w}x{spec.channels}, {len(shapes)} layers")
    print(f"{'layer':28s} {'output shape':22s} channels")
    for name, shape in shapes.items():
        print(f"{name:28s} {str(tuple(shape[1:])):22s} {shape[-1]}")


def cmd_atlas(args):
    from jaxvis import distributed
    from jaxvis.atlas import parse_units, render_atlas, select_layers
    from jaxvis.io import check_writable_dir
    from jaxvis.render import auto_batch

    check_writable_dir(args.out)
    process = distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    spec = _load(args)
    config = _render_config(args)
    if args.all_layers or args.layers:
        layers = select_layers(spec, "*" if args.all_layers else args.layers)
    else:
        layers = [args.layer or (DEFAULT_ATLAS_LAYER if DEFAULT_ATLAS_LAYER in spec.layer_names else spec.layer_names[len(spec.layer_names) // 2])]
    spec.check_layers(layers)
    size = (config.octave_sizes()[0],) * 2
    plan = {}
    for layer in layers:
        count = spec.channel_count(layer, size)
        if args.filters:
            plan[layer] = parse_units(args.filters, count)
        else:  # one layer: the first 64 filters; a whole-model atlas: every filter
            plan[layer] = list(range(count if len(layers) > 1 else min(64, count)))
    from tqdm.auto import tqdm

    total = 0
    for layer in tqdm(layers, desc="layers", unit="layer", disable=args.quiet or len(layers) == 1):
        layer_config = config
        if args.batch is None:
            layer_config = dataclasses.replace(config, batch=auto_batch(spec, layer, config, len(plan[layer])))
        manifest = render_atlas(spec, layer, plan[layer], layer_config, args.out, progress=not args.quiet, process=process,
                                grid_tile=args.grid_tile)
        total += len(plan[layer])
        print(f"{len(plan[layer])} filters of {spec.name} {layer} ({manifest['rendered']} rendered, {manifest['resumed']} reused) "
              f"in {manifest['render_seconds']:.1f} s -> {os.path.join(args.out, manifest['grid'])}")


# --- the atlas page and dataset examples (jaxvis.page, jaxvis.examples) ----------------------

def cmd_page(args):
    from jaxvis.page import write_atlas_page

    print(f"atlas page -> {write_atlas_page(args.out_dir)}")


def cmd_examples(args):
    from jaxvis.atlas import layer_dirname, parse_units
    from jaxvis.examples import dataset_examples
    from jaxvis.io import read_json
    from jaxvis.page import write_atlas_page

    layer_manifest = os.path.join(args.out, layer_dirname(args.layer), "manifest.json")
    if not os.path.isfile(layer_manifest):
        raise JaxvisError(f"no atlas of layer {args.layer} in {args.out}: render it first (jaxvis atlas --layer {args.layer} --out {args.out})")
    spec = _load(args)
    spec.check_layers([args.layer])
    rendered = [f["index"] for f in read_json(layer_manifest)["filters"]]
    units = parse_units(args.filters, max(rendered) + 1) if args.filters else None
    manifest = dataset_examples(spec, args.layer, units, args.images, args.out, top=args.top, size=args.size,
                                patch=args.patch, batch=args.batch, progress=not args.quiet)
    settings = manifest["examples_settings"]
    page = write_atlas_page(args.out) if os.path.exists(os.path.join(args.out, "index.html")) else None
    print(f"top {settings['top']} examples of {len(units or rendered)} filters of {spec.name} {args.layer} from "
          f"{settings['count']} images -> {os.path.join(args.out, layer_dirname(args.layer), 'examples')}"
          + (f" (page updated: {page})" if page else ""))


def _add_page_commands(sub):
    page = sub.add_parser("page", help="(re)write the atlas's browsable index.html (static; opens from file://)")
    page.add_argument("out_dir", metavar="OUT_DIR", help="an atlas folder (the --out of `jaxvis atlas`)")
    page.set_defaults(run=cmd_page)

    examples = sub.add_parser("examples", help="find the image patches of a folder that excite each filter most")
    _add_model_argument(examples)
    examples.add_argument("--layer", required=True, help="a layer already rendered into the atlas at --out")
    examples.add_argument("--filters", default=None, help="e.g. 0-63, 3,7,9 or all (default: every filter of the atlas)")
    examples.add_argument("--images", required=True, help="folder of JPEG/PNG images (searched recursively)")
    examples.add_argument("--top", type=int, default=6, help="examples per filter")
    examples.add_argument("--size", type=int, default=None, help="images are resized to SIZE x SIZE (default: the model's input size)")
    examples.add_argument("--patch", type=int, default=None, help="patch side in pixels (default: a third of the image)")
    examples.add_argument("--batch", type=int, default=16, help="images per compiled batch")
    examples.add_argument("--out", default="jaxvis_atlas", help="the atlas folder")
    examples.add_argument("--quiet", action="store_true", help="no progress bar")
    examples.set_defaults(run=cmd_examples)


# --- end of the page / examples block -------------------------------------------------------

# --- the seed recipes: dream, features, weights, cam (jaxvis.dream / features / weights / cam) ---
# Numbers are parsed here, not by argparse, so a bad value is one `error:` line (exit 2).

DEFAULT_DREAM_LAYERS = ("features.10", "features.13")  # mid layers of the default model
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _number(text, option: str, kind=int, low=None, high=None):
    """`text` as an int / float within [low, high], or a one-line JaxvisError naming the option."""
    import math

    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise JaxvisError(f"{option} takes {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise JaxvisError(f"{option} must be finite, got {text!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else (f"<= {high}" if low is None else f"in [{low}, {high}]")
        raise JaxvisError(f"{option} must be {bounds}, got {text!r}")
    return value


def _names(text, option: str) -> list[str]:
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    if not names:
        raise JaxvisError(f"{option} needs at least one value, got {text!r}")
    return names


def _load_image_for(spec, path):
    from jaxvis.io import load_image

    return load_image(path, channels=1 if spec.channels == 1 else 3)


def _write_picture(path, image) -> None:
    """An image (uint8, or float in [0, 1]) in the format its suffix names, written atomically."""
    import cv2
    import numpy as np

    from jaxvis.io import atomic_write_bytes, to_uint8

    suffix = os.path.splitext(str(path))[1].lower()
    pixels = image if image.dtype == np.uint8 else to_uint8(image)
    pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels[:, :, ::-1]
    ok, buffer = cv2.imencode(suffix, np.ascontiguousarray(pixels))
    if not ok:
        raise JaxvisError(f"could not encode {path} as {suffix}")
    atomic_write_bytes(path, buffer.tobytes())


def cmd_dream(args):
    from jaxvis.dream import DreamConfig, dream
    from jaxvis.io import check_writable_dir, write_json

    out = args.out or os.path.splitext(os.path.basename(args.image))[0] + "_dream.png"
    if os.path.splitext(out)[1].lower() not in IMAGE_SUFFIXES:
        raise JaxvisError(f"--out must name an image file ({', '.join(IMAGE_SUFFIXES)}), got {out!r}")
    config = DreamConfig(
        steps=_number(args.steps, "--steps", int, 1, 100_000),
        step_size=_number(args.step_size, "--step-size", float, 1e-12),
        octave_scale=_number(args.octave_scale, "--octave-scale", float, 1.0, 10.0),
        octave_power_factors=tuple(_number(p, "--octaves", int, -16, 16) for p in _names(args.octaves, "--octaves")),
        tile_size=_number(args.tile_size, "--tile-size", int, 0),
        tile_overlap=_number(args.tile_overlap, "--tile-overlap", int, 0),
        align=_number(args.align, "--align", int, 1),
        seed=_number(args.seed, "--seed", int),
    ).validate()
    check_writable_dir(os.path.dirname(os.path.abspath(out)))
    spec = _load(args)
    if args.layers:
        layers = spec.check_layers(_names(args.layers, "--layers"))
    elif all(name in spec.layer_names for name in DEFAULT_DREAM_LAYERS):
        layers = DEFAULT_DREAM_LAYERS
    else:
        raise JaxvisError(f"name the layers to dream on with --layers (see `jaxvis layers {spec.name}`)")
    image = _load_image_for(spec, args.image)
    result = dream(spec, image, layers, config, progress=not args.quiet)
    _write_picture(out, result.image)
    record = {"image": args.image, "output": out, "model": spec.name, "layers": list(layers),
              "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
              "octaves": [{"size": list(size), "loss_first": float(losses[0].mean()), "loss_last": float(losses[-1].mean())}
                          for size, losses in zip(result.sizes, result.losses)]}
    write_json(os.path.splitext(out)[0] + ".json", record)
    summary = ", ".join(f"{o['loss_first']:.3f}->{o['loss_last']:.3f}" for o in record["octaves"])
    print(f"dreamed {args.image} on {spec.name} {','.join(layers)} ({len(result.sizes)} octaves, loss {summary}) -> {out}")


def cmd_features(args):
    from jaxvis.features import resolve_layers, save_feature_maps
    from jaxvis.io import check_writable_dir

    count = _number(args.count, "--count", int, 1, 100_000)
    columns = _number(args.columns, "--columns", int, 1, 1024) if args.columns is not None else None
    check_writable_dir(args.out)
    spec = _load(args)
    layers = resolve_layers(spec, args.layers)
    image = _load_image_for(spec, args.image)
    manifest = save_feature_maps(spec, image, args.out, layers, fit=args.fit, grid=args.grid, count=count,
                                 columns=columns, cmap=args.cmap, source=args.image)
    for record in manifest["layers"]:
        print(f"{record['layer']:28s} {str(tuple(record['shape'])):20s} -> {os.path.join(args.out, record['png'])}")
    print(f"{len(manifest['layers'])} layers of {spec.name} -> {args.out} (features.json, <layer>.npy, <layer>.png)")


def cmd_weights(args):
    from jaxvis.io import check_writable_dir
    from jaxvis.weights import format_table, parameter_tensors, save_weights_report, tensor_stats

    bins = _number(args.bins, "--bins", int, 1, 10_000)
    check_writable_dir(args.out)
    options = {}
    if args.checkpoint:
        from jaxvis.convert.torch_checkpoint import load_state_dict

        source, name, view = load_state_dict(args.checkpoint), os.path.basename(args.checkpoint), "stored"
    else:
        source, name, view, options = _weights_view(_load(args), args.converted)
    print(f"{name}: {'tensors as stored in the file' if view == 'stored' else 'CONVERTED tensors (jaxvis variables; BatchNorm folded into the convs)'}")
    manifest = save_weights_report(source, args.out, histograms=args.histograms, bins=bins, model=name, view=view, **options)
    print(format_table(tensor_stats(parameter_tensors(source))))
    files = manifest["files"]
    print(f"{len(manifest['tensors'])} tensors of {name} -> {args.out} ({files['csv']}, {files['json']}, "
          f"{len(files['histograms'])} histogram PNGs{', ' + files['first_conv'] if files['first_conv'] else ''})")


def _weights_view(spec, converted: bool):
    """(tensors, name, view, report options): the file's tensors as stored unless `converted` or the
    model has no source file (then jaxvis's converted variables)."""
    from jaxvis.weights import stored_tensors

    stored = None if converted else stored_tensors(spec)
    if stored is None:
        return spec, spec.name, "converted", {}
    return stored, f"{spec.name} ({os.path.basename(spec.source)})", "stored", {"in_channels": spec.channels, "bgr": spec.preprocess.bgr}


def cmd_cam(args):
    from jaxvis.cam import CamConfig, save_cam
    from jaxvis.io import check_writable_dir

    config = CamConfig(
        method=args.method, layer=args.layer,
        backprop_modifier=None if args.backprop_modifier == "none" else args.backprop_modifier,
        smooth_samples=_number(args.smooth_samples, "--smooth-samples", int, 1, 10_000),
        smooth_noise=_number(args.smooth_noise, "--smooth-noise", float, 0.0),
        scorecam_batch=_number(args.scorecam_batch, "--scorecam-batch", int, 1),
        seed=_number(args.seed, "--seed", int),
    ).validate()
    alpha = _number(args.alpha, "--alpha", float, 0.0, 1.0)
    classes = None if args.classes.strip() == "top" else [_number(c, "--class", int) for c in _names(args.classes, "--class")]
    check_writable_dir(args.out)
    spec = _load(args)
    images = [_load_image_for(spec, path) for path in args.images]
    stems = [os.path.splitext(os.path.basename(path))[0] for path in args.images]
    stems = [stem if stems.count(stem) == 1 else f"{stem}_{i}" for i, stem in enumerate(stems)]
    manifest = save_cam(spec, images, stems, classes, config, args.out, fit=args.fit, cmap=args.cmap, alpha=alpha)
    for record in manifest["images"]:
        labels = "; ".join(f"{c['label']} (logit {c['logit']:.2f})" for c in record["classes"])
        print(f"{record['image']}: {labels} -> {os.path.join(args.out, record['figure'])}")


def _add_job_parsers(sub) -> None:
    methods = ["gradcam", "gradcam++", "scorecam", "saliency", "smoothgrad", "guided", "guided_gradcam"]  # jaxvis.cam.METHODS

    dream = sub.add_parser("dream", help="DeepDream a photo (seed 002)")
    dream.add_argument("image", metavar="IMAGE")
    _add_model_argument(dream)
    dream.add_argument("--layers", default=None, help=f"comma-separated layers (default: {','.join(DEFAULT_DREAM_LAYERS)})")
    dream.add_argument("--out", default=None, help="output image file (.png/.jpg; default: <image>_dream.png); "
                                                   "a .json with the settings and losses is written beside it")
    dream.add_argument("--steps", default="50", help="steps per octave")
    dream.add_argument("--step-size", default="0.01", help="step on the std-normalized gradient (model input units)")
    dream.add_argument("--octave-scale", default="1.3")
    dream.add_argument("--octaves", default="-2,-1,0,1,2", help="octave power factors, e.g. --octaves=-2,-1,0,1,2 (with =, as they start with -)")
    dream.add_argument("--tile-size", default="512", help="gradient tile in pixels (0: no tiling)")
    dream.add_argument("--tile-overlap", default="64", help="context pixels around each tile")
    dream.add_argument("--align", default="32", help="tile windows start at multiples of this (the net's stride)")
    dream.add_argument("--seed", default="0", help="seeds the random rolls")
    dream.add_argument("--quiet", action="store_true", help="no progress bar")
    dream.set_defaults(run=cmd_dream)

    features = sub.add_parser("features", help="feature maps of chosen layers for an image (seeds 001, 004)")
    _add_model_argument(features)
    features.add_argument("--image", required=True)
    features.add_argument("--layers", default="all", help="comma-separated layers, or all (default)")
    features.add_argument("--out", default="jaxvis_features", help="output folder")
    features.add_argument("--fit", default="resize", choices=["resize", "crop", "keep"],
                          help="resize to the model input, torchvision-style centre crop, or keep the image size")
    features.add_argument("--grid", default="first", choices=["first", "all"],
                          help="first: the first --count channels (3x4); all: every channel, standardized, 16 per row")
    features.add_argument("--count", default="12", help="channels shown by --grid first")
    features.add_argument("--columns", default=None, help="grid columns (default 4 for first, 16 for all)")
    features.add_argument("--cmap", default="viridis", help="matplotlib colormap (e.g. viridis, gray)")
    features.set_defaults(run=cmd_features)

    weights = sub.add_parser("weights", help="weight statistics, histograms and first-layer kernels (seeds 001, 003)")
    _add_model_argument(weights)
    weights.add_argument("--checkpoint", default=None, help="report the tensors of this weight file as stored (torch .pth / "
                                                            ".safetensors names, BatchNorm statistics kept) instead of the model's")
    weights.add_argument("--converted", action="store_true",
                         help="report jaxvis's converted tensors (BatchNorm folded into the convs, Flax names) instead "
                              "of the tensors as the model's file stores them")
    weights.add_argument("--out", default="jaxvis_weights", help="output folder")
    weights.add_argument("--histograms", default="pages", choices=["pages", "each", "none"],
                         help="16 histograms per PNG page, one PNG per tensor, or none")
    weights.add_argument("--bins", default="50")
    weights.set_defaults(run=cmd_weights)

    cam = sub.add_parser("cam", help="class-activation maps and attributions over photos (seed 000's visualize_cam)")
    cam.add_argument("images", nargs="+", metavar="IMAGE")
    _add_model_argument(cam)
    cam.add_argument("--class", dest="classes", default="top", help="class indices, e.g. 20,379, or top (each image's best)")
    cam.add_argument("--method", default="gradcam", choices=methods)
    cam.add_argument("--layer", default=None, help="CAM layer (default: the last spatial layer before the logits)")
    cam.add_argument("--backprop-modifier", default="none", choices=["none", "guided", "relu"],
                     help="keras-vis ReLU gradient for gradcam, gradcam++, saliency and smoothgrad")
    cam.add_argument("--out", default="jaxvis_cam", help="output folder")
    cam.add_argument("--fit", default="resize", choices=["resize", "crop", "keep"],
                     help="how photos meet the network; heat maps are drawn back over the photo")
    cam.add_argument("--cmap", default="jet")
    cam.add_argument("--alpha", default="0.5", help="heat map opacity over the photo")
    cam.add_argument("--smooth-samples", default="25")
    cam.add_argument("--smooth-noise", default="0.15", help="SmoothGrad noise std (fraction of the [0, 1] range)")
    cam.add_argument("--scorecam-batch", default="32", help="masked images per forward pass in Score-CAM")
    cam.add_argument("--seed", default="0")
    cam.set_defaults(run=cmd_cam)


# --- end of the seed-recipe block ------------------------------------------------------------


# --- convert: any model source into one fast .jaxvis file (jaxvis.convert.converted) ----------

def cmd_convert(args):
    import time

    from jaxvis.convert.converted import SUFFIX, save_converted
    from jaxvis.convert.resolve import resolve_model

    if not args.out.endswith(SUFFIX):
        raise JaxvisError(f"--out must end with {SUFFIX}, got {args.out!r}")
    start = time.perf_counter()
    spec = resolve_model(args.source, arch=args.arch)
    loaded = time.perf_counter()
    save_converted(spec, args.out)
    size = os.path.getsize(args.out) / 2**20
    print(f"{spec.name}: {len(spec.layer_names)} layers, input {'x'.join(map(str, spec.input_shape))} -> {args.out} "
          f"({size:.1f} MiB; loaded in {loaded - start:.1f} s, written in {time.perf_counter() - loaded:.1f} s)")


def _add_convert_commands(sub):
    convert = sub.add_parser("convert", help="convert a model or weight file (or a zoo model) into one .jaxvis file")
    convert.add_argument("source", metavar="SRC", help="zoo name, .pth/.safetensors (with --arch), .h5, .keras or .jaxvis")
    _add_arch_argument(convert)
    convert.add_argument("--out", required=True, help="the .jaxvis file to write")
    convert.set_defaults(run=cmd_convert)
    _add_arch_argument(sub.choices["layers"])  # `jaxvis layers FILE --arch NAME`


# --- end of convert ---------------------------------------------------------------------------



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxvis", description="Compiled, batched feature visualization for CNNs.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list the model zoo").set_defaults(run=cmd_models)

    layers = sub.add_parser("layers", help="list a model's layers with output shapes and channel counts")
    layers.add_argument("model_name", nargs="?", default=None, metavar="MODEL")
    layers.add_argument("--weights", default=None)
    layers.add_argument("--size", type=int, default=None, help="input size for the shapes (default: the model's)")
    layers.set_defaults(run=cmd_layers)

    atlas = sub.add_parser("atlas", help="render the filters of a layer into an atlas")
    _add_model_argument(atlas)
    atlas.add_argument("--layer", default=None, help=f"layer name (default: {DEFAULT_ATLAS_LAYER} for the default model)")
    atlas.add_argument("--layers", default=None, help="comma-separated layer globs, e.g. 'features.*' (every filter of each)")
    atlas.add_argument("--all-layers", action="store_true", help="every layer of the model")
    atlas.add_argument("--filters", default=None, help="e.g. 0-63, 3,7,9 or all (default: the first 64)")
    atlas.add_argument("--preset", default=None, choices=["lucid", "fastai", "keras-vis"],
                       help="a named recipe (jaxvis.presets); the render flags below given beside it replace its values "
                            "(default: lucid with --octaves 2)")
    atlas.add_argument("--size", type=int, default=None, help="final image size in pixels (lucid: 128)")
    atlas.add_argument("--steps", type=int, default=None, help="optimization steps per octave (lucid: 64)")
    atlas.add_argument("--octaves", type=int, default=None, help="(lucid: 2 without --preset, 1 with it)")
    atlas.add_argument("--octave-scale", type=float, default=None, help="(lucid: 1.2)")
    atlas.add_argument("--start-size", type=int, default=None, help="size of the first octave (then x octave-scale each)")
    atlas.add_argument("--octave-blur", type=int, default=None, help="box blur kernel after each upscale (odd; 0 = none)")
    atlas.add_argument("--param", default=None, choices=["fft", "pixel"], help="(lucid: fft)")
    atlas.add_argument("--space", default=None, choices=["display", "input"],
                       help="optimize the display image or the model's input after its preprocessing (lucid: display)")
    atlas.add_argument("--no-decorrelate", action="store_true", help="optimize RGB directly")
    atlas.add_argument("--valid-range", default=None, choices=["sigmoid", "offset", "none"], help="(lucid: sigmoid)")
    atlas.add_argument("--init-range", default=None, help="uniform initial image LOW,HIGH in display units, e.g. 0.588,0.706")
    atlas.add_argument("--transforms", default=None, choices=["standard", "jitter", "none"], help="(lucid: standard)")
    atlas.add_argument("--optimizer", default=None, choices=["adam", "sgd", "keras-vis"], help="(lucid: adam)")
    atlas.add_argument("--lr", type=float, default=None, help="learning rate, in the units of --space (lucid: 0.05)")
    atlas.add_argument("--weight-decay", type=float, default=None, help="(lucid: 0)")
    atlas.add_argument("--relu-redirect-steps", type=int, default=None, help="steps using lucid's redirected ReLU gradient (lucid: 16)")
    atlas.add_argument("--batch", type=int, default=None,
                       help="filters optimized together in one compiled program (default: from device memory; 16 on CPU)")
    atlas.add_argument("--precision", default="f32", choices=["f32", "bf16"], help="network compute precision")
    atlas.add_argument("--coordinator", default=None, help="multi-process run: coordinator HOST:PORT (or JAXVIS_COORDINATOR)")
    atlas.add_argument("--num-processes", type=int, default=None, help="multi-process run: number of processes")
    atlas.add_argument("--process-id", type=int, default=None, help="multi-process run: this process's id")
    atlas.add_argument("--seed", type=int, default=0)
    atlas.add_argument("--grid-tile", type=int, default=None,
                       help="tile side in the grid image (default: the render size; filter PNGs keep it)")
    atlas.add_argument("--out", default="jaxvis_atlas", help="output folder")
    atlas.add_argument("--quiet", action="store_true", help="no progress bars")
    atlas.set_defaults(run=cmd_atlas)
    _add_page_commands(sub)  # page, examples
    _add_job_parsers(sub)  # dream, features, weights, cam
    _add_convert_commands(sub)  # convert (and --arch for layers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "model_name", None) is not None:
        args.model = args.model_name
    elif not hasattr(args, "model"):
        args.model = None
    try:
        args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
    except JaxvisError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished filters are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `jaxvis layers M | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())

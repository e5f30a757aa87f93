"""`jaxvis cam`: class-activation maps and attributions over photos (keras-vis `visualize_cam` and friends)."""

from __future__ import annotations

import os

from jaxvis.cli.options import add_cache_options, add_model_options, default_of, load_model_from, names, number

__all__ = ["add_parser", "run"]


def _default(field: str) -> str:
    from jaxvis.recipes.cam import CamConfig

    return str(default_of(CamConfig, field))


def add_parser(sub) -> None:
    from jaxvis.recipes.cam import FITS, METHODS, MODIFIERS

    d = _default
    cam = sub.add_parser("cam", help="class-activation maps and attributions over photos (keras-vis visualize_cam)")
    cam.add_argument("images", nargs="+", metavar="IMAGE")
    add_model_options(cam)
    add_cache_options(cam)
    cam.add_argument(
        "--class", dest="classes", default="top", help="class indices, e.g. 20,379, or top (each image's best)"
    )
    cam.add_argument("--method", default=d("method"), choices=list(METHODS))
    cam.add_argument("--layer", default=None, help="CAM layer (default: the last spatial layer before the logits)")
    cam.add_argument("--backprop-modifier", default="none", choices=["none", *(m for m in MODIFIERS if m)],
                     help="keras-vis ReLU gradient for gradcam, gradcam++, saliency and smoothgrad")
    cam.add_argument("--out", default="jaxvis_cam", help="output folder")
    cam.add_argument("--fit", default="resize", choices=list(FITS),
                     help="how photos meet the network; heat maps are drawn back over the photo")
    cam.add_argument("--cmap", default="jet")
    cam.add_argument("--alpha", default="0.5", help="heat map opacity over the photo")
    cam.add_argument("--smooth-samples", default=d("smooth_samples"))
    cam.add_argument(
        "--smooth-noise", default=d("smooth_noise"), help="SmoothGrad noise std (fraction of the [0, 1] range)"
    )
    cam.add_argument(
        "--scorecam-batch", default=d("scorecam_batch"), help="masked images per forward pass in Score-CAM"
    )
    cam.add_argument("--seed", default=d("seed"))
    cam.set_defaults(run=run)


def run(args) -> None:
    from jaxvis.output.files import check_writable_dir, load_image
    from jaxvis.recipes.cam import CamConfig, save_cam

    config = CamConfig(
        method=args.method, layer=args.layer,
        backprop_modifier=None if args.backprop_modifier == "none" else args.backprop_modifier,
        smooth_samples=number(args.smooth_samples, "--smooth-samples", int, 1, 10_000),
        smooth_noise=number(args.smooth_noise, "--smooth-noise", float, 0.0),
        scorecam_batch=number(args.scorecam_batch, "--scorecam-batch", int, 1),
        seed=number(args.seed, "--seed", int),
    ).validate()
    alpha = number(args.alpha, "--alpha", float, 0.0, 1.0)
    classes = (
        None if args.classes.strip() == "top" else [number(c, "--class", int) for c in names(args.classes, "--class")]
    )
    check_writable_dir(args.out)
    spec = load_model_from(args)
    images = [load_image(path, channels=1 if spec.channels == 1 else 3) for path in args.images]
    stems = [os.path.splitext(os.path.basename(path))[0] for path in args.images]
    stems = [stem if stems.count(stem) == 1 else f"{stem}_{i}" for i, stem in enumerate(stems)]
    manifest = save_cam(spec, images, stems, classes, config, args.out, fit=args.fit, cmap=args.cmap, alpha=alpha)
    for record in manifest["images"]:
        labels = "; ".join(f"{c['label']} (logit {c['logit']:.2f})" for c in record["classes"])
        print(f"{record['image']}: {labels} -> {os.path.join(args.out, record['figure'])}")

"""`jaxvis page`: (re)write an atlas folder's browsable index.html."""

from __future__ import annotations

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    page = sub.add_parser("page", help="(re)write the atlas's browsable index.html (static; opens from file://)")
    page.add_argument("out_dir", metavar="OUT_DIR", help="an atlas folder (the --out of `jaxvis atlas`)")
    page.set_defaults(run=run)


def run(args) -> None:
    from jaxvis.recipes.page import write_atlas_page

    print(f"atlas page -> {write_atlas_page(args.out_dir)}")

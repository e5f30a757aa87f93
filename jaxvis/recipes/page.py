"""The browsable atlas: one static HTML page over an atlas folder, no server needed.

Contract: `write_atlas_page(out_dir)` reads `out_dir/manifest.json` (see `jaxvis.recipes.atlas`) and writes
`out_dir/index.html` atomically: one self-contained file (inline CSS and JS, no external resources)
that works from `file://`. The manifest is embedded as JSON in a `<script type="application/json">`
element (browsers refuse `fetch()` of local files), escaped so no manifest text can end the script
or become markup; the page builds its DOM with `textContent` and attributes only. Images are
referenced by relative paths (each segment URL-encoded) and load lazily. Location hash
`#layer=<name>&filter=<index>` selects a layer and opens one filter (large image, score, render
settings and its dataset examples when the manifest has them).
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from importlib import resources
from pathlib import Path

from jaxvis.errors import JaxvisError
from jaxvis.output import files

__all__ = ["render_page", "script_json", "write_atlas_page"]


def write_atlas_page(out_dir) -> Path:
    """(Re)write `out_dir/index.html` from `out_dir/manifest.json`; return its path."""
    out_dir = Path(out_dir)
    manifest_file = out_dir / "manifest.json"
    if not manifest_file.is_file():
        raise JaxvisError(
            f"no atlas in {out_dir}: manifest.json is missing (render one with `jaxvis atlas --out {out_dir}`)"
        )
    try:
        atlas = files.read_json(manifest_file)
    except (OSError, ValueError) as error:
        raise JaxvisError(f"cannot read {manifest_file}: {error}") from None
    if not isinstance(atlas, dict) or not isinstance(atlas.get("layers"), list):
        raise JaxvisError(f"{manifest_file} is not an atlas manifest (no 'layers' list)")
    return files.atomic_write_bytes(out_dir / "index.html", render_page(atlas).encode("utf-8"))


def render_page(atlas: dict) -> str:
    """The page's HTML for an atlas manifest."""
    values = {"TITLE": html.escape(f"jaxvis atlas: {atlas.get('model', '?')}", quote=True), "DATA": script_json(atlas)}
    return re.sub(r"%(TITLE|DATA)%", lambda match: values[match.group(1)], _template())


@functools.cache
def _template() -> str:
    """The page template, `jaxvis/output/templates/atlas_page.html` (placeholders `%TITLE%`, `%DATA%`)."""
    return resources.files("jaxvis.output").joinpath("templates", "atlas_page.html").read_text("utf-8")


def script_json(obj) -> str:
    """JSON that is safe inside a `<script>` element: no `<`, `>` or `&` (so no `</script>` or
    `<!--`), no raw U+2028/U+2029, and non-finite numbers as strings (JSON.parse rejects NaN)."""
    text = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj

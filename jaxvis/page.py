"""The browsable atlas: one static HTML page over an atlas folder, no server needed.

Contract: `write_atlas_page(out_dir)` reads `out_dir/manifest.json` (see `jaxvis.atlas`) and writes
`out_dir/index.html` atomically: one self-contained file (inline CSS and JS, no external resources)
that works from `file://`. The manifest is embedded as JSON in a `<script type="application/json">`
element (browsers refuse `fetch()` of local files), escaped so no manifest text can end the script
or become markup; the page builds its DOM with `textContent` and attributes only. Images are
referenced by relative paths (each segment URL-encoded) and load lazily. Location hash
`#layer=<name>&filter=<index>` selects a layer and opens one filter (large image, score, render
settings and its dataset examples when the manifest has them).
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

from jaxvis import io
from jaxvis.errors import JaxvisError


def write_atlas_page(out_dir) -> Path:
    """(Re)write `out_dir/index.html` from `out_dir/manifest.json`; return its path."""
    out_dir = Path(out_dir)
    manifest_file = out_dir / "manifest.json"
    if not manifest_file.is_file():
        raise JaxvisError(f"no atlas in {out_dir}: manifest.json is missing (render one with `jaxvis atlas --out {out_dir}`)")
    try:
        atlas = io.read_json(manifest_file)
    except (OSError, ValueError) as error:
        raise JaxvisError(f"cannot read {manifest_file}: {error}") from None
    if not isinstance(atlas, dict) or not isinstance(atlas.get("layers"), list):
        raise JaxvisError(f"{manifest_file} is not an atlas manifest (no 'layers' list)")
    return io.atomic_write_bytes(out_dir / "index.html", render_page(atlas).encode("utf-8"))


def render_page(atlas: dict) -> str:
    """The page's HTML for an atlas manifest."""
    values = {"TITLE": html.escape(f"jaxvis atlas: {atlas.get('model', '?')}", quote=True), "DATA": script_json(atlas)}
    return re.sub(r"%(TITLE|DATA)%", lambda match: values[match.group(1)], _TEMPLATE)


def script_json(obj) -> str:
    """JSON that is safe inside a `<script>` element: no `<`, `>` or `&` (so no `</script>` or
    `<!--`), no raw U+2028/U+2029, and non-finite numbers as strings (JSON.parse rejects NaN)."""
    text = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
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


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
:root { --bg: #fafafa; --fg: #1d1d1f; --muted: #6b6b70; --line: #dcdce0; --accent: #2456c7; --card: #fff; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 10px 18px; border-bottom: 1px solid var(--line); background: var(--card); }
header h1 { font-size: 18px; margin: 0; }
header .meta { color: var(--muted); font-size: 12px; }
#app { display: flex; min-height: calc(100vh - 56px); }
nav { width: 230px; flex: none; border-right: 1px solid var(--line); background: var(--card); padding: 8px 0; overflow-y: auto; max-height: calc(100vh - 56px); position: sticky; top: 0; }
nav h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); margin: 4px 14px 6px; }
#layers { list-style: none; margin: 0; padding: 0; }
#layers a { display: flex; justify-content: space-between; gap: 8px; padding: 4px 14px; color: var(--fg); text-decoration: none; overflow-wrap: anywhere; }
#layers a:hover { background: #eef1f8; }
#layers a.current { background: var(--accent); color: #fff; }
#layers .count { color: var(--muted); font-variant-numeric: tabular-nums; }
#layers a.current .count { color: #dfe6f7; }
main { flex: 1; padding: 14px 18px; min-width: 0; }
main h2 { margin: 0 0 4px; font-size: 20px; overflow-wrap: anywhere; }
.settings { color: var(--muted); font-size: 12px; margin-bottom: 10px; }
.tools { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin-bottom: 12px; }
.tools input { padding: 3px 6px; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(var(--tile, 112px), 1fr)); gap: 10px; }
.card { display: block; background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 6px; cursor: pointer; color: inherit; text-decoration: none; }
.card:hover, .card:focus { border-color: var(--accent); outline: none; }
.card img { display: block; width: 100%; height: auto; aspect-ratio: 1; object-fit: contain; background: #eee; image-rendering: pixelated; }
.card .label { display: block; font-weight: 600; margin-top: 4px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.card .score { display: block; color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.card .ex { float: right; color: var(--accent); }
#detail { position: fixed; inset: 0; background: rgba(20, 20, 24, .55); display: flex; align-items: flex-start; justify-content: center; overflow-y: auto; padding: 28px 12px; }
#detail[hidden] { display: none; }
.panel { background: var(--card); border-radius: 8px; padding: 16px 18px; max-width: 980px; width: 100%; box-shadow: 0 8px 30px rgba(0,0,0,.3); }
.panel .top { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
.panel h3 { margin: 0; font-size: 18px; overflow-wrap: anywhere; }
.panel button { font: inherit; padding: 3px 10px; cursor: pointer; }
.body { display: flex; flex-wrap: wrap; gap: 18px; margin-top: 12px; }
.big img { width: 320px; max-width: 80vw; image-rendering: pixelated; background: #eee; display: block; }
.big .score { font-size: 16px; margin-top: 6px; font-variant-numeric: tabular-nums; }
.side { flex: 1; min-width: 260px; }
.side h4 { margin: 0 0 6px; font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
#examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(110px, 1fr)); gap: 8px; margin-bottom: 14px; }
#examples figure { margin: 0; }
#examples img { width: 100%; aspect-ratio: 1; object-fit: cover; display: block; background: #eee; }
#examples figcaption { font-size: 11px; color: var(--muted); overflow-wrap: anywhere; }
table.kv { border-collapse: collapse; font-size: 12px; }
table.kv td { padding: 1px 10px 1px 0; vertical-align: top; overflow-wrap: anywhere; }
table.kv td:first-child { color: var(--muted); white-space: nowrap; }
.empty { color: var(--muted); }
</style>
</head>
<body>
<header><h1 id="title"></h1><div class="meta" id="meta"></div></header>
<noscript><p style="padding:0 18px">This page needs JavaScript. The atlas is also in manifest.json and the
&lt;layer&gt;_grid.png images next to this file.</p></noscript>
<div id="app">
<nav><h2>Layers</h2><ul id="layers"></ul></nav>
<main>
<h2 id="layer-name"></h2>
<div class="settings" id="layer-settings"></div>
<div class="tools">
<label>Sort <select id="sort"><option value="index">by index</option><option value="score-desc">by score (high first)</option><option value="score-asc">by score (low first)</option></select></label>
<label>Find <input id="find" type="search" placeholder="index or label"></label>
<a id="grid-link" href="#">grid PNG</a>
<span id="shown" class="settings"></span>
</div>
<div id="grid"></div>
</main>
</div>
<div id="detail" hidden role="dialog" aria-modal="true" aria-labelledby="detail-title">
<div class="panel">
<div class="top"><h3 id="detail-title"></h3><span><button id="prev" title="previous (&larr;)">&larr;</button> <button id="next" title="next (&rarr;)">&rarr;</button> <button id="close" title="close (Esc)">close</button></span></div>
<div class="body">
<div class="big"><img id="detail-image" alt=""><div class="score" id="detail-score"></div></div>
<div class="side">
<h4>Dataset examples</h4><div id="examples"></div>
<h4>Render settings</h4><table class="kv" id="detail-settings"></table>
</div>
</div>
</div>
</div>
<script type="application/json" id="atlas-data">%DATA%</script>
<script>
"use strict";
(function () {
  const atlas = JSON.parse(document.getElementById("atlas-data").textContent);
  const layers = Array.isArray(atlas.layers) ? atlas.layers : [];
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  };
  // a relative URL from a manifest path: each segment encoded, so no scheme or markup survives
  const url = (path) => String(path || "").split("/").filter((s) => s !== "").map(encodeURIComponent).join("/");
  const fmt = (x) => typeof x === "number" ? (Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(3) : x.toFixed(4)) : String(x);
  const filters = (layer) => Array.isArray(layer.filters) ? layer.filters : [];
  const cfg = (layer) => (layer.config && typeof layer.config === "object") ? layer.config : {};

  $("title").textContent = "jaxvis atlas: " + String(atlas.model ?? "?");
  const v = atlas.versions || {};
  const total = layers.reduce((n, l) => n + filters(l).length, 0);
  $("meta").textContent = [String(atlas.source ?? ""), layers.length + " layers, " + total + " filters",
    v.jaxvis ? "jaxvis " + v.jaxvis : "", v.jax ? "jax " + v.jax : "", v.device ? String(v.device) : ""].filter(Boolean).join("  \u00b7  ");

  const nav = $("layers");
  layers.forEach((layer, i) => {
    const a = el("a", {href: "#layer=" + encodeURIComponent(String(layer.layer)), "data-layer": String(layer.layer)},
      el("span", {class: "name"}, String(layer.layer)), el("span", {class: "count"}, filters(layer).length));
    nav.append(el("li", {}, a));
  });

  let current = null, order = [], open = null;

  function route() {
    const params = new URLSearchParams(location.hash.slice(1));
    const name = params.get("layer");
    const layer = layers.find((l) => String(l.layer) === name) || layers[0];
    if (!layer) { $("layer-name").textContent = "no layers in this atlas"; return; }
    if (layer !== current) showLayer(layer);
    const f = params.get("filter");
    const record = f === null ? null : filters(layer).find((r) => String(r.index) === f);
    record ? showFilter(record) : hideDetail();
  }

  function showLayer(layer) {
    current = layer;
    for (const a of nav.querySelectorAll("a")) a.classList.toggle("current", a.dataset.layer === String(layer.layer));
    $("layer-name").textContent = String(layer.layer);
    const c = cfg(layer);
    $("layer-settings").textContent = [filters(layer).length + " filters", c.size ? c.size + " px" : "",
      c.steps !== undefined ? c.steps + " steps" : "", c.octaves !== undefined ? c.octaves + " octave(s)" : "",
      c.param ? c.param + " param" : "", c.seed !== undefined ? "seed " + c.seed : "",
      layer.examples_settings ? "examples from " + layer.examples_settings.count + " images" : ""].filter(Boolean).join("  \u00b7  ");
    const link = $("grid-link");
    link.hidden = !layer.grid;
    if (layer.grid) link.setAttribute("href", url(layer.grid));
    const tile = Math.min(160, Math.max(96, Number(c.size) || 128));
    $("grid").style.setProperty("--tile", tile + "px");
    drawGrid();
  }

  function drawGrid() {
    const grid = $("grid");
    const sort = $("sort").value, needle = $("find").value.trim().toLowerCase();
    const num = (x) => typeof x === "number" ? x : -Infinity;
    order = filters(current).slice();
    if (sort === "score-desc") order.sort((a, b) => num(b.score) - num(a.score));
    if (sort === "score-asc") order.sort((a, b) => num(a.score) - num(b.score));
    if (needle) order = order.filter((r) => String(r.label ?? r.index).toLowerCase().includes(needle) || String(r.index) === needle);
    grid.replaceChildren(...order.map((r) => {
      const card = el("a", {class: "card", href: "#layer=" + encodeURIComponent(String(current.layer)) + "&filter=" + encodeURIComponent(String(r.index)),
                             "data-index": r.index, title: String(r.label ?? r.index)},
        el("img", {src: url(r.file), loading: "lazy", alt: "filter " + String(r.index), width: 128, height: 128}),
        el("span", {class: "label"}, String(r.label ?? r.index)),
        el("span", {class: "score"}, "score " + fmt(r.score)));
      if (Array.isArray(r.examples) && r.examples.length) card.querySelector(".score").append(el("span", {class: "ex", title: "has dataset examples"}, r.examples.length + " ex"));
      return card;
    }));
    $("shown").textContent = order.length === filters(current).length ? "" : order.length + " shown";
  }

  function showFilter(r) {
    open = r;
    const c = cfg(current);
    $("detail-title").textContent = String(current.layer) + "  \u00b7  filter " + String(r.label ?? r.index);
    $("detail-image").setAttribute("src", url(r.file));
    $("detail-image").setAttribute("alt", "filter " + String(r.index));
    $("detail-score").textContent = "score " + fmt(r.score);
    const ex = $("examples");
    if (Array.isArray(r.examples) && r.examples.length) {
      ex.replaceChildren(...r.examples.map((e) => el("figure", {},
        el("img", {src: url(e.file), alt: "example " + String(e.rank) + " of filter " + String(r.index)}),
        el("figcaption", {}, String(e.image ?? "") + "  \u00b7  act " + fmt(e.activation)))));
    } else {
      ex.replaceChildren(el("p", {class: "empty"}, "none: run `jaxvis examples --images FOLDER` to add them"));
    }
    const rows = [["model", atlas.model], ["source", current.source ?? atlas.source], ["layer", current.layer], ["filter", r.index], ["score", fmt(r.score)]]
      .concat(Object.entries(c).map(([k, val]) => [k, val === null ? "-" : typeof val === "object" ? JSON.stringify(val) : val]));
    const es = current.examples_settings;
    if (es && typeof es === "object") {
      rows.push(["examples from", String(es.images ?? "?") + " (" + es.count + " images" + (es.skipped ? ", " + es.skipped + " unreadable" : "") + ")"]);
      rows.push(["examples as", (Array.isArray(es.size) ? es.size.join("\u00d7") : "?") + " px input, " + es.patch + " px patches, top " + es.top]);
    }
    $("detail-settings").replaceChildren(...rows.map(([k, val]) => el("tr", {}, el("td", {}, k), el("td", {}, String(val ?? "")))));
    $("detail").hidden = false;
  }

  function hideDetail() { open = null; $("detail").hidden = true; }
  function go(filter) {
    const base = "#layer=" + encodeURIComponent(String(current.layer));
    location.hash = filter === null ? base : base + "&filter=" + encodeURIComponent(String(filter.index));
  }
  function step(delta) {
    if (!open || !order.length) return;
    const i = order.indexOf(open);
    go(order[(i + delta + order.length) % order.length]);
  }

  $("close").addEventListener("click", () => go(null));
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("detail").addEventListener("click", (e) => { if (e.target === $("detail")) go(null); });
  document.addEventListener("keydown", (e) => {
    if (!open) return;
    if (e.key === "Escape") go(null);
    if (e.key === "ArrowLeft") step(-1);
    if (e.key === "ArrowRight") step(1);
  });
  $("sort").addEventListener("change", drawGrid);
  $("find").addEventListener("input", drawGrid);
  window.addEventListener("hashchange", route);
  route();
})();
</script>
</body>
</html>
"""

"""The atlas page in a real browser: headless Chromium from file://, checked by DOM dump and WebDriver.

Chromium and chromedriver come from Debian (`.ci/install-browser`); without them these tests FAIL.
"""

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from jaxvis.cli import main
from jaxvis.errors import JaxvisError
from jaxvis.models import load_model
from jaxvis.optvis.render import RenderConfig
from jaxvis.output import files
from jaxvis.recipes.atlas import render_atlas
from jaxvis.recipes.examples import dataset_examples
from jaxvis.recipes.page import render_page, script_json, write_atlas_page

INSTALL = "apt-get update && apt-get install -y chromium chromium-driver  (or run .ci/install-browser)"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
HOSTILE = '</script><img src=x onerror="document.title=1">&amp; "q" \u2028'
LAYERS = {"conv1": 6, "conv3": 4}
CONFIG = RenderConfig(size=32, steps=12, batch=4)  # test_atlas.CONFIG: its programs, compiled once per session


def _binary(name):
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL}")
    return path


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """A real two-layer tiny_cnn atlas with dataset examples for conv3 and a hostile label in conv1."""
    out = tmp_path_factory.mktemp("atlas")
    spec = load_model("tiny_cnn")
    for layer, count in LAYERS.items():
        render_atlas(spec, layer, range(count), CONFIG, out, progress=False)
    photos = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(5):
        files.save_image(photos / f"img {i}&<x>.png", rng.uniform(size=(40 + 8 * i, 48, 3)))
    dataset_examples(spec, "conv3", None, photos, out, top=3, progress=False)
    manifest = files.read_json(out / "manifest.json")
    manifest["layers"][0]["filters"][0]["label"] = HOSTILE
    files.write_json(out / "manifest.json", manifest)
    write_atlas_page(out)
    return out


class _Dom(HTMLParser):
    """What the dumped DOM holds: layer links with counts, grid images, and all text."""

    def __init__(self):
        super().__init__()
        self.layers, self.counts, self.images, self.text, self._in = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in.append((tag, attrs))
        if tag == "a" and "data-layer" in attrs:
            self.layers.append(attrs["data-layer"])
        if tag == "img":
            self.images.append(attrs)

    def handle_endtag(self, tag):
        while self._in and self._in.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if self._in and self._in[-1][0] == "span" and self._in[-1][1].get("class") == "count":
            self.counts.append(int(data))
        self.text.append(data)


def _dump_dom(page: Path, fragment: str = "") -> _Dom:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                _binary("chromium"),
                *FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                page.as_uri() + fragment,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = _Dom()
    dom.feed(result.stdout)
    return dom


def test_page_is_one_self_contained_file(atlas):
    text = (atlas / "index.html").read_text()
    assert "<link" not in text and "http://" not in text and "https://" not in text and "@import" not in text
    assert text.count("</script>") == 2 and HOSTILE not in text  # the label cannot end the data script
    data = text.split('<script type="application/json" id="atlas-data">')[1].split("</script>")[0]
    assert json.loads(data) == files.read_json(atlas / "manifest.json")
    assert not list(atlas.rglob("*.tmp"))


def test_script_json_escapes_and_survives_nan():
    text = script_json({"a": "</script><!-- & \u2028", "b": float("nan"), "c": [float("inf")]})
    assert not any(c in text for c in "<>&\u2028")
    assert json.loads(text) == {"a": "</script><!-- & \u2028", "b": "nan", "c": ["inf"]}
    assert "<title>jaxvis atlas: &lt;b&gt;%DATA%</title>" in render_page({"model": "<b>%DATA%", "layers": []})


def test_dumped_dom_lists_every_layer_and_every_image_file_exists(atlas):
    for layer, count in LAYERS.items():
        dom = _dump_dom(atlas / "index.html", f"#layer={layer}")
        assert dom.layers == list(LAYERS) and dom.counts == list(LAYERS.values())
        grid = [img for img in dom.images if img.get("loading") == "lazy"]
        assert len(grid) == count
        for img in grid:
            assert (atlas / img["src"]).is_file() and img["src"].startswith(f"{layer}/filter_")
        text = "".join(dom.text)
        assert layer in text and "score " in text
    first = _dump_dom(atlas / "index.html")  # no hash: the first layer, whose label is hostile text
    assert HOSTILE.replace("\u2028", "") in "".join(first.text).replace("\u2028", "")
    assert all(img.get("src") != "x" for img in first.images)


class WebDriver:
    """Just enough of the W3C WebDriver protocol over urllib to drive chromedriver."""

    def __init__(self, chromedriver: str, chromium: str, profile: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [chromedriver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    raise
                time.sleep(0.2)
        options = {"binary": chromium, "args": [*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,900"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]
        self.call("POST", "/timeouts", {"script": 30000, "pageLoad": 30000})

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def call(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url):
        self.call("POST", "/url", {"url": url})

    def run(self, script, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def run_async(self, script, *args):
        return self.call("POST", "/execute/async", {"script": script, "args": list(args)})

    def click(self, css):
        element = self.call("POST", "/element", {"using": "css selector", "value": css})
        self.call("POST", f"/element/{next(iter(element.values()))}/click", {})

    def screenshot(self, path: Path):
        path.write_bytes(base64.b64decode(self.call("GET", "/screenshot")))

    def close(self):
        with contextlib.suppress(OSError):
            self._call("DELETE", f"/session/{self.session}")
        self.process.terminate()
        self.process.wait(10)


# every <img> with a src, once loaded or failed: [src, complete, naturalWidth]
IMAGES_LOADED = """
const done = arguments[arguments.length - 1];
const images = [...document.images].filter((i) => i.hasAttribute("src") && i.offsetParent !== null);
Promise.all(images.map((i) => i.complete ? null : new Promise((r) => {
  i.addEventListener("load", r);
  i.addEventListener("error", r);
})))
  .then(() => done(images.map((i) => [i.getAttribute("src"), i.complete, i.naturalWidth])));
"""


def test_images_really_load_in_chromium(atlas, tmp_path):
    chromedriver, chromium = _binary("chromedriver"), _binary("chromium")
    with tempfile.TemporaryDirectory() as profile:
        driver = WebDriver(chromedriver, chromium, profile)
        try:
            page = (atlas / "index.html").as_uri()
            for layer, count in LAYERS.items():
                driver.get(f"{page}#layer={layer}")
                assert driver.run("return document.querySelector('#layers a.current').dataset.layer") == layer
                images = driver.run_async(IMAGES_LOADED)
                assert len(images) == count, images
                assert all(complete and width == 32 for _, complete, width in images), images
                assert driver.run(
                    "return [...document.images]"
                    ".every(i => !i.hasAttribute('src') || (i.complete && i.naturalWidth > 0))"
                )

            driver.get(f"{page}#layer=conv3")
            driver.click("#grid .card")  # opens filter 0: large image, score, settings, examples
            assert driver.run("return document.getElementById('detail').hidden") is False
            assert driver.run("return location.hash") == "#layer=conv3&filter=0"
            record = files.read_json(atlas / "conv3" / "manifest.json")["filters"][0]
            score = driver.run("return document.getElementById('detail-score').textContent")
            assert score.startswith("score ") and float(score[6:]) == pytest.approx(record["score"], rel=1e-3, abs=1e-6)
            settings = driver.run("return document.getElementById('detail-settings').textContent")
            assert f"steps{CONFIG.steps}octaves" in settings and "seed0" in settings
            shown = driver.run_async(IMAGES_LOADED)
            examples = [src for src, complete, width in shown if "/examples/" in src and complete and width > 0]
            assert examples == [e["file"] for e in record["examples"]] and len(examples) == 3
            driver.screenshot(tmp_path / "detail.png")
            driver.run("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}))")
            assert driver.run("return location.hash") == "#layer=conv3&filter=1"
            driver.run("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
            assert driver.run("return document.getElementById('detail').hidden") is True
            assert driver.run("return document.title") == "jaxvis atlas: tiny_cnn"  # the hostile label ran nothing
        finally:
            driver.close()

    shot = tmp_path / "grid.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "--virtual-time-budget=5000",
                f"--screenshot={shot}",
                (atlas / "index.html").as_uri() + "#layer=conv1",
            ],
            capture_output=True,
            timeout=120,
        )
    for path, height in (
        (shot, 900),
        (tmp_path / "detail.png", None),
    ):  # WebDriver's 900 is the window's, not the page's
        pixels = files.load_image(path)
        assert pixels.shape[1:] == (1280, 3) and pixels.shape[0] == (height or pixels.shape[0]) > 600, (
            path,
            pixels.shape,
        )
        assert pixels.std() > 0.05, path


def test_page_command_and_errors(atlas, tmp_path, capsys):
    (atlas / "index.html").unlink()
    assert main(["page", str(atlas)]) == 0
    assert (atlas / "index.html").is_file() and "index.html" in capsys.readouterr().out
    assert main(["page", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no atlas in") and len(err.splitlines()) == 1
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(JaxvisError, match="cannot read"):
        write_atlas_page(tmp_path)

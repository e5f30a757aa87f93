"""Results display themselves: the repr methods return valid PNG / HTML, show() draws with matplotlib."""

import base64
import json
import re

import cv2
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from jaxvis.optvis.render import RenderResult
from jaxvis.output import display, files
from jaxvis.recipes.dream import DreamResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_SIGNATURE)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


@pytest.fixture
def render_result():
    rng = np.random.default_rng(0)
    return RenderResult(
        rng.uniform(size=(3, 20, 20, 3)).astype(np.float32), np.asarray([1.0, 2.0, 3.0]), np.asarray([4, 7, 9])
    )


def test_render_result_repr_png_is_a_grid_of_its_images(render_result):
    image = _decode(render_result._repr_png_())
    assert image.ndim == 3 and image.shape[0] > 2 * 20 and image.shape[1] > 2 * 20
    single = _decode(display.png(render_result.images[0]))
    np.testing.assert_array_equal(single[:, :, ::-1], files.to_uint8(render_result.images[0]))


def test_repr_html_holds_the_png_and_a_caption(render_result):
    text = render_result._repr_html_()
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert match and text.startswith("<figure") and "<figcaption>3 renders" in text
    assert base64.b64decode(match.group(1)) == render_result._repr_png_()


def test_dream_feature_maps_and_atlas_show_themselves(tmp_path):
    dream = DreamResult(np.full((2, 10, 12, 3), 0.5, np.float32), (np.zeros((3, 2)),), ((10, 12),))
    assert _decode(dream._repr_png_()).shape == (10, 12, 3)
    maps = display.FeatureMaps({"conv1": np.random.default_rng(1).normal(size=(8, 8, 16)), "logits": np.zeros(10)})
    assert _decode(maps._repr_png_()).shape[0] > 8 and "<img" in maps._repr_html_()
    files.save_image(tmp_path / "conv2_grid.png", np.zeros((30, 40, 3), np.float32))
    (tmp_path / "manifest.json").write_text(json.dumps({"model": "m", "layers": [
        {"layer": "conv2", "grid": "conv2_grid.png", "preset": "fastai", "filters": [{}, {}]}]}))
    atlas = display.Atlas(str(tmp_path))
    assert _decode(atlas._repr_png_()).shape == (30, 40, 3)
    assert "conv2 (2 filters, preset fastai)" in atlas._repr_html_()


def test_show_draws_the_picture_on_matplotlib_axes(render_result):
    import matplotlib.pyplot as plt

    ax = render_result.show(title="three")
    shown = ax.get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), display.picture(render_result))
    assert ax.get_title() == "three"
    plt.close("all")

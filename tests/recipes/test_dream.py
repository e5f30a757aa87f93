"""DeepDream on the real MobileNetV2: the loss rises, shapes and dtypes survive, tiling matches.

Tiled vs untiled: a tile's gradient is computed inside a window with `tile_overlap` pixels of
context; activations near the window's edge see zero padding instead of the photo, so the stitched
gradient is not the untiled one exactly (features.10's receptive field is wider than any affordable
overlap). Measured on a 352x224 photo, one step, overlap 96: relative L2 difference ~5e-4 (2e-3
without rolls). Over several steps the runs drift apart for a reason unrelated to tiling: the dream
is chaotic in float32 -- a 1e-6 perturbation of the untiled input alone gives 0.5%, 4%, 14% relative
L2 difference after 1, 2, 3 steps (ReLU6 units flip on/off). So the check is one step, tolerance 5e-3.
"""

import cv2
import numpy as np
import pytest
from mobilenet_cache import mobilenet

from jaxvis.errors import JaxvisError
from jaxvis.recipes.dream import DreamConfig, dream, octave_sizes, tile_plan


@pytest.fixture(scope="module")
def spec(mobilenet_checkpoint):
    return mobilenet(mobilenet_checkpoint)


def test_large_photo_goes_through_tiles_and_the_loss_rises_in_every_octave(spec, sample_photos):
    photo = cv2.resize(np.rint(sample_photos[1] * 255).astype(np.uint8), (600, 400), interpolation=cv2.INTER_AREA)
    config = DreamConfig(steps=4, step_size=0.02, octave_power_factors=(-1, 0), tile_size=256, tile_overlap=64)
    sizes = octave_sizes(400, 600, config)
    assert all(len(tile_plan(h, w, config)[1]) > 1 for h, w in sizes)  # every octave is split into tiles
    result = dream(spec, photo, ["features.10"], config, progress=False)
    assert result.image.shape == photo.shape and result.image.dtype == np.uint8
    assert result.sizes == sizes and len(result.losses) == 2
    for losses in result.losses:
        assert losses.shape == (4, 1)
        assert losses[-1, 0] > losses[0, 0] + 0.01
    change = np.abs(result.image.astype(int) - photo).mean()
    assert 1 < change < 40  # dreamed, not destroyed


def test_tiled_and_untiled_agree(spec, sample_photos):
    photos = np.stack(
        [cv2.resize(p, (224, 352), interpolation=cv2.INTER_AREA) for p in sample_photos]
    )  # float32 [2,352,224,3]
    common = dict(steps=1, step_size=0.02, octave_power_factors=(0,))
    tiled_config = DreamConfig(**common, tile_size=128, tile_overlap=96)
    assert len(tile_plan(352, 224, tiled_config)[0]) == 3
    untiled = dream(spec, photos, ["features.10"], DreamConfig(**common, tile_size=0), progress=False)
    tiled = dream(spec, photos, ["features.10"], tiled_config, progress=False)
    for result in (untiled, tiled):
        assert result.image.shape == photos.shape and result.image.dtype == np.float32
    np.testing.assert_allclose(tiled.losses[0], untiled.losses[0], rtol=1e-4, atol=1e-6)  # core losses add up
    for b in range(2):
        want, got = untiled.image[b] - photos[b], tiled.image[b] - photos[b]
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 5e-3


def test_bad_input_is_a_clear_error(spec):
    photo = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(JaxvisError, match="layer of model mobilenet_v2"):
        dream(spec, photo, ["features.99"], progress=False)
    with pytest.raises(JaxvisError, match=r"\[0, 1\]"):
        dream(spec, np.full((64, 64, 3), 2.0, np.float32), ["features.10"], progress=False)
    with pytest.raises(JaxvisError, match="steps"):
        DreamConfig(steps=0).validate()
    with pytest.raises(JaxvisError, match="multiples of align"):
        DreamConfig(tile_size=100).validate()

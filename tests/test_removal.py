"""An empty target removes the object: plain inpainting that yields background, on every backend (ShapesWorld's
default pipeline hands it to the shipped ``removal`` model; a model that cannot says so in a warning)."""
import logging

import numpy as np
import pytest

from romlib.pipeline import ROMPipeline
from romlib.shapes.demo import select_cases
from romlib.shapes.oracle import describe_region, object_region, removed, rim_left

CASES = select_cases("both", 3, 0)


def _removed(pipe, case) -> bool:
    """The oracle's verdict on the best of two samples of ``case`` with an empty target."""
    r = pipe.edit(case.scene.pil(), case.ref, "", samples=2, progress=False)
    a = np.asarray(r.best.convert("RGB"))
    seen = describe_region(a, object_region(r.edit_mask.numpy() > 0.5, case.original.mask, case.others))
    return removed(seen, rim_left(a, case.original, case.scene.background))


@pytest.fixture(scope="module")
def shapes():
    return ROMPipeline.from_pretrained("shapes", device="cpu")


def test_an_empty_target_on_shapesworld_uses_the_removal_model_and_removes(shapes, caplog):
    with caplog.at_level(logging.INFO, logger="romlib.pipeline"):
        verdicts = [_removed(shapes, c) for c in CASES]
    assert verdicts == [True] * len(CASES)
    assert "'removal' model inpaints the hole" in caplog.text and "never taught" not in caplog.text
    remover = shapes.removal_pipeline()
    assert remover is not shapes and remover.backend.extras["variant"] == "removal"
    assert remover.removal_pipeline() is remover  # it removes itself


def test_the_default_model_named_on_purpose_keeps_it_with_a_warning(caplog):
    """A variant named is that model for every target: the default model, never taught removal, redraws a shape
    (the oracle sees the hole filled with an object) and a warning says it cannot remove."""
    default = ROMPipeline.from_pretrained("shapes", device="cpu", variant="default")
    with caplog.at_level(logging.WARNING, logger="romlib.pipeline"):
        verdicts = [_removed(default, c) for c in CASES]
    assert sum(verdicts) <= 1, verdicts
    assert "never taught to fill a hole with background" in caplog.text


def test_a_target_with_words_never_changes_model(shapes):
    r = shapes.edit(CASES[0].scene.pil(), CASES[0].ref, CASES[0].target, samples=1, progress=False)
    assert r.settings["target"] == CASES[0].target and shapes.backend.extras["variant"] == "default"


@pytest.mark.parametrize("backend", ["tiny", "tiny-sd"])
def test_random_models_say_they_cannot_remove(backend, caplog):
    if backend == "tiny-sd":
        pytest.importorskip("diffusers")
    pipe = ROMPipeline.from_pretrained(backend, device="cpu")
    image = CASES[0].scene.pil().resize((64, 64))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 16:40] = 255
    with caplog.at_level(logging.WARNING, logger="romlib.pipeline"):
        r = pipe.edit(image, "", "", mask=mask, samples=1, progress=False, upsample=False)
    assert r.settings["backend"] == backend and "never taught to fill a hole with background" in caplog.text


def test_a_model_that_fills_with_background_keeps_the_edit(caplog):
    """GLIDE and SD (no ``removal`` entry: their empty caption means background) run an empty target themselves,
    without a word; here the tiny backend with that entry taken away stands in for them."""
    pipe = ROMPipeline.from_pretrained("tiny", device="cpu")
    del pipe.backend.extras["removal"]
    assert pipe.removal_pipeline() is pipe
    mask = np.zeros((64, 64), np.uint8)
    mask[16:40, 16:40] = 255
    with caplog.at_level(logging.INFO, logger="romlib.pipeline"):
        pipe.edit(CASES[0].scene.pil().resize((64, 64)), "", "", mask=mask, samples=1, progress=False, upsample=False)
    assert "removal" not in caplog.text and "never taught" not in caplog.text

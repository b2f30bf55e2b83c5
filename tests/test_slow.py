"""Real-weight checks, opt-in: RUN_SLOW=1 python -m pytest -m slow (downloads about 5.5 GB; a GPU helps).

On Colab: `!RUN_SLOW=1 python -m pytest -m slow tests/test_slow.py` after installing romlib[test].
"""
import pytest
import torch

pytestmark = pytest.mark.slow
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def pipe():
    from romlib.pipeline import ROMPipeline

    return ROMPipeline.from_pretrained("glide", device=DEVICE)


@pytest.fixture(scope="module")
def cats(pipe):
    from romlib.teach.nb import example

    return example(pipe, 0)[0]


def test_official_glide_weights_load_strictly_and_sample(pipe):
    for m in (pipe.backend.base_model, pipe.backend.upsampler):
        assert sum(p.numel() for p in m.parameters()) in (385_037_638, 398_368_198)


def test_mdetr_finds_the_left_cat(pipe, cats):
    seg = pipe.segment(cats, "the cat on the left")
    x0, y0, x1, y1 = seg.box
    assert seg.score > 0.5 and (x0 + x1) / 2 < cats.size[0] / 2


def test_rom_edit_with_real_models(pipe, cats):
    r = pipe.edit(cats, "the cat on the left", "a golden retriever", samples=4, seed=0)
    assert r.images.shape == (4, 3, 256, 256) and torch.isfinite(r.images).all()
    assert r.scores == sorted(r.scores) and r.full_res[0].size == cats.size

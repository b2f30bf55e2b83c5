"""End-to-end ROM on tiny random models (CPU, B = 2, a few steps)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from romlib.contracts import Backend, Segmentation
from romlib.pipeline import ROMPipeline, _square_region
from romlib.models.tiny import tiny_glide
from romlib.backends import tiny_clip_ranker
from romlib.models.tokenizers import ByteTokenizer


class BoxSegmenter:
    """Segments a fixed rectangle (a quarter of the image) and records its calls."""

    def __init__(self):
        self.calls = []

    def segment(self, image, text, *, threshold=0.5, min_score=None, best_anyway=False):
        self.calls.append(text)
        W, H = image.size
        m = torch.zeros(H, W, dtype=torch.bool)
        m[H // 4:H // 2, W // 3:2 * W // 3] = True
        return Segmentation(mask=m, box=(W // 3, H // 4, 2 * W // 3, H // 2), score=0.9, text=text)


@pytest.fixture(scope="module")
def pipe():
    tok = ByteTokenizer()
    backend = Backend(name="test", segmenter=BoxSegmenter(), base_model=tiny_glide(n_vocab=tok.n_vocab),
                      upsampler=tiny_glide("upsample-inpaint", n_vocab=tok.n_vocab, seed=1), tokenizer=tok,
                      ranker=tiny_clip_ranker(), base_steps="4", upsample_steps="2")
    return ROMPipeline(backend, device="cpu")


@pytest.fixture(scope="module")
def image():
    rng = np.random.RandomState(0)
    return Image.fromarray((rng.rand(90, 120, 3) * 255).astype(np.uint8))


def _changed(result, image):
    a, o = np.asarray(result.full_res[0]).astype(int), np.asarray(image).astype(int)
    return np.abs(a - o).sum(-1) > 0


@pytest.mark.parametrize("guidance,rank", [("ccf", "local"), ("cf", "masked"), ("ccf", "none")])
def test_edit_end_to_end(pipe, image, guidance, rank, tmp_path):
    r = pipe.edit(image, "the red car", "a blue truck", guidance=guidance, rank=rank, samples=2, progress=False)
    assert r.images.shape == (2, 3, 256, 256) and r.samples.shape == (2, 3, 64, 64)
    assert len(r.full_res) == 2 and r.full_res[0].size == image.size
    assert sorted(r.order) == [0, 1]
    if rank == "none":
        assert r.order == [0, 1]
    else:
        assert r.scores == sorted(r.scores)  # ranked best (lowest distance) first
    # pixels outside the dilated mask are exactly the input's
    keep = torch.nn.functional.interpolate(r.keep_mask_base[None, None], size=(90, 120), mode="nearest")[0, 0].numpy()
    changed = _changed(r, image)
    assert changed.any() and not changed[keep == 1].any()
    assert r.settings["scale"] == (15.0 if guidance == "ccf" else 5.0)
    written = r.save(tmp_path)
    payload = json.loads((tmp_path / "result.json").read_text())
    assert payload["settings"]["guidance"] == guidance and payload["settings"]["rank"] == rank
    assert payload["order"] == r.order and len(written["frames"]) == 2 and len(written["full_res"]) == 2
    assert Image.open(written["full_res"][0]).size == image.size
    assert Image.open(tmp_path / "mask.png").size == (256, 256)


def test_same_seed_same_result_other_seed_differs(pipe, image):
    kw = dict(samples=2, progress=False, upsample=False)
    a = pipe.edit(image, "the red car", "a blue truck", seed=3, **kw)
    b = pipe.edit(image, "the red car", "a blue truck", seed=3, **kw)
    c = pipe.edit(image, "the red car", "a blue truck", seed=4, **kw)
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.images.shape == (2, 3, 64, 64)  # no upsampler: results stay at 64 px


def test_micro_batching_keeps_each_sample(pipe, image):
    """Sample i depends only on the seed and i: drawn alone in a micro-batch of 1, sample 0 is
    exactly the single sample of a one-sample run."""
    kw = dict(progress=False, upsample=False, seed=1, rank="none")
    parts = pipe.edit(image, "the red car", "a dog", samples=3, batch_size=1, **kw)
    alone = pipe.edit(image, "the red car", "a dog", samples=1, **kw)
    assert torch.equal(parts.samples[:1], alone.samples)
    assert not torch.equal(parts.samples[0], parts.samples[1])


def test_user_mask_replaces_segmentation(pipe, image):
    seg = pipe.backend.segmenter
    n = len(seg.calls)
    mask = np.zeros((45, 60), np.uint8)  # another size: resized to the image
    mask[5:20, 5:20] = 255
    r = pipe.edit(image, "", "a cat", mask=Image.fromarray(mask), samples=1, progress=False, upsample=False)
    assert len(seg.calls) == n
    assert r.box == (10.0, 10.0, 40.0, 40.0) and r.settings["user_mask"]
    assert r.settings["segmenter"] is None and r.settings["threshold"] is None  # no segmenter ran: none recorded
    changed = _changed(r, image)
    assert changed[10:40, 10:40].any() and not changed[50:, :].any() and not changed[:, 60:].any()


def test_default_scale_comes_from_the_backend(pipe, image, monkeypatch):
    from romlib.guidance.methods import METHODS

    r = pipe.edit(image, "the red car", "a blue truck", samples=1, progress=False, upsample=False)
    assert r.settings["scale"] == METHODS["ccf"].default_scale == 15.0  # the paper's
    monkeypatch.setattr(pipe.backend, "default_scales", {"ccf": 3.0})
    r = pipe.edit(image, "the red car", "a blue truck", samples=1, progress=False, upsample=False)
    assert r.settings["scale"] == 3.0
    r = pipe.edit(image, "the red car", "a blue truck", samples=1, progress=False, upsample=False, scale=7)
    assert r.settings["scale"] == 7.0 and METHODS["cf"].scale(pipe.backend) == METHODS["cf"].default_scale == 5.0


def test_empty_target_is_inpainting_with_the_masked_image(pipe, image):
    r = pipe.edit(image, "the red car", "", samples=1, progress=False, upsample=False)
    assert r.settings["target"] == "" and r.images.shape[0] == 1


def test_crop_frame_edits_a_square_around_the_object(pipe, image):
    r = pipe.edit(image, "the red car", "a blue truck", frame="crop", samples=1, progress=False, upsample=False)
    x0, y0, x1, y1 = r.settings["region"]
    assert x1 - x0 == y1 - y0 and 0 <= x0 and x1 <= 120 and y1 <= 90
    changed = _changed(r, image)
    assert not changed[:y0].any() and not changed[:, :x0].any() and not changed[:, x1:].any()
    assert _square_region((0, 0, 10, 10), 100, 50) == (0, 0, 50, 50)
    assert _square_region((90, 40, 100, 50), 100, 50, min_side=20) == (80, 30, 100, 50)


@pytest.mark.parametrize("kw,match", [
    (dict(scale=0), "scale"), (dict(scale=-1), "scale"), (dict(dilation=2), "odd integer"),
    (dict(samples=0), "samples"), (dict(rank="global"), "rank"), (dict(guidance="cfg"), "guidance"),
    (dict(frame="zoom"), "frame"), (dict(guidance="blended"), "baseline models"),
])
def test_out_of_range_knobs_are_rejected_with_the_accepted_range(pipe, image, kw, match):
    with pytest.raises(ValueError, match=match):
        pipe.edit(image, "the red car", "a blue truck", progress=False, **kw)


def test_bad_images_and_masks(pipe, image, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        pipe.edit(tmp_path / "missing.jpg", "a", "b")
    with pytest.raises(ValueError, match="nothing to edit"):
        pipe.edit(image, "a", "b", mask=np.zeros((90, 120)))
    with pytest.raises(ValueError, match="ref is empty"):
        pipe.edit(image, "  ", "b")
    with pytest.raises(ValueError, match="at least 32"):
        pipe.edit(Image.new("RGB", (20, 20)), "a", "b")


def test_trace_records_every_step_and_the_guidance_branches(pipe, image):
    steps = pipe.trace(image, "the red car", "a blue truck", guidance="ccf", scale=15.0)
    assert [s["index"] for s in steps] == [3, 2, 1, 0]  # respaced steps
    assert [s["t"] for s in steps] == [999, 666, 333, 0]  # the model's timesteps of 1000
    s = steps[1]
    assert s["x_t"].shape == s["eps"].shape == s["pred_xstart"].shape == (3, 64, 64)
    assert torch.allclose(s["eps"], s["eps_base"] + 15 * (s["eps_cond"] - s["eps_base"]), atol=1e-4)
    with pytest.raises(ValueError, match="classifier-free"):
        pipe.trace(image, "the red car", "a cat", guidance="blended")


def test_rerank_reorders_the_same_samples(pipe, image):
    local = pipe.edit(image, "the red car", "a blue truck", samples=3, progress=False, upsample=False, rank="local")
    masked = pipe.rerank(local, "masked")
    assert masked.settings["rank"] == "masked" and sorted(masked.order) == [0, 1, 2]
    by_sample = {i: local.images[r] for r, i in enumerate(local.order)}
    for r, i in enumerate(masked.order):
        assert torch.equal(masked.images[r], by_sample[i])
    assert masked.scores == sorted(masked.scores)


@pytest.fixture(scope="module")
def tiny_pipe():
    return ROMPipeline.from_pretrained("tiny", device="cpu", baselines=True)


@pytest.mark.parametrize("guidance,rank,size", [("clip", "local", 64), ("blended", "masked", 64)])
def test_baselines_run_end_to_end(tiny_pipe, image, guidance, rank, size):
    r = tiny_pipe.edit(image, "the red car", "a blue truck", guidance=guidance, samples=2, progress=False,
                       best_anyway=True, upsample=False)
    assert r.settings["rank"] == rank and r.images.shape == (2, 3, size, size)
    assert r.settings.get("scale") == (2.0 if guidance == "clip" else None)  # Blended has no scale
    keep = torch.nn.functional.interpolate(r.keep_mask_base[None, None], size=(90, 120), mode="nearest")[0, 0].numpy()
    assert not _changed(r, image)[keep == 1].any()


def test_four_way_comparison_is_one_call(tiny_pipe, image):
    results, fig = tiny_pipe.compare(image, "the red car", "a blue truck", samples=2, upsample=False, best_anyway=True,
                                     progress=False)
    assert list(results) == ["cf", "ccf", "clip", "blended"]
    masks = {g: r.keep_mask_base for g, r in results.items()}
    assert all(torch.equal(masks["cf"], m) for m in masks.values())  # the same mask for every rule
    assert len(fig.axes) == 4 * 3


def test_full_resolution_edits_are_made_only_when_read(pipe, image, monkeypatch):
    from romlib.result import FullRes

    made = []
    real = FullRes.compute
    monkeypatch.setattr(FullRes, "compute", lambda self, i: made.append(i) or real(self, i))
    r = pipe.edit(image, "the red car", "a blue truck", samples=3, progress=False, upsample=False)
    assert made == [] and len(r.full_res) == 3
    assert r.best.size == image.size and r.full_res[0] is r.best and made == [0]  # made once, kept
    again = pipe.rerank(r, "masked")
    assert made == [0] and len(again.full_res) == 3  # re-ranking makes none


def test_pipeline_defaults_apply_where_an_edit_names_nothing():
    """ROMPipeline.with_defaults (the notebooks' real-path pipeline takes an ambiguous reference's best object):
    a default fills a setting the edit leaves unset, a setting the edit names wins, the models are shared,
    and an unknown name is refused."""
    import romlib.teach.nb as nb
    from romlib.pipeline import ROMPipeline

    pipe = ROMPipeline.from_pretrained("tiny", device="cpu")
    nbpipe = pipe.with_defaults(best_anyway=True, samples=2)
    assert nbpipe.backend is pipe.backend and pipe.defaults == {}
    cfg, _ = nbpipe.resolve()
    assert cfg.best_anyway is True and cfg.samples == 2
    cfg, _ = nbpipe.resolve(best_anyway=False, samples=3)
    assert cfg.best_anyway is False and cfg.samples == 3
    assert pipe.resolve()[0].best_anyway is False
    with pytest.raises(TypeError, match="unknown edit setting"):
        pipe.with_defaults(best_anyways=True)
    assert nb.pipeline("shapes").defaults == {}

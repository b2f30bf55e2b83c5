"""The preview budget (EditConfig.preset, upsample_top), EditResult.work and the explorer that recomputes only what
changed — on the tiny backend."""
import json

import pytest
import torch

import romlib as rl
from romlib.config import PRESETS, EditConfig
from romlib.models.glide import official_config
from romlib.perf.work import count_passes, estimate_work
from romlib.teach.explorer import Explorer, StageCache

KNOBS = dict(steps="3", upsample_steps="2", progress=False)


@pytest.fixture(scope="module")
def pipe():
    return rl.ROMPipeline.from_pretrained("tiny", device="cpu")


@pytest.fixture(scope="module")
def case(pipe):
    return rl.nb.example(pipe)


def test_work_counts_equal_the_expected_passes(pipe, case):
    r = pipe.edit(*case, samples=2, seed=1, **KNOBS)
    # CCF: 3 steps x 2 branches x 2 samples on the base model; 2 steps x 2 samples on the upsampler
    assert r.work["passes"] == {"base": 12, "upsample": 4}
    expected = estimate_work(pipe.backend.base_model, pipe.backend.upsampler, samples=2, steps=3, upsample_steps=2)
    assert r.work["tflop"] == pytest.approx(expected["tflop"]) and r.work["tflop"] > 0
    assert r.work["gflop_per_pass"]["upsample"] > r.work["gflop_per_pass"]["base"]
    r = pipe.edit(*case, samples=3, upsample=False, sampler="ddim", **KNOBS)
    assert r.work["passes"] == {"base": 18}


def test_preview_preset_fills_only_the_knobs_left_at_their_defaults(pipe, case, tmp_path):
    r = pipe.edit(*case, preset="preview", **KNOBS)
    s = r.settings
    assert (s["preset"], s["samples"], s["sampler"], s["upsample_top"]) == ("preview", 4, "dpmpp-2m", 1)
    assert s["steps"] == "3"  # set explicitly: wins over the preset's 20
    assert r.work["passes"] == {"base": 3 * 2 * 4, "upsample": 2}  # only the best sample is upsampled
    assert r.images.shape[0] == 1 and r.samples.shape[0] == 4 and 0 <= r.order[0] < 4
    r.save(tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["work"]["passes"] == {"base": 24, "upsample": 2}
    assert saved["settings"]["sampler"] == "dpmpp-2m" and saved["settings"]["preset"] == "preview"
    with pytest.raises(ValueError, match="rerank needs every sample's frame"):
        pipe.rerank(r, "masked")


def test_the_preview_does_at_most_a_fifteenth_of_the_papers_work_with_glide():
    base, up = official_config("base-inpaint"), official_config("upsample-inpaint")
    paper = estimate_work(base, up, samples=24, steps=100, upsample_steps=27)
    p = PRESETS["preview"]
    preview = estimate_work(base, up, samples=p["samples"], steps=int(p["steps"]), upsample_steps=27,
                            upsampled=p["upsample_top"])
    assert paper["tflop"] == pytest.approx(1975, rel=0.01)  # issue 21's count: 100 x 2 x 238 + 27 x 1282 GFLOP, x 24
    assert preview["tflop"] <= paper["tflop"] / 15, (preview, paper)


def test_sampler_knobs_are_validated_and_refused_where_a_method_does_not_read_them(pipe, case):
    with pytest.raises(ValueError, match="sampler='euler' is out of range; accepted: 'ancestral', 'ddim', 'dpmpp-2m'"):
        EditConfig(sampler="euler").validate()
    with pytest.raises(ValueError, match="eta=0.5 .*read by sampler='ddim' only"):
        EditConfig(eta=0.5).validate()
    with pytest.raises(ValueError, match="preset='fast' is out of range"):
        EditConfig(preset="fast").validate()
    with pytest.raises(ValueError, match="upsample_top=5 is out of range"):
        EditConfig(samples=4, upsample_top=5).validate()
    assert "sampler" not in rl.METHODS["clip"].honours and "sampler" in rl.METHODS["ccf"].honours
    assert not rl.METHODS["blended"].honours
    # the preset leaves a knob alone where the method does not read it
    cfg = EditConfig(guidance="clip", preset="preview").with_preset(rl.METHODS["clip"].honours)
    assert cfg.sampler == "ancestral" and cfg.samples == 4 and cfg.upsample_top == 1


def test_the_cli_has_the_flags():
    import argparse

    from romlib.config import add_arguments, from_args

    p = argparse.ArgumentParser()
    add_arguments(p, methods=tuple(rl.METHODS))
    cfg = from_args(p.parse_args(["--sampler", "ddim", "--eta", "0.3", "--preset", "preview", "--upsample-top", "2"]))
    assert (cfg.sampler, cfg.eta, cfg.preset, cfg.upsample_top) == ("ddim", 0.3, "preview", 2)
    with pytest.raises(SystemExit):
        p.parse_args(["--sampler", "euler"])


# ----------------------------------------------------------------------------- the explorer
def _calls(pipe):
    return count_passes({"base": pipe.backend.base_model, "upsample": pipe.backend.upsampler})


def test_a_rank_change_samples_nothing_and_reorders_the_same_samples(pipe, case):
    ex = Explorer(pipe, *case, preset="paper", samples=3, upsample=False, **KNOBS)
    first = ex.update()
    with _calls(pipe) as calls:
        masked = ex.update(rank="masked")
        none = ex.update(rank="none")
    assert calls == {"base": 0, "upsample": 0}
    assert set(ex.last["recomputed"]) == {"rank"} and ex.last["seconds"] < 1.0
    assert torch.equal(masked.samples, first.samples) and none.order == [0, 1, 2]
    assert sorted(masked.order) == [0, 1, 2] and torch.equal(masked.images, masked.samples[masked.order])
    with _calls(pipe) as calls:
        again = ex.update(rank="local")  # every stage cached
    assert calls["base"] == 0 and ex.last["recomputed"] == {} and again.order == first.order
    # the result is the one edit() makes
    direct = pipe.edit(*case, samples=3, upsample=False, rank="masked", **KNOBS)
    assert direct.order == masked.order and torch.allclose(direct.images, masked.images)
    assert direct.work == masked.work


def test_a_scale_change_resamples_but_does_not_segment_again(pipe, case, monkeypatch):
    ex = Explorer(pipe, *case, samples=2, upsample=False, **KNOBS)
    ex.update()
    seen = []
    segment = pipe.backend.segmenter.segment
    monkeypatch.setattr(pipe.backend.segmenter, "segment", lambda *a, **k: seen.append(a) or segment(*a, **k))
    with _calls(pipe) as calls:
        r = ex.update(scale=4.0)
    assert seen == [] and calls["base"] == 3 * 2 * 2
    assert "segment" in ex.last["cached"] and "masks" in ex.last["cached"] and "sample" in ex.last["recomputed"]
    assert r.settings["scale"] == 4.0 and r.settings["preset"] == "preview"
    ex.update(dilation=5)
    assert "masks" in ex.last["recomputed"] and "segment" in ex.last["cached"]
    ex.update(threshold=0.4)
    assert "segment" in ex.last["recomputed"] and seen


def test_the_preview_explorer_upsamples_only_the_best_and_says_so(pipe, case):
    ex = Explorer(pipe, *case, **KNOBS)
    r = ex.update()
    picks = {pipe.edit(*case, rank=mode, **KNOBS, preset="preview").settings.get("seed") is not None and mode
             for mode in ("local", "masked")}
    n_up = r.work["passes"]["upsample"] // 2  # 2 upsampler steps per upsampled sample
    assert r.work["passes"]["base"] == 24 and 1 <= n_up <= 2 and len(picks) == 2
    assert "preview budget (4 samples, dpmpp-2m 3 steps, the best 1 of each ranking mode upsampled)" in ex.label()
    assert "preset='paper'" in ex.label()
    with _calls(pipe) as calls:  # the best of local and masked ranking were both upsampled up front
        masked = ex.update(rank="masked")
        ex.update(rank="none")
        local = ex.update(rank="local")
    assert calls == {"base": 0, "upsample": 0} and ex.last["seconds"] < 1.0
    assert "sample" in ex.last["cached"] and masked.images.shape[0] == local.images.shape[0] == n_up


def test_the_cache_is_bounded():
    cache = StageCache(max_entries=3, max_bytes=10_000)
    for i in range(6):
        cache.put(("sample", i), torch.zeros(10))
    assert len(cache) == 3 and ("sample", 0) not in cache and ("sample", 5) in cache
    cache.get(("sample", 3))  # used: stays
    cache.put(("sample", 6), torch.zeros(10))
    assert ("sample", 3) in cache and ("sample", 4) not in cache
    cache.put(("sample", 7), torch.zeros(2495))  # 9980 bytes: the others go to keep under max_bytes
    assert cache.nbytes == 9980 and len(cache) == 1 and ("sample", 7) in cache
    with pytest.raises(ValueError, match="max_entries=0"):
        StageCache(max_entries=0)


def test_a_long_session_keeps_the_explorer_cache_bounded(pipe, case):
    ex = Explorer(pipe, *case, samples=1, upsample=False, cache=StageCache(max_entries=6), **KNOBS)
    for seed in range(5):
        ex.update(seed=seed)
        assert len(ex.cache) <= 6
    ex.update(seed=4, rank="masked")
    assert set(ex.last["recomputed"]) == {"rank"}  # the newest entries survive


def test_upsample_top_without_the_upsampler_is_refused_not_ignored(pipe, case):
    with pytest.raises(ValueError, match=r"upsample_top=1 is not read: upsample=False \(--no-upsample\) skips"):
        pipe.edit(*case, samples=2, upsample=False, upsample_top=1, **KNOBS)


def test_the_explorer_reads_the_segmenter_knob(pipe, case):
    ex = Explorer(pipe, *case, **KNOBS)
    ex.update()
    r = ex.update(segmenter="clipseg")
    assert "segment" in ex.last["recomputed"] and r.settings["segmenter"] == "clipseg"
    assert r.segmentation.extra["segmenter"] == "clipseg"


def test_knobs_set_to_their_default_still_win_over_the_preset(pipe, case):
    r = pipe.edit(*case, preset="preview", samples=24, sampler="ancestral", **KNOBS)
    s = r.settings
    assert (s["samples"], s["sampler"], s["upsample_top"]) == (24, "ancestral", 1)  # upsample_top: the preset's
    r = pipe.edit(*case, {"preset": "preview", "samples": 24}, **KNOBS)
    assert r.settings["samples"] == 24
    cfg, _ = pipe.resolve(preset="preview", steps=None, upsample_top=None)  # None: unset, the preset's
    assert (cfg.steps, cfg.upsample_top) == ("20", 1)
    # on the command line too: a flag typed wins, argparse's defaults do not count as typed
    import argparse

    from romlib.config import add_arguments, from_args

    p = argparse.ArgumentParser()
    add_arguments(p, methods=tuple(rl.METHODS))
    cfg = from_args(p.parse_args(["--preset", "preview", "--samples", "24", "--sampler", "ancestral"]))
    assert cfg.given() == {"preset", "samples", "sampler"}
    out, _ = pipe.resolve(cfg)
    assert (out.samples, out.sampler, out.upsample_top) == (24, "ancestral", 1)
    out, _ = pipe.resolve(from_args(p.parse_args(["--preset", "preview"])))
    assert (out.samples, out.sampler, out.steps) == (4, "dpmpp-2m", "20")


def test_the_explorer_s_own_knobs_recompute_their_stage_and_no_earlier_one(pipe, case):
    """erode → masks; model / case → segment or sample; enlarge (the crop factor) → rank only: no sampling."""
    other = rl.nb.example(pipe, 1)
    ex = Explorer(pipe, *case, samples=2, upsample=False, cases={"a": case, "b": other}, case="a", **KNOBS)
    ex.update()
    with _calls(pipe) as calls:
        ex.update(enlarge=1.8)
    assert calls["base"] == 0 and list(ex.last["recomputed"]) == ["rank"]
    ex.update(erode=3)
    assert list(ex.last["recomputed"]) == ["masks", "sample", "rank"] and "segment" in ex.last["cached"]
    r = ex.update(model="default")  # the empty target on the pipeline's own model
    assert list(ex.last["recomputed"]) == ["sample", "rank"] and r.settings["target"] == ""
    ex.update(case="b", model="edit")
    assert list(ex.last["recomputed"]) == ["segment", "masks", "sample", "rank"]
    assert "erode=3" in ex.label() and "case='b'" in ex.label() and "enlarge=1.8" in ex.label()
    for bad, accepted in (({"model": "big"}, "'edit', 'removal', 'default'"), ({"case": "z"}, "'a', 'b'"),
                          ({"erode": 2}, "odd window"), ({"enlarge": 0.5}, ">= 1.0")):
        with pytest.raises(ValueError, match=accepted):
            ex.update(**bad)

"""The sd / tiny-sd backends through romlib's pipeline, registry, CLI and hub; the CLIPSeg segmenter."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from romlib import hub
from romlib.config import EditConfig
from romlib.contracts import NoObjectFound
from romlib.guidance.methods import METHODS, available

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def pipe():
    from romlib.pipeline import ROMPipeline

    return ROMPipeline.from_pretrained("tiny-sd", device="cpu", progress=False)


@pytest.fixture(scope="module")
def photo():
    img = Image.new("RGB", (96, 72), (40, 110, 190))
    mask = torch.zeros(72, 96)
    mask[24:48, 30:60] = 1
    return img, mask


def test_every_classifier_free_method_runs_on_the_latent_backend(pipe, photo):
    img, mask = photo
    assert available(pipe.backend) == ("ccf", "cf", "ccf-direction", "cf-original")
    out = {}
    for g in available(pipe.backend):
        r = pipe.edit(img, "the ball", "a red ball", guidance=g, samples=2, seed=1, mask=mask, progress=False)
        assert r.images.shape == (2, 3, 64, 64)  # the model's frame (8x8 latents x 8)
        assert r.full_res[0].size == img.size  # pasted back at the photo's resolution
        assert r.settings["backend"] == "tiny-sd" and r.settings["scale"] == pipe.backend.default_scales[g]
        out[g] = r.images
        # outside the (dilated) mask, one latent cell away from it, the full-resolution result is the input's pixels
        full, inp = (torch.from_numpy(np.asarray(x)).float() for x in (r.full_res[0], img))
        edit = 1 - r.keep_mask_base[None, None]
        near = torch.nn.functional.max_pool2d(edit, 3, stride=1, padding=1)  # the edit region grown by one cell
        far = torch.nn.functional.interpolate(near, size=(72, 96))[0, 0] == 0
        assert far.float().mean() > 0.2
        assert (full[far] == inp[far]).all() and (full[~far] != inp[~far]).any()
    assert not torch.equal(out["cf"], out["ccf"])  # the two rules differ on the same seeds and mask


@pytest.mark.parametrize("g", ["clip", "blended"])
def test_the_registry_refuses_pixel_only_methods_on_a_latent_backend(pipe, photo, g):
    img, mask = photo
    assert not METHODS[g].available(pipe.backend)
    with pytest.raises(ValueError, match="pixel backends only.*ccf"):
        pipe.edit(img, "the ball", "a red ball", guidance=g, samples=1, mask=mask)


def test_steps_choose_the_scheduler_and_bad_ones_are_named(pipe, photo):
    img, mask = photo
    r = pipe.edit(img, "the ball", "a ball", guidance="cf", samples=1, steps="ddim3", mask=mask, progress=False)
    assert r.settings["steps"] == "ddim3"
    with pytest.raises(ValueError, match="fast27.*DPM-Solver"):
        pipe.edit(img, "the ball", "a ball", guidance="cf", samples=1, steps="fast27", mask=mask)


def test_the_sampler_knob_picks_the_latent_scheduler(pipe, photo):
    img, mask = photo
    r = pipe.edit(img, "the ball", "a ball", guidance="cf", samples=1, steps="3", sampler="ddim", mask=mask,
                  progress=False)
    assert r.settings["steps"] == "ddim3"
    r = pipe.edit(img, "the ball", "a ball", guidance="cf", samples=1, steps="ddim3", sampler="dpmpp-2m", mask=mask,
                  progress=False)
    assert r.settings["steps"] == "3"
    with pytest.raises(ValueError, match="eta=0.5 is not read on the 'tiny-sd' backend"):
        pipe.edit(img, "the ball", "a ball", guidance="cf", samples=1, steps="3", sampler="ddim", eta=0.5, mask=mask)


def test_segmenter_knob_is_validated_and_switches_segmenters(pipe, photo):
    img, _ = photo
    with pytest.raises(ValueError, match="segmenter='sam'.*'mdetr', 'clipseg'"):
        EditConfig(segmenter="sam").validate()
    r = pipe.edit(img, "the ball", "a red ball", samples=1, segmenter="clipseg", best_anyway=True, progress=False)
    assert r.settings["segmenter"] == "clipseg" and r.segmentation.extra["segmenter"] == "clipseg"
    r = pipe.edit(img, "the ball", "a red ball", samples=1, best_anyway=True, progress=False)
    assert r.settings["segmenter"] == "mdetr"
    from romlib.pipeline import ROMPipeline

    shapes = ROMPipeline.from_pretrained("shapes", device="cpu")
    with pytest.raises(ValueError, match="segmenter='clipseg' is not available on the 'shapes' backend; it has: shapes"):
        shapes.segment(img, "the ball", segmenter="clipseg")


def test_glide_only_tools_are_refused_on_a_latent_backend(pipe, photo):
    img, mask = photo
    with pytest.raises(ValueError, match="trace follows GLIDE's sampler.*'tiny-sd' backend is a latent"):
        pipe.trace(img, "the ball", "a red ball", mask=mask)
    from romlib.pipeline import ROMPipeline

    with pytest.raises(ValueError, match="compile='auto' applies to GLIDE-family UNets"):
        ROMPipeline.from_pretrained("tiny-sd", device="cpu", compile="auto")
    from romlib import backends

    with pytest.raises(ValueError, match="baselines.*GLIDE-family backends only"):
        backends.load("tiny-sd", baselines=True)


# ---------------------------------------------------------------------------------------------- CLIPSeg
class _FixedLogits:
    """CLIPSeg's wrapper with chosen logits (a blob in the upper-left quarter), to check the geometry."""

    def __new__(cls, logits):
        from romlib.clipseg import ClipSegSegmenter

        seg = ClipSegSegmenter.__new__(ClipSegSegmenter)
        seg.logits = lambda image, text: logits
        return seg


def test_clipseg_contract_mask_box_score_threshold():
    logits = torch.full((32, 32), -6.0)
    logits[4:12, 2:14] = 3.0  # p = 0.95 in a box of the 32x32 map
    seg = _FixedLogits(logits).segment(Image.new("RGB", (64, 48)), "the thing", threshold=0.5)
    assert seg.mask.shape == (48, 64) and seg.mask.dtype == torch.bool
    assert abs(seg.score - torch.sigmoid(torch.tensor(3.0)).item()) < 1e-3
    x0, y0, x1, y1 = seg.box
    assert 3 <= x0 <= 5 and 27 <= x1 <= 29 and 5 <= y0 <= 7 and 17 <= y1 <= 19  # (2..14, 4..12) x (2, 1.5)
    assert seg.mask_logits is logits
    with pytest.raises(NoObjectFound, match="no object found for 'the thing'.*peak probability is 0.953"):
        _FixedLogits(logits).segment(Image.new("RGB", (64, 48)), "the thing", threshold=0.96)
    best = _FixedLogits(logits).segment(Image.new("RGB", (64, 48)), "the thing", threshold=0.96, best_anyway=True)
    assert best.mask.any() and best.mask.sum() <= seg.mask.sum() * 1.5
    with pytest.raises(NoObjectFound):
        _FixedLogits(logits).segment(Image.new("RGB", (64, 48)), "the thing", min_score=0.99)
    with pytest.raises(ValueError, match="threshold=1.5"):
        _FixedLogits(logits).segment(Image.new("RGB", (64, 48)), "x", threshold=1.5)


def test_tiny_clipseg_runs_transformers_classes():
    from romlib.clipseg import tiny_clipseg

    seg = tiny_clipseg()
    logits = seg.logits(Image.new("RGB", (50, 40), (200, 20, 20)), "a red ball")
    assert logits.shape == (32, 32) and torch.isfinite(logits).all() and logits.std() > 0
    other = seg.logits(Image.new("RGB", (50, 40), (200, 20, 20)), "a blue cube")
    assert not torch.equal(logits, other)  # the text conditions the map


# ---------------------------------------------------------------------------------------------- hub and CLI
def test_sd_files_are_in_the_registry_at_their_official_addresses():
    names = hub.SD_BACKEND + hub.CLIPSEG
    assert len(set(hub.REGISTRY[n].filename for n in names)) == len(names)  # flat, distinct cache names
    unet = hub.REGISTRY["sd15-inpaint/unet/diffusion_pytorch_model.fp16.safetensors"]
    assert unet.url == ("https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-inpainting/resolve/main/unet/"
                        "diffusion_pytorch_model.fp16.safetensors") and unet.approx_mb == 1720
    assert hub.REGISTRY["clipseg/pytorch_model.bin"].url.startswith("https://huggingface.co/CIDAS/clipseg-rd64-refined/")
    assert "/" not in unet.filename


def test_download_sd_offline_lists_every_missing_file_fast_and_exits_2(tmp_path):
    env = {"ROMLIB_CACHE": str(tmp_path / "cache"), "ROMLIB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "romlib.cli", "download", "--sd"], capture_output=True, text=True,
                          env=env, timeout=60)
    took = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    names = hub.SD_BACKEND + hub.CLIPSEG + hub.EXAMPLES
    assert f"{len(names)} file(s) needed" in proc.stderr
    for n in names:
        c = hub.REGISTRY[n]
        assert c.url in proc.stderr and str(tmp_path / "cache" / c.filename) in proc.stderr
    assert took < 10, f"the offline answer took {took:.1f} s"


def test_edit_with_backend_tiny_sd_end_to_end(tmp_path, photo):
    from romlib.cli import main

    img, mask = photo
    img.save(tmp_path / "in.png")
    Image.fromarray((mask.numpy() * 255).astype("uint8")).save(tmp_path / "mask.png")
    rc = main(["edit", str(tmp_path / "in.png"), "--ref", "the ball", "--target", "a red ball", "--backend", "tiny-sd",
               "--mask", str(tmp_path / "mask.png"), "--samples", "2", "--device", "cpu", "--out", str(tmp_path / "out"),
               "--overwrite"])
    assert rc == 0
    assert (tmp_path / "out" / "result.json").is_file()
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert any(n.endswith(".png") for n in saved)


def test_romlib_imports_without_diffusers_and_says_how_to_get_it(tmp_path):
    """``import romlib`` and the other backends need no diffusers; asking for sd names ``pip install romlib[sd]``."""
    code = ("import sys; sys.modules['diffusers'] = None\n"  # an import of diffusers now fails, as when not installed
            "import romlib, romlib.backends, romlib.pipeline, romlib.guidance.methods\n"
            "try:\n    romlib.backends.load('tiny-sd')\nexcept ImportError as e:\n    print('ERR', e)\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1]),
           "ROMLIB_OFFLINE": "1", "ROMLIB_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "pip install romlib[sd]" in out.stdout


# ---------------------------------------------------------------------------------------------- with issue 21's knobs
def test_work_on_a_latent_model_counts_the_unets_batched_branches_and_the_vae(pipe, photo):
    from romlib.perf.work import latent_gflop

    img, mask = photo
    r = pipe.edit(img, "the ball", "a red ball", samples=3, steps="4", batch_size=2, mask=mask, progress=False)
    # one UNet call per step runs both branches for every row: 2 passes per sample and step; the VAE encodes the
    # conditioning image once and decodes every sample
    assert r.work["passes"] == {"base": 4 * 2 * 3, "vae-encode": 1, "vae-decode": 3}
    g = latent_gflop(pipe.backend.base_model)
    assert r.work["gflop_per_pass"] == pytest.approx(g, abs=1e-4) and all(v > 0 for v in g.values())
    assert r.work["tflop"] == pytest.approx((24 * g["base"] + g["vae-encode"] + 3 * g["vae-decode"]) / 1e3, abs=1e-4)
    assert r.work["uncounted"] == []
    from romlib.perf.work import estimate_work

    assert estimate_work(pipe.backend.base_model, None, samples=3, steps=4) == r.work  # the same count before a run


def test_the_recorded_sampler_is_the_scheduler_that_ran(pipe, photo, tmp_path):
    img, mask = photo
    r = pipe.edit(img, "the ball", "a ball", guidance="cf", samples=1, steps="3", mask=mask, progress=False)
    assert (r.settings["sampler"], r.settings["steps"]) == ("dpmpp-2m", "3")  # the default, not 'ancestral'
    r = pipe.edit(img, "the ball", "a ball", guidance="cf", samples=1, steps="ddim3", mask=mask, progress=False)
    assert (r.settings["sampler"], r.settings["steps"]) == ("ddim", "ddim3")
    r = pipe.edit(img, "the ball", "a ball", samples=1, preset="preview", mask=mask, progress=False)
    r.save(tmp_path / "run")
    import json

    s = json.loads((tmp_path / "run" / "result.json").read_text())["settings"]
    assert (s["preset"], s["sampler"], s["steps"], s["samples"]) == ("preview", "dpmpp-2m", "20", 1)
    assert s["segmenter"] is None  # a mask was given: no segmenter ran


def test_upsample_top_is_refused_where_there_is_no_upsampler(pipe, photo):
    img, mask = photo
    with pytest.raises(ValueError, match="upsample_top=1 is not read: the 'tiny-sd' backend has no upsampler"):
        pipe.edit(img, "the ball", "a ball", samples=2, upsample_top=1, mask=mask)
    r = pipe.edit(img, "the ball", "a ball", preset="preview", samples=2, steps="2", mask=mask, progress=False)
    assert len(r.images) == 2  # the preset's upsample_top is the preset's, not the user's: no error


def test_the_explorer_runs_on_a_latent_backend_and_switches_segmenters(pipe, photo, monkeypatch):
    import romlib as rl

    img, _ = photo
    ex = rl.nb.explore(pipe, img, "the ball", "a red ball", steps="2", best_anyway=True)
    assert ex.result.settings["preset"] == "preview" and ex.result.work["passes"]["base"] == 2 * 2 * 4
    calls = []
    monkeypatch.setattr(type(pipe.backend.base_model.unet), "forward",
                        lambda *a, _f=type(pipe.backend.base_model.unet).forward, **k: calls.append(1) or _f(*a, **k))
    r = ex.update(rank="masked")
    assert not calls and set(ex.last["recomputed"]) == {"rank"} and r.settings["rank"] == "masked"
    r = ex.update(segmenter="clipseg")
    assert "segment" in ex.last["recomputed"] and r.settings["segmenter"] == "clipseg"
    assert r.segmentation.extra["segmenter"] == "clipseg"
    r = ex.update(preset="paper", samples=2)
    assert r.settings["preset"] == "paper" and r.work["passes"]["vae-decode"] == 2


def test_an_ancestral_sampler_asked_for_on_a_latent_backend_is_refused(pipe, photo):
    img, mask = photo
    with pytest.raises(ValueError, match="sampler='ancestral' does not run on the 'tiny-sd' backend.*'dpmpp-2m' or 'ddim'"):
        pipe.edit(img, "the ball", "a ball", samples=1, sampler="ancestral", mask=mask)
    r = pipe.edit(img, "the ball", "a ball", samples=1, steps="2", mask=mask, progress=False)  # unset: the default
    assert r.settings["sampler"] == "dpmpp-2m"


def test_the_sd_work_figures_in_performance_md():
    """docs/performance.md's sd budgets: SD 1.5's UNet and VAE counted on the meta device (free)."""
    import types

    from diffusers import AutoencoderKL, UNet2DConditionModel

    from romlib.models.sd import LatentConfig
    from romlib.perf.work import latent_gflop
    from tests.support.rehearsal_sd import FULL_UNET, FULL_VAE

    with torch.device("meta"):
        sd = types.SimpleNamespace(unet=UNet2DConditionModel(**FULL_UNET), vae=AutoencoderKL(**FULL_VAE),
                                   tokenizer=types.SimpleNamespace(model_max_length=77),
                                   cfg=LatentConfig(image_size=64, frame_size=512))
    g = latent_gflop(sd)
    assert (round(g["base"]), round(g["vae-encode"]), round(g["vae-decode"])) == (803, 1117, 2515)
    tflop = lambda samples, steps: (samples * steps * 2 * g["base"] + g["vae-encode"] + samples * g["vae-decode"]) / 1e3  # noqa: E731
    assert (round(tflop(24, 25), 1), round(tflop(4, 20), 1)) == (1025.5, 139.7)
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "performance.md").read_text()
    assert "| 1025.5 (UNet 964.1, VAE 61.5) | 1 |" in doc and "| 139.7 (UNet 128.5, VAE 11.2) | **1/7.3** |" in doc


def test_a_segmenter_asked_for_beside_a_mask_is_refused_not_ignored(pipe, photo):
    img, mask = photo
    with pytest.raises(ValueError, match=r"segmenter='clipseg' is out of range; accepted: None with a mask given"):
        pipe.edit(img, "the ball", "a ball", samples=1, segmenter="clipseg", mask=mask)
    results, _ = pipe.compare(img, "the ball", "a ball", guidances=("cf",), samples=1, steps="2", segmenter="clipseg",
                              best_anyway=True, progress=False)  # compare segments once and passes the segmentation on
    assert results["cf"].settings["segmenter"] == "clipseg"

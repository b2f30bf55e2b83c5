"""The ``sd`` backend's real path rehearsed on stand-in files in the official layouts (random weights), served by a
loopback mirror: romlib.hub fetches them, diffusers' and transformers' ``from_pretrained`` read them, an edit runs.

The tiny-size rehearsal runs in CI; the full-size one (SD 1.5's and CLIPSeg's real sizes: a 1.7 GB UNet, about
3.3 GB of files, minutes on a CPU) is opt-in: ``RUN_SLOW=1 python -m pytest tests/test_sd_rehearsal.py``."""
from __future__ import annotations

import os
import resource
import time

import pytest
import torch

pytest.importorskip("diffusers")

from romlib import hub  # noqa: E402
from tests.support.mirror import MirrorServer  # noqa: E402
from tests.support.rehearsal_sd import build_clipseg_mirror, build_sd_mirror  # noqa: E402


def _rehearse(tmp_path, monkeypatch, full_size: bool, device: str = "cpu", samples: int = 1, steps: str = "2") -> dict:
    t0 = time.perf_counter()
    files = build_sd_mirror(tmp_path / "mirror", full_size=full_size)
    built = time.perf_counter() - t0
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROMLIB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from romlib.pipeline import ROMPipeline

    with MirrorServer(tmp_path / "mirror") as server:
        monkeypatch.setenv("ROMLIB_MIRROR", server.url)
        t0 = time.perf_counter()
        pipe = ROMPipeline.from_pretrained("sd", device=device, progress=False)  # fp16 on a GPU
        loaded = time.perf_counter() - t0
        fetched = {p.lstrip("/") for _, p, _ in server.requests}
    assert {hub.REGISTRY[n].filename for n in files if n not in hub.EXAMPLES} <= fetched  # all through the mirror
    m = pipe.backend.base_model
    assert pipe.backend.family == "latent" and m.unet.config.in_channels == 9
    assert m.cfg.frame_size == (512 if full_size else 64)
    from PIL import Image

    monkeypatch.setenv("ROMLIB_OFFLINE", "1")  # everything is cached now: the edit needs no network
    image = Image.open(files["example/coco-39769"])
    mask = torch.zeros(image.size[1], image.size[0])
    mask[150:350, 80:300] = 1
    t0 = time.perf_counter()
    r = pipe.edit(image, "the cat on the left", "a golden retriever", guidance="ccf", samples=samples, steps=steps,
                  mask=mask, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    edit = time.perf_counter() - t0
    assert r.full_res[0].size == image.size and torch.isfinite(r.images).all()
    seg = pipe.segment(image, "the cat on the left", segmenter="clipseg", best_anyway=True)  # CLIPSeg from its files
    assert seg.mask.shape == (image.size[1], image.size[0])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # GB (Linux: kB)
    report = {"build_s": built, "load_s": loaded, "edit_s": edit, "peak_rss_gb": peak}
    if device == "cuda":
        report["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    print(f"sd rehearsal (full_size={full_size}, {device}, B = {samples}, steps {steps}): "
          + ", ".join(f"{k} {v:.1f}" for k, v in report.items()))
    return report


def test_sd_path_from_a_loopback_mirror_tiny(tmp_path, monkeypatch):
    _rehearse(tmp_path, monkeypatch, full_size=False)


@pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="full-size sd rehearsal: RUN_SLOW=1 (minutes, ~8 GB RAM)")
def test_sd_path_from_a_loopback_mirror_full_size(tmp_path, monkeypatch):
    """On a GPU: fp16, B = 4 at 25 DPM-Solver++ steps (time per edit and peak GPU memory printed with -s);
    on a CPU: B = 1 at 2 steps (about 7 minutes on 2 cores, 7 GB)."""
    if torch.cuda.is_available():
        _rehearse(tmp_path, monkeypatch, full_size=True, device="cuda", samples=4, steps="25")
    else:
        _rehearse(tmp_path, monkeypatch, full_size=True)


def test_clipseg_stand_ins_alone_serve_the_glide_paths_second_segmenter(tmp_path, monkeypatch):
    """``build_clipseg_mirror`` (what tools/rehearse_notebooks.py adds for notebook 02): exactly CLIPSeg's files,
    under their cache names, which romlib.hub fetches and transformers' ``from_pretrained`` reads."""
    from PIL import Image

    from romlib.clipseg import load_clipseg
    files = build_clipseg_mirror(tmp_path / "mirror", full_size=False)
    assert set(files) == set(hub.CLIPSEG)
    assert sorted(p.name for p in (tmp_path / "mirror").iterdir()) == sorted(hub.REGISTRY[n].filename for n in hub.CLIPSEG)
    monkeypatch.setenv("ROMLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROMLIB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with MirrorServer(tmp_path / "mirror") as server:
        monkeypatch.setenv("ROMLIB_MIRROR", server.url)
        seg = load_clipseg(progress=False)
        fetched = {p.lstrip("/") for _, p, _ in server.requests}
    assert fetched == {p.name for p in files.values()}
    assert seg.model.config.vision_config.image_size == 32  # the tiny family, from the served config
    out = seg.segment(Image.new("RGB", (48, 40), (200, 30, 30)), "the red square", best_anyway=True)
    assert out.mask.shape == (40, 48)

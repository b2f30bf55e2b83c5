"""Named backends for :meth:`romlib.pipeline.ROMPipeline.from_pretrained`.

* ``"glide"`` — the paper's models: MDETR EfficientNet-B3 (PhraseCut), GLIDE (filtered)
  base-inpaint and upsample-inpaint, CLIP ViT-B/16; about 5.5 GB downloaded once; fp16 on a GPU.
* ``"shapes"`` — ShapesWorld: small, really trained models shipped inside the package (offline, CPU).
* ``"tiny"`` — tiny random-weight models of the same architectures (tests and CPU benchmarks).
"""
from __future__ import annotations

import logging

import torch

from .contracts import Backend

__all__ = ["load", "NAMES"]

log = logging.getLogger(__name__)
NAMES = ("glide", "shapes", "tiny")


def load(name: str, *, device="cpu", dtype: torch.dtype | None = None, progress: bool = True, baselines: bool = False) -> Backend:
    device = torch.device(device)
    if name == "glide":
        return _glide(device, dtype, progress, baselines)
    if name == "shapes":
        from .shapes import load_backend

        return load_backend(device=device)
    if name == "tiny":
        from .models.tiny import tiny_backend

        return tiny_backend(device=device, baselines=baselines)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")


def _glide(device, dtype, progress, baselines) -> Backend:
    from .models.glide import load_model
    from .rank import load_clip_ranker
    from .segment import load_segmenter
    from .models.tokenizers import GlideTokenizer

    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    log.info("loading MDETR, GLIDE base/upsampler and CLIP (first run downloads about 5.5 GB)")
    ranker = load_clip_ranker(device=device)
    extras = {}
    if baselines:
        from .guidance.baselines import load_baselines

        extras = load_baselines(ranker=ranker, device=device, dtype=dtype, progress=progress)
    return Backend(
        name="glide",
        segmenter=load_segmenter("phrasecut-eb3", device=device, progress=progress),
        base_model=load_model("base-inpaint", device=device, dtype=dtype, progress=progress),
        upsampler=load_model("upsample-inpaint", device=device, dtype=dtype, progress=progress),
        tokenizer=GlideTokenizer.from_pretrained(),
        ranker=ranker,
        extras=extras,
    )


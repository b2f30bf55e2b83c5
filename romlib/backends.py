"""Named backends for :meth:`romlib.pipeline.ROMPipeline.from_pretrained`.

* ``"glide"`` — the paper's models: MDETR EfficientNet-B3 (PhraseCut), GLIDE (filtered)
  base-inpaint and upsample-inpaint, CLIP ViT-B/16; about 5.5 GB downloaded once through
  :mod:`romlib.hub` (every file is checked before any model is built); fp16 on a GPU.
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


def load(name: str, *, device="cpu", dtype: torch.dtype | None = None, progress: bool = True, baselines: bool = False,
         variant: str | None = None) -> Backend:
    """Backend ``name``; ``variant`` picks one of ShapesWorld's shipped models (:data:`romlib.shapes.VARIANTS`)."""
    device = torch.device(device)
    if variant is not None and name != "shapes":
        raise ValueError(f"variant={variant!r} applies to the 'shapes' backend only, not {name!r}")
    if name == "glide":
        return _glide(device, dtype, progress, baselines)
    if name == "shapes":
        from .shapes import load_backend

        return load_backend(device=device, variant=variant or "default")
    if name == "tiny":
        from .models.tiny import tiny_backend

        return tiny_backend(device=device, baselines=baselines)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")


def _glide(device, dtype, progress, baselines) -> Backend:
    """Every file first (one :class:`romlib.hub.CheckpointUnavailable` listing all that are missing,
    before any model is built), then the models, each memory-mapped from the cache."""
    from . import hub

    log.info("checking the glide backend's files (first run downloads about 5.5 GB into %s)", hub.cache_dir())
    hub.ensure(hub.GLIDE_BACKEND + (hub.BASELINES if baselines else ()), progress=progress)

    from .models.glide import load_model
    from .models.tokenizers import GlideTokenizer
    from .rank import load_clip_ranker
    from .segment import load_segmenter

    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    log.info("loading MDETR, GLIDE base/upsampler and CLIP")
    ranker = load_clip_ranker(device=device, progress=progress)
    extras = {}
    if baselines:
        from .guidance.baselines import load_baselines

        extras = load_baselines(ranker=ranker, device=device, dtype=dtype, progress=progress)
    return Backend(
        name="glide",
        segmenter=load_segmenter("phrasecut-eb3", device=device, progress=progress),
        base_model=load_model("base-inpaint", device=device, dtype=dtype, progress=progress),
        upsampler=load_model("upsample-inpaint", device=device, dtype=dtype, progress=progress),
        tokenizer=GlideTokenizer.default(),
        ranker=ranker,
        extras=extras,
    )

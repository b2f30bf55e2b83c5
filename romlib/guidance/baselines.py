"""The paper's baselines as pipeline plug-ins: ``guidance="clip"`` and ``guidance="blended"``.

* :class:`ClipGuidedBaseline` — GLIDE guided by the noised CLIP (:mod:`romlib.guidance.clip`), s = 2;
* :class:`BlendedBaseline` — Blended Diffusion (:mod:`romlib.guidance.blended`): the 256×256 unconditional ADM,
  100 respaced steps with the first 25 skipped, CLIP loss on 8 augmentations + range loss,
  background blended in at every step; B = 3 per batch; ranked with ``rank="masked"``.

All rules get the same input mask from the pipeline (the paper: "All models use the same input
mask given by the output of MDETR"): the 64×64 dilated mask, upsampled to the frame.
"""
from __future__ import annotations

import torch

from ..models import adm
from ..models.noised_clip import load_noised_clip
from ..sampling.diffusion import create_diffusion
from .blended import blended_sample
from .clip import prepare_clip_base

__all__ = ["ClipGuidedBaseline", "BlendedBaseline", "load_clip", "load_blended", "adm_diffusion"]


def adm_diffusion(timestep_respacing: str = "100"):
    """The ADM's diffusion: linear β over 1000 steps, respaced (Blended Diffusion: ``"100"``)."""
    return create_diffusion(1000, "linear", timestep_respacing)


class ClipGuidedBaseline:
    """``guidance="clip"``: the conditional GLIDE model, masked image, mean shifted by s·Σ·∇(CLIP sim)."""

    def __init__(self, noised_clip, use_ref: bool = True):
        self.noised_clip, self.use_ref = noised_clip, use_ref

    def prepare(self, model, tokenizer, *, image, keep_mask, target, ref, scale: float):
        return prepare_clip_base(model, tokenizer, self.noised_clip, image=image, keep_mask=keep_mask, target=target,
                                 ref=ref, scale=scale, use_ref=self.use_ref)


class BlendedBaseline:
    """``guidance="blended"``: Blended Diffusion with the ADM and a CLIP :class:`~romlib.rank.ClipRanker`."""

    def __init__(self, model, clip, *, steps: str = "100", skip_timesteps: int = 25, aug_num: int = 8,
                 clip_lambda: float = 1000.0, range_lambda: float = 50.0, batch_size: int = 3):
        self.model, self.clip = model, clip
        self.diffusion = adm_diffusion(steps)
        self.kw = dict(skip_timesteps=skip_timesteps, aug_num=aug_num, clip_lambda=clip_lambda, range_lambda=range_lambda)
        self.batch_size = batch_size

    @property
    def image_size(self) -> int:
        return self.model.cfg.image_size

    def sample(self, *, image, keep_mask, target, samples=3, seed=0, batch_size=None, progress=False) -> torch.Tensor:
        return blended_sample(self.model, self.diffusion, self.clip, image=image, keep_mask=keep_mask, target=target,
                              samples=samples, seed=seed, batch_size=batch_size or self.batch_size, progress=progress,
                              **self.kw)


def load_clip(spec=None, *, device="cpu", progress: bool = True, **_) -> ClipGuidedBaseline:
    """``guidance="clip"``'s networks: the official noised CLIP (about 630 MB; the loader named by its
    :class:`romlib.specs.MethodSpec`)."""
    return ClipGuidedBaseline(load_noised_clip(device=device, progress=progress))


def load_blended(spec=None, *, ranker, device="cpu", dtype: torch.dtype | None = None, progress: bool = True,
                 **_) -> BlendedBaseline:
    """``guidance="blended"``'s networks: the ADM 256×256 (2.2 GB); ``ranker`` is the CLIP ViT-B/16 shared with
    ranking."""
    return BlendedBaseline(adm.load_model(device=device, dtype=dtype, progress=progress), ranker)

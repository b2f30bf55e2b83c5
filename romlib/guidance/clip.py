"""CLIP-guided GLIDE inpainting, the paper's "G-CLIP" baseline (Fig. 4, 6; Table 1).

As the authors' ``use_clip`` branch of ``image_editor_glide.py``: the base 64×64 model is run
*without* classifier-free guidance — one branch, conditioned on the target prompt, seeing the
masked image — and the mean of every reverse step is shifted by the noised CLIP's gradient
(paper eq. 4, GLIDE §2.3):

    μ̂(x_t) = μ(x_t) + Σ · s · ∇_x [exp(logit_scale) · z_img(x_t, t) · (z(c_target) − z(c_ref))]

with s = 2 (their script). The referring prompt's embedding is subtracted by the authors' copy of
GLIDE's CLIP code whenever it is passed, and their script always passes it; ``use_ref=False``
gives GLIDE's original CLIP guidance (z(c_target) only). The known region is forced through x̂_0
at every step, as for the other rules. Masks: GLIDE's keep mask (1 = keep, 0 = edit).

:func:`prepare_clip_base` returns a :class:`romlib.sampling.inpaint.BaseSetup` (with its ``cond_fn``
set), so :func:`romlib.sampling.inpaint.sample_base` and ``sample_base_progressive`` sample it unchanged.
"""
from __future__ import annotations

from typing import Callable

import torch

from .cfg import _expand, _rows, known_region_fn
from ..sampling.inpaint import BaseSetup, encode_prompts

__all__ = ["ConditionalModel", "prepare_clip_base", "clip_gradient"]


def clip_gradient(noised_clip, prompts: list[str] | str, scale: float,
                  ref_prompts: list[str] | str | None = None) -> Callable:
    """``cond_fn(x_t, t, **model_kwargs) -> s · ∇_x [exp(logit_scale) · Σ_rows z_i(x_t, t) · z_text]`` (eq. 4).

    ``noised_clip``: :class:`romlib.models.noised_clip.NoisedClip`; one prompt (or one per batch row);
    z_text = z(c_target) − z(c_ref) with ``ref_prompts`` (:meth:`~romlib.models.noised_clip.NoisedClip.
    guidance_direction`). ``t`` are the original timesteps, as
    :meth:`~romlib.sampling.diffusion.SpacedDiffusion.condition_mean` passes them; the gradient is
    taken with grad enabled even inside the sampler's ``torch.no_grad``.
    """
    z_text = noised_clip.guidance_direction(prompts, ref_prompts)
    scale = float(scale)

    def cond_fn(x, t, **kwargs):
        with torch.enable_grad():
            x_var = x.detach().float().requires_grad_(True)
            z_i = noised_clip.image_embeddings(x_var, t)
            loss = noised_clip.logit_scale * (z_text * z_i).sum()
            grad = torch.autograd.grad(loss, x_var)[0].detach()
        return grad * scale

    return cond_fn


class ConditionalModel:
    """The plain conditional model as a model function ``(x_t, t) -> [B, 6, H, W]`` (no
    classifier-free guidance): one text embedding and one inpainting input for every row."""

    def __init__(self, model, text_emb: dict, inpaint_image: torch.Tensor, inpaint_mask: torch.Tensor):
        self.model, self.text_emb, self.inpaint_image, self.inpaint_mask = model, text_emb, inpaint_image, inpaint_mask

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **extra) -> torch.Tensor:
        b = x_t.shape[0]
        return self.model(x_t, t, text_emb=_expand(self.text_emb, b), inpaint_image=_rows(self.inpaint_image, b),
                          inpaint_mask=_rows(self.inpaint_mask, b), **extra)


def prepare_clip_base(model, tokenizer, noised_clip, *, image: torch.Tensor, keep_mask: torch.Tensor, target: str,
                      ref: str, scale: float, use_ref: bool = True) -> BaseSetup:
    """The CLIP-guided base run for one 64×64 image.

    ``model``: GLIDE base-inpaint (:class:`romlib.models.glide.GlideUNet`); ``tokenizer``: its GPT-2
    tokenizer; ``noised_clip``: :class:`romlib.models.noised_clip.NoisedClip`. ``image``: [1, 3, 64, 64]
    in [−1, 1]; ``keep_mask``: [1, 1, 64, 64], 1 = keep, 0 = edit. ``scale``: s (the paper's 2 is
    ``METHODS["clip"].default_scale``).
    """
    scale = float(scale)
    size = noised_clip.cfg.image_size
    if tuple(image.shape[-2:]) != (size, size):
        raise ValueError(f"the noised CLIP reads {size}×{size} images, got {tuple(image.shape[-2:])}")
    masked = image * keep_mask
    (cond_emb,) = encode_prompts(model, tokenizer, [target])
    cond_fn = clip_gradient(noised_clip, target, scale, ref if use_ref else None)
    return BaseSetup(
        model_fn=ConditionalModel(model, cond_emb, masked, keep_mask),
        denoised_fn=known_region_fn(image, keep_mask),
        shape=tuple(image.shape[1:]),
        rule="clip",
        scale=scale,
        inpaint_image=masked,
        info={"inpaint_input": "masked", "clip_direction": "target - ref" if use_ref else "target"},
        cond_fn=cond_fn,
    )

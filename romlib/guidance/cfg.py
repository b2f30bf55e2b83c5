"""Classifier-free guidance rules for inpainting: GLIDE's CF and the paper's CCF.

Each rule is a model function with the model's own signature ``(x_t, t) -> [B, 6, H, W]`` (as in
k-diffusion), so any sampler of :mod:`romlib.sampling.diffusion` takes it. Both branches run in one
forward pass (the reference's batching: the target half and the base half concatenated).

The two rules differ only in the base branch and in which image the model sees:

=========  =====================================  ======================================
rule       ε̂(x_t | c)                              inpainting input
=========  =====================================  ======================================
``cf``     ε(x_t|∅) + s·(ε(x_t|c) − ε(x_t|∅))       masked image          (paper eq. 6)
``ccf``    ε(x_t|c_ref) + s·(ε(x_t|c) − ε(x_t|c_ref))  original image     (paper eq. 8)
=========  =====================================  ======================================

(with an empty target, CCF is plain inpainting and uses the masked image, as the authors' code).
The two changes of CCF can also be taken one at a time for the ablations: ``ccf-direction``
(c_ref base, masked image) and ``cf-original`` (∅ base, original image).

Masks here use GLIDE's convention: ``keep_mask`` is 1 where the image is kept, 0 where it is
edited (convert with :func:`romlib.masks.to_keep_mask`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["GuidanceRule", "GuidanceSpec", "RULES", "guided_eps", "GuidedModel", "known_region_fn"]

GuidanceRule = Literal["cf", "ccf", "ccf-direction", "cf-original"]

def guided_eps(eps_cond: torch.Tensor, eps_base: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̂ = ε_base + s · (ε_cond − ε_base).

    CF (eq. 6):  ε_base = ε(x_t | ∅),     ε_cond = ε(x_t | c_target)
    CCF (eq. 8): ε_base = ε(x_t | c_ref), ε_cond = ε(x_t | c_target)
    """
    return eps_base + scale * (eps_cond - eps_base)


@dataclass(frozen=True)
class GuidanceSpec:
    """What a classifier-free rule feeds the two branches."""

    name: str
    base_text: Literal["empty", "ref"]  # the text of the base branch: ∅ or c_ref
    inpaint_input: Literal["masked", "original"]  # the image the model sees

    def base_prompt(self, ref: str) -> str:
        return ref if self.base_text == "ref" else ""

    def uses_original(self, target: str) -> bool:
        """CCF feeds the original image only when there is a target to move towards."""
        return self.inpaint_input == "original" and bool(target.strip())


RULES: dict[str, GuidanceSpec] = {
    "cf": GuidanceSpec("cf", "empty", "masked"),
    "ccf": GuidanceSpec("ccf", "ref", "original"),
    "ccf-direction": GuidanceSpec("ccf-direction", "ref", "masked"),
    "cf-original": GuidanceSpec("cf-original", "empty", "original"),
}


def _expand(text_emb: dict, batch: int) -> dict:
    """A one-row text embedding broadcast to ``batch`` rows (no copy)."""
    return {k: (v.expand(batch, *v.shape[1:]) if v is not None and v.shape[0] == 1 else v) for k, v in text_emb.items()}


class GuidedModel:
    """ε̂ of a guidance rule as a model function ``(x_t, t) -> cat([ε̂, variance])``.

    ``cond`` and ``base`` hold each branch's model inputs: ``text_emb`` (from
    ``model.encode_text``, one row or B rows), ``inpaint_image``, ``inpaint_mask``. The variance
    is the target branch's, as in the reference. The branches of the last call are kept in
    :attr:`last` (``x_t``, ``eps_cond``, ``eps_base``, ``eps``) for the notebooks' timestep scrubber.
    """

    def __init__(self, model, scale: float, cond: dict, base: dict, record: bool = False):
        self.model, self.scale, self.cond, self.base = model, float(scale), cond, base
        self.record = record
        self.last: dict = {}

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **extra) -> torch.Tensor:
        b = x_t.shape[0]
        c, u = _expand(self.cond["text_emb"], b), _expand(self.base["text_emb"], b)
        text_emb = {k: torch.cat([c[k], u[k]]) for k in c}
        kwargs = {k: torch.cat([_rows(self.cond[k], b), _rows(self.base[k], b)]) for k in ("inpaint_image", "inpaint_mask")}
        out = self.model(torch.cat([x_t, x_t]), torch.cat([t, t]), text_emb=text_emb, **kwargs, **extra)
        eps, var = out[:, :3], out[:, 3:]
        eps_cond, eps_base = eps[:b], eps[b:]
        eps_hat = guided_eps(eps_cond, eps_base, self.scale)
        if self.record:
            # copies: a CUDA-graph replay would overwrite the model's output buffers
            self.last = {"x_t": x_t.detach().clone(), "eps_cond": eps_cond.detach().clone(),
                         "eps_base": eps_base.detach().clone(), "eps": eps_hat.detach().clone()}
        return torch.cat([eps_hat, var[:b]], dim=1)


def _rows(x: torch.Tensor, b: int) -> torch.Tensor:
    return x.expand(b, *x.shape[1:]) if x.shape[0] == 1 else x


def known_region_fn(image: torch.Tensor, keep_mask: torch.Tensor):
    """``denoised_fn`` forcing the known pixels of x̂_0 at every step: x̂_0·(1 − m) + image·m
    (m = keep_mask, 1 = keep)."""
    known = image * keep_mask

    def denoised_fn(x0: torch.Tensor) -> torch.Tensor:
        return x0 * (1 - keep_mask) + known

    return denoised_fn

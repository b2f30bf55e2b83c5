"""romlib's sampling loop for a *latent* inpainting model (Stable Diffusion 1.5 inpainting, ``tiny-sd``).

The same guidance rules as on GLIDE — one :func:`~romlib.guidance.cfg.guided_eps` line — over diffusers'
UNet, VAE and schedulers (DDIM, DPM-Solver++). At each step the UNet sees, in each branch,
``cat([z_t, mask, image_latents])`` (mask: 1 = edit, at the latent grid), with

* CF (eq. 6):  the base branch ∅ (an empty prompt),  the *masked* image's latents;
* CCF (eq. 8): the base branch c_ref — diffusers' ``negative_prompt`` —, the *original* image's latents.

So diffusers' negative-prompt branch *is* the paper's base branch: ``StableDiffusionInpaintPipeline`` with
``negative_prompt=ref`` and ``masked_image_latents`` encoded from the original image runs CCF
(``tests/test_sd.py`` holds romlib's loop to that, and ``cf`` to the plain pipeline).

Randomness follows the pipeline's, so a seed means the same thing in both: sample i's generator draws its
initial noise z_T, and the first sample's generator then draws the VAE posterior of the conditioning image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .. import masks as M
from ..guidance.cfg import RULES, guided_eps
from ..models.sd import make_scheduler
from .diffusion import randn, sample_generators

__all__ = ["LatentSetup", "GuidedLatentModel", "prepare_latent", "sample_latent", "latent_loop"]


@dataclass
class LatentSetup:
    """What one guided latent run needs: the model, both branches' text states, the mask and image latents."""

    model: object  # romlib.models.sd.LatentInpainter
    emb_cond: torch.Tensor  # [1, L, D] the target's text states
    emb_base: torch.Tensor  # [1, L, D] ∅ (CF) or c_ref (CCF)
    mask: torch.Tensor  # [1, 1, h, w] edit mask at the latent grid (1 = edit, diffusers' convention)
    image: torch.Tensor  # [3, S, S] in [-1, 1]: the image the model sees (masked for CF, original for CCF)
    scale: float
    rule: str = "ccf"


class GuidedLatentModel:
    """ε̂(z_t, t) of a guidance rule on a 9-channel inpainting UNet, with the model's own signature, so any
    diffusers scheduler takes it. Both branches run in one forward pass, base first (diffusers' order)."""

    def __init__(self, unet, emb_cond, emb_base, mask, image_latents, scale: float):
        self.unet, self.scale = unet, float(scale)
        self.emb_cond, self.emb_base, self.mask, self.image_latents = emb_cond, emb_base, mask, image_latents

    def __call__(self, z_t: torch.Tensor, t) -> torch.Tensor:
        b = z_t.shape[0]
        rows = lambda a: a.expand(b, *a.shape[1:])  # noqa: E731
        inputs = torch.cat([z_t, rows(self.mask), rows(self.image_latents)], dim=1)  # [B, 9, h, w]
        states = torch.cat([rows(self.emb_base), rows(self.emb_cond)])
        eps = self.unet(torch.cat([inputs, inputs]), t, encoder_hidden_states=states, return_dict=False)[0]
        eps_base, eps_cond = eps.chunk(2)
        return guided_eps(eps_cond, eps_base, self.scale)  # ε_base + s·(ε_cond − ε_base), eq. 6 / eq. 8


def prepare_latent(model, *, image: torch.Tensor, keep_mask: torch.Tensor, target: str, ref: str, rule: str,
                   scale: float) -> LatentSetup:
    """The two branches of ``rule`` (cf, ccf, ccf-direction, cf-original) for one frame.

    ``image`` [1, 3, S, S] in [-1, 1] at the model's frame; ``keep_mask`` [1, 1, S, S] (GLIDE's convention,
    1 = keep), converted here to the UNet's edit mask at the latent grid (nearest, as the pipeline)."""
    spec = RULES[rule]
    S = model.cfg.frame_size
    if image.shape[-2:] != (S, S) or keep_mask.shape[-2:] != (S, S):
        raise ValueError(f"image {tuple(image.shape)} and keep_mask {tuple(keep_mask.shape)} must be at the model's "
                         f"frame {S}x{S}")
    edit = (M.to_edit_mask(keep_mask) >= 0.5).float()
    shown = image if spec.uses_original(target) else image * (1 - edit)  # the pipeline's image * (mask < 0.5)
    h = model.cfg.image_size
    mask = torch.nn.functional.interpolate(edit, size=(h, h))  # nearest, as the pipeline
    emb_cond, emb_base = model.encode_text([target]), model.encode_text([spec.base_prompt(ref)])  # one each, as diffusers
    return LatentSetup(model=model, emb_cond=emb_cond, emb_base=emb_base, mask=mask.to(emb_cond), image=shown[0],
                       scale=scale, rule=rule)


def latent_loop(model_fn: Callable, scheduler, z: torch.Tensor, *, callback: Callable | None = None,
                progress: bool = False) -> torch.Tensor:
    """z_T → z_0 with a diffusers scheduler: ``z ← step(ε̂(scale_model_input(z), t), t, z)``, ``z_T`` already
    multiplied by ``init_noise_sigma``. ``callback`` gets ``{"x", "i", "t", "eps"}`` after every step."""
    from romlib.progress import tqdm

    for i, t in enumerate(tqdm(scheduler.timesteps, disable=not progress, leave=False, desc="latent steps")):
        eps = model_fn(scheduler.scale_model_input(z, t), t)
        z = scheduler.step(eps, t, z, return_dict=False)[0]
        if callback is not None:
            callback({"x": z, "i": i, "t": t, "eps": eps})
    return z


@torch.no_grad()
def sample_latent(setup: LatentSetup, steps: str, *, samples: int, seed: int, batch_size: int | None = None,
                  progress: bool = False, output: str = "pixels", callback: Callable | None = None) -> torch.Tensor:
    """``samples`` guided runs of ``setup``: [B, 3, S, S] in [-1, 1] (or the latents for ``output="latents"``).

    Sample i always gets the same z_T (:func:`~romlib.sampling.diffusion.sample_generators`), whatever the
    batch size or the rule; the scheduler (``steps``: ``"25"`` DPM-Solver++, ``"ddim50"`` DDIM) is made
    afresh for every micro-batch (multistep solvers keep state)."""
    model = setup.model
    dev, dtype = setup.emb_cond.device, model.dtype
    gens = sample_generators(seed, samples)
    shape = (model.cfg.latent_channels, model.cfg.image_size, model.cfg.image_size)
    noise = [randn(shape, g, dev, dtype) for g in gens]  # the pipeline draws z_T first ...
    image_latents = model.encode_image(setup.image[None].to(dev), gens[0])  # ... then the VAE posterior
    model_fn = GuidedLatentModel(model.unet, setup.emb_cond, setup.emb_base, setup.mask.to(dtype),
                                 image_latents.to(dtype), setup.scale)
    bs = batch_size or samples
    out = []
    for i in range(0, samples, bs):
        scheduler = make_scheduler(model.scheduler_config, steps, device=dev)
        z = torch.stack(noise[i:i + bs]) * scheduler.init_noise_sigma
        z = latent_loop(model_fn, scheduler, z, callback=callback, progress=progress)
        out.append(z if output == "latents" else model.decode(z))
    return torch.cat(out)

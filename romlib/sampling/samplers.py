"""Samplers of the reverse process on GLIDE's respaced steps, one short function each (k-diffusion's style).

Every sampler has the signature ``sample_x(model, x, diffusion, *, denoised_fn, clip_denoised, model_kwargs,
generator, callback, progress)``: ``model`` is any function ``(x_t, t) -> [B, 2C, ...]`` (ε in the first C
channels, GLIDE's learned-range variance in the other C; a classifier-free rule of
:class:`romlib.guidance.cfg.GuidedModel` has this signature), ``x`` the starting noise x_T, ``diffusion``
a :class:`~romlib.sampling.diffusion.SpacedDiffusion` whose N kept steps are the sampling steps. Each
calls the model once per step (N forward passes), applies ``denoised_fn`` (GLIDE's known-region step,
:func:`romlib.guidance.cfg.known_region_fn`) and the clip to [-1, 1] to x̂_0 the same way
(:meth:`~romlib.sampling.diffusion.GaussianDiffusion.p_mean_variance`), and hands ``callback`` the dict
``{"x": x_t, "i": step, "t": respaced index, "denoised": x̂_0}`` so a notebook animates any sampler alike.

=============  ===============================================================  ===========================
name           step x_t → x_{t−1}                                               reference
=============  ===============================================================  ===========================
``ancestral``  μ̃(x_t, x̂_0) + σ_t z, σ_t² the learned Σ (the paper's sampler)     DDPM; improved DDPM
``ddim``       √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z, σ_t = η·√β̃_t     Song et al. 2021, eq. 12
``dpmpp-2m``   second-order multistep on the data prediction x̂_0 in λ = log α/σ  Lu et al. 2022, Alg. 2
=============  ===============================================================  ===========================

With η = 0 DDIM is deterministic given x_T; with η = 1 its σ_t² is the posterior variance β̃_t and its
mean is the posterior mean μ̃_t (the ancestral step with the variance at its lower end).
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import numpy as np
import torch

from ..specs import SAMPLERS as SAMPLER_SPECS
from .diffusion import GaussianDiffusion, randn

__all__ = ["SamplerName", "SAMPLERS", "SAMPLER_SPECS", "get_sampler", "sample_ancestral", "sample_ddim", "sample_dpmpp_2m",
           "ddim_mean_variance"]

SamplerName = str  # a name of SAMPLERS (romlib.specs.SAMPLERS declares them)


def _steps(diffusion: GaussianDiffusion, progress: bool):
    from romlib.progress import tqdm

    return tqdm(list(range(diffusion.num_timesteps))[::-1], disable=not progress, desc="sampling", leave=False)


def _t(i: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)


def sample_ancestral(model, x, diffusion, *, denoised_fn=None, clip_denoised=True, model_kwargs=None, generator=None,
                     callback: Callable | None = None, progress: bool = False, cond_fn=None) -> torch.Tensor:
    """Ancestral (DDPM) sampling, the paper's: x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t z with GLIDE's learned
    log σ_t² = v log β_t + (1 − v) log β̃_t (Ho et al. 2020 eq. 11; Nichol & Dhariwal 2021 eq. 15), no noise
    at t = 0. ``cond_fn``: classifier (CLIP) guidance on the mean, eq. 4 (this sampler only)."""
    for i in _steps(diffusion, progress):
        with torch.no_grad():
            out = diffusion.p_sample(model, x, _t(i, x), clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                     cond_fn=cond_fn, model_kwargs=model_kwargs, generator=generator)
        if callback is not None:
            callback({"x": x, "i": diffusion.num_timesteps - 1 - i, "t": i, "denoised": out["pred_xstart"]})
        x = out["sample"]
    return x


def ddim_mean_variance(diffusion: GaussianDiffusion, x, t, pred_xstart, eta: float):
    """DDIM's step (Song et al. 2021, eq. 12) as a Gaussian: mean √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε̂ and
    variance σ_t² = η² (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · (1 − ᾱ_t / ᾱ_{t−1}) = η² β̃_t, with ε̂ re-derived from
    x̂_0 (after the known-region step) so the step stays on the line through x_t and x̂_0."""
    eps = diffusion.predict_eps_from_xstart(x, t, pred_xstart)
    a_t, a_prev = diffusion.alphas_cumprod, diffusion.alphas_cumprod_prev  # float64, read out per row below
    variance = eta ** 2 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    coef_eps = np.sqrt(np.clip(1 - a_prev - variance, 0, None))
    row = lambda arr: torch.from_numpy(arr).to(x.device)[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))  # noqa: E731
    return row(np.sqrt(a_prev)) * pred_xstart + row(coef_eps) * eps, row(variance)


def sample_ddim(model, x, diffusion, *, eta: float = 0.0, denoised_fn=None, clip_denoised=True, model_kwargs=None,
                generator=None, callback: Callable | None = None, progress: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z with
    σ_t = η √β̃_t (:func:`ddim_mean_variance`); η = 0 is deterministic given x_T, η = 1 the posterior's σ."""
    if not (isinstance(eta, (int, float)) and 0 <= eta <= 1):
        raise ValueError(f"eta={eta!r} is out of range; accepted: a number in [0, 1]")
    for i in _steps(diffusion, progress):
        t = _t(i, x)
        with torch.no_grad():
            out = diffusion.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                            model_kwargs=model_kwargs)
        mean, variance = ddim_mean_variance(diffusion, x, t, out["pred_xstart"], eta)
        if callback is not None:
            callback({"x": x, "i": diffusion.num_timesteps - 1 - i, "t": i, "denoised": out["pred_xstart"]})
        x = mean + variance.sqrt() * randn(x.shape, generator, x.device, x.dtype) if eta > 0 and i > 0 else mean
    return x


def sample_dpmpp_2m(model, x, diffusion, *, denoised_fn=None, clip_denoised=True, model_kwargs=None, generator=None,
                    callback: Callable | None = None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) on the data prediction D = x̂_0, in λ = log(α/σ) with
    α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), h = λ_{t−1} − λ_t, r = h_prev / h:

        x_{t−1} = (σ_{t−1}/σ_t) x_t − α_{t−1} (e^{−h} − 1) D̂,   D̂ = (1 + 1/(2r)) D_t − 1/(2r) D_{t+1}

    (D̂ = D_t on the first step and on the step into t = 0, whose λ-step is large on respaced schedules: the
    authors' "lower order final"), and x = D at the last (t = 0). Deterministic given x_T (``generator`` unused)."""
    alpha = torch.from_numpy(diffusion.alphas_cumprod).sqrt().tolist()
    sigma = torch.from_numpy(1 - diffusion.alphas_cumprod).sqrt().tolist()
    lam = [math.log(a) - math.log(s) for a, s in zip(alpha, sigma)]
    old_denoised, h_last = None, None
    for i in _steps(diffusion, progress):
        with torch.no_grad():
            denoised = diffusion.p_mean_variance(model, x, _t(i, x), clip_denoised=clip_denoised,
                                                 denoised_fn=denoised_fn, model_kwargs=model_kwargs)["pred_xstart"]
        if callback is not None:
            callback({"x": x, "i": diffusion.num_timesteps - 1 - i, "t": i, "denoised": denoised})
        if i == 0:
            x = denoised
            break
        h = lam[i - 1] - lam[i]
        d_hat = denoised
        if old_denoised is not None and i > 1:  # first order into the last step (DPM-Solver++'s lower_order_final)
            r = h_last / h
            d_hat = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma[i - 1] / sigma[i]) * x - alpha[i - 1] * math.expm1(-h) * d_hat
        old_denoised, h_last = denoised, h
    return x


#: the samplers by name: each is declared once in :data:`romlib.specs.SAMPLERS` (its function, the extra knobs it
#: reads, its help), which ``EditConfig.sampler``'s choices also read
SAMPLERS: dict[str, Callable] = {name: globals()[spec.function] for name, spec in SAMPLER_SPECS.items()}


def get_sampler(name: str) -> Callable:
    """``SAMPLERS[name]`` with an error that lists the accepted names."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r} is not a sampler; accepted: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]

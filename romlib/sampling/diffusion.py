"""Gaussian diffusion for sampling GLIDE and guided-diffusion models (no training losses).

The names follow guided-diffusion / GLIDE so their users feel at home: ``get_named_beta_schedule``,
``space_timesteps``, ``SpacedDiffusion`` with ``p_mean_variance``, ``condition_mean``, ``p_sample``,
``p_sample_loop`` and the generator ``p_sample_loop_progressive`` that notebook 01 animates.

Notation (DDPM, Ho et al. 2020; improved DDPM, Nichol & Dhariwal 2021):

* forward process  q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 − ᾱ_t) I),  ᾱ_t = Π_{s≤t} (1 − β_s)
* x_0 from ε:      x̂_0 = sqrt(1/ᾱ_t) x_t − sqrt(1/ᾱ_t − 1) ε
* posterior mean:  μ̃_t = coef1 · x̂_0 + coef2 · x_t
* learned range:   log Σ = v · log β_t + (1 − v) · log β̃_t, with the model's v = (out + 1) / 2
* guidance (paper eq. 4 / 7): μ̂ = μ + Σ · ∇ log p(y | x_t)  (:meth:`condition_mean`)

Arrays are kept in float64 and read out as float32, exactly as the reference does, so results
agree with it to rounding.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch

from ..checks import MIN_STEPS, check_seed, space_timesteps

__all__ = [
    "get_named_beta_schedule",
    "betas_for_alpha_bar",
    "space_timesteps",
    "MIN_STEPS",
    "GaussianDiffusion",
    "SpacedDiffusion",
    "create_diffusion",
    "make_generator",
    "sample_generators",
    "randn",
]


def get_named_beta_schedule(name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """β_1..β_T for ``"linear"`` (Ho et al., scaled to T steps) or ``"squaredcos_cap_v2"`` (cosine)."""
    if name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if name == "squaredcos_cap_v2":
        return betas_for_alpha_bar(
            num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        )
    raise ValueError(f"unknown beta schedule {name!r}; expected 'linear' or 'squaredcos_cap_v2'")


def betas_for_alpha_bar(num_diffusion_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous ᾱ(t), t ∈ [0, 1]: β_i = min(1 − ᾱ(t_{i+1}) / ᾱ(t_i), max_beta)."""
    n = num_diffusion_timesteps
    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)])


def _extract(arr: np.ndarray, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """arr[t] as float32, broadcast to ``shape`` (batch first)."""
    out = torch.from_numpy(arr).to(device=t.device)[t].float()
    return out.reshape(-1, *([1] * (len(shape) - 1))).expand(shape)


def make_generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    """A CPU ``torch.Generator`` from a seed (noise is drawn on the CPU, so a seed gives the same
    samples on every device); generators and ``None`` pass through."""
    if seed is None or isinstance(seed, (torch.Generator, list, tuple)):
        return seed
    return torch.Generator().manual_seed(int(seed))


def sample_generators(seed: int, n: int, stream: int = 0) -> list[torch.Generator]:
    """One CPU generator per sample: sample i of a run with ``seed`` always gets the same noise,
    whatever the batch size or the guidance rule (so rules are compared on the same seeds).
    ``stream`` separates the stages (0 = base, 1 = upsampler, ...). ``seed`` is in [0, 2**63)
    (a larger one would repeat a smaller one's noise: refused)."""
    seed = check_seed("seed", seed)
    return [torch.Generator().manual_seed((seed * 1_000_003 + stream * 10_007 + i) % (2**63)) for i in range(n)]


def randn(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise from ``generator`` (a ``torch.Generator``, or a list with one per
    batch row), drawn on the generator's device and moved to ``device``."""
    shape = tuple(shape)
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.stack([randn(shape[1:], g, device, dtype) for g in generator])
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


class GaussianDiffusion:
    """Precomputed schedule arrays (named after the maths) and the reverse-process sampler."""

    def __init__(self, *, betas: np.ndarray):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array in (0, 1]")
        if len(betas) < MIN_STEPS:
            raise ValueError(f"a diffusion needs at least {MIN_STEPS} steps, got {len(betas)}")
        self.betas = betas
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # posterior q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, β̃_t)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # β̃_0 = 0, so its log is clipped to β̃_1
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.log_betas = np.log(betas)

    # -- forward process -------------------------------------------------------------------
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε."""
        if noise is None:
            noise = torch.randn_like(x_start)
        return (_extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def q_posterior_mean_variance(self, x_start, x_t, t):
        mean = (_extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + _extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        return mean, _extract(self.posterior_variance, t, x_t.shape), _extract(self.posterior_log_variance_clipped, t, x_t.shape)

    def predict_xstart_from_eps(self, x_t, t, eps):
        """x̂_0 = sqrt(1/ᾱ_t) x_t − sqrt(1/ᾱ_t − 1) ε."""
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

    def predict_eps_from_xstart(self, x_t, t, x_start):
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - x_start) / _extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.shape)

    # -- reverse process -------------------------------------------------------------------
    def _model(self, model):
        return model

    def p_mean_variance(self, model, x, t, clip_denoised: bool = True, denoised_fn=None, model_kwargs=None) -> dict:
        """Apply the model (ε and the learned-range variance v, 2C channels) and return
        ``mean``, ``variance``, ``log_variance``, ``pred_xstart`` (and ``eps``)."""
        model_kwargs = model_kwargs or {}
        B, C = x.shape[:2]
        if t.shape != (B,):
            raise ValueError(f"t must have shape ({B},), got {tuple(t.shape)}")
        out = self._model(model)(x, t, **model_kwargs)
        if out.shape != (B, 2 * C, *x.shape[2:]):
            raise ValueError(f"the model must return {2 * C} channels (ε and variance), got shape {tuple(out.shape)}")
        eps, var_values = torch.split(out, C, dim=1)
        min_log = _extract(self.posterior_log_variance_clipped, t, x.shape)
        max_log = _extract(self.log_betas, t, x.shape)
        frac = (var_values + 1) / 2  # the model's v in [-1, 1] maps to [β̃_t, β_t]
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": torch.exp(log_variance), "log_variance": log_variance,
                "pred_xstart": pred_xstart, "eps": eps}

    def condition_mean(self, cond_fn, p_mean_var: dict, x, t, model_kwargs=None) -> torch.Tensor:
        """Classifier / CLIP guidance, paper eq. (4) and (7): μ̂ = μ + Σ · cond_fn(x_t, t),
        where ``cond_fn`` returns s · ∇_x log p(y | x_t)."""
        gradient = self._model(cond_fn)(x, t, **(model_kwargs or {}))
        return p_mean_var["mean"].float() + p_mean_var["variance"] * gradient.float()

    def p_sample(self, model, x, t, clip_denoised=True, denoised_fn=None, cond_fn=None, model_kwargs=None,
                 generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> dict:
        """One reverse step x_t → x_{t−1} = μ̂ + σ z (no noise at t = 0)."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                   model_kwargs=model_kwargs)
        if noise is None:
            noise = randn(x.shape, generator, x.device, x.dtype)
        if cond_fn is not None:
            out["mean"] = self.condition_mean(cond_fn, out, x, t, model_kwargs=model_kwargs)
        nonzero = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"], "eps": out["eps"]}

    def p_sample_loop_progressive(self, model, shape, noise=None, clip_denoised=True, denoised_fn=None, cond_fn=None,
                                  model_kwargs=None, device=None, progress=False, generator=None,
                                  skip_timesteps: int = 0, init_image: torch.Tensor | None = None,
                                  postprocess_fn=None) -> Iterator[dict]:
        """Yield every step's ``{"sample": x_{t-1}, "pred_xstart": x̂_0, "eps", "t"}``, from t = T−1 down to 0.

        ``generator`` (or an int seed) makes the run repeatable. ``skip_timesteps`` starts at
        t = T−1−skip from x_t = q_sample(init_image, t, noise) (Blended Diffusion), with the
        initial noise as ε and a zero image when none is given, as guided-diffusion does;
        ``postprocess_fn(out, t)`` may rewrite each step's output (Blended Diffusion blends the
        noised background in).
        """
        generator = make_generator(generator)
        if device is None:
            device = next(model.parameters()).device if hasattr(model, "parameters") else torch.device("cpu")
        img = noise if noise is not None else randn(shape, generator, device)
        indices = list(range(self.num_timesteps - skip_timesteps))[::-1]
        if skip_timesteps and init_image is None:
            init_image = torch.zeros_like(img)
        if init_image is not None:
            t0 = torch.full((shape[0],), indices[0], device=device, dtype=torch.long)
            img = self.q_sample(init_image.to(img).expand(shape), t0, img)
        from romlib.progress import tqdm

        for i in tqdm(indices, disable=not progress, desc="sampling", leave=False):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            with torch.no_grad():
                out = self.p_sample(model, img, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                    cond_fn=cond_fn, model_kwargs=model_kwargs, generator=generator)
                if postprocess_fn is not None:
                    out = postprocess_fn(out, t)
            out["t"] = i
            yield out
            img = out["sample"]

    def p_sample_loop(self, model, shape, **kwargs) -> torch.Tensor:
        """The final sample of :meth:`p_sample_loop_progressive` (same arguments)."""
        final = None
        for final in self.p_sample_loop_progressive(model, shape, **kwargs):
            pass
        return final["sample"]


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion that keeps only ``use_timesteps`` of the base process (respacing).

    The kept steps get betas ``1 − ᾱ_i / ᾱ_prev`` so the marginals are unchanged, and the model
    is called with the *original* timestep indices (``timestep_map``).
    """

    def __init__(self, use_timesteps, *, betas):
        self.use_timesteps = set(use_timesteps)
        self.original_num_steps = len(betas)
        base = GaussianDiffusion(betas=betas)
        self.timestep_map, new_betas, last = [], [], 1.0
        for i, alpha_cumprod in enumerate(base.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last)
                last = alpha_cumprod
                self.timestep_map.append(i)
        super().__init__(betas=np.array(new_betas))
        self._map_cache: dict = {}

    def map_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Respaced index → original timestep, on t's device and dtype."""
        key = (t.device, t.dtype)
        if key not in self._map_cache:
            self._map_cache[key] = torch.tensor(self.timestep_map, device=t.device, dtype=t.dtype)
        return self._map_cache[key][t]

    def _model(self, model):
        def wrapped(x, t, **kwargs):
            return model(x, self.map_timesteps(t), **kwargs)
        return wrapped


def create_diffusion(steps: int = 1000, noise_schedule: str = "squaredcos_cap_v2", timestep_respacing: str | None = None) -> SpacedDiffusion:
    """GLIDE's diffusion: ``steps`` base steps, respaced (e.g. ``"100"`` base, ``"fast27"`` upsampler)."""
    betas = get_named_beta_schedule(noise_schedule, steps)
    return SpacedDiffusion(space_timesteps(steps, timestep_respacing or str(steps)), betas=betas)

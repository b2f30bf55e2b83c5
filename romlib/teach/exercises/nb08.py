"""Notebook 08's exercises: the student writes the sampling loop — the forward process, one reverse step, the whole
loop, CF and CCF inside it (eq. 6, eq. 8), the known region inside it — then DiffEdit's mask and one training step.

The loop checks run the student's loop and the library's (:mod:`romlib.teach.loop`) with the same noise and say at
which step and in which quantity they first part: "step 3 (t = 777): your x_{t-1} differs …, only in the known
region", then, when the answer matches a known mistake, what that mistake is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...guidance.cfg import RULES, guided_eps
from ...sampling.diffusion import GaussianDiffusion, get_named_beta_schedule
from ..loop import (STEP_NAMES, diffedit_map as library_diffedit_map, inpaint_loop as library_inpaint_loop, library_loop,
                    library_step, loop_noise, schedule, stand_in_model)
from ..toy import ToyModel, train_step as toy_train_step
from .core import Exercise, Mistake, Unexpected, difference, fresh_seed

#: the respaced schedule every loop check runs: 10 kept steps of the linear schedule (the cosine schedule's
#: ᾱ_999 ≈ 2e-9 makes x̂_0 = (x_t − sqrt(1 − ᾱ)ε)/sqrt(ᾱ) a difference of numbers near 10⁴: float32 rounding alone
#: would then part two correct loops)
STEPS = 10
SCHEDULE = "linear"
_LOOP_TOL = dict(atol=1e-4, rtol=1e-3)


def _abar_full(name="squaredcos_cap_v2") -> torch.Tensor:
    return torch.from_numpy(GaussianDiffusion(betas=get_named_beta_schedule(name, 1000)).alphas_cumprod)


# ----------------------------------------------------------------------------------------------
# where a trajectory first parts from the library's
# ----------------------------------------------------------------------------------------------


def _regions(got, want, keep_mask, atol: float, rtol: float) -> str:
    """Where two tensors differ, said in the mask's words (known region / edited region), or ''."""
    if keep_mask is None or not isinstance(got, torch.Tensor):
        return ""
    try:
        off = ~torch.isclose(got.detach().double(), want.double(), atol=atol, rtol=rtol)
        keep = keep_mask.bool().expand_as(off)
    except (RuntimeError, TypeError):
        return ""
    known, edit = bool((off & keep).any()), bool((off & ~keep).any())
    if known and not edit:
        return ", only in the known region (keep_mask = 1)"
    if edit and not known:
        return ", only in the edited region (keep_mask = 0)"
    return ", in the known and in the edited region" if known else ""


def divergence(got, want, timesteps, *, keep_mask=None, atol: float = 1e-4, rtol: float = 1e-3) -> str | None:
    """Where a trajectory ``got`` first leaves ``want`` (lists of ``(ε̂, x̂_0, x_{t−1})``, one per step): "step 3
    (t = 777): your x_{t-1} differs …"; None when they agree. Steps count from 1; t is of the 1000 steps."""
    if got is None:
        return "your loop's result is None: did you forget `return`?"
    if not isinstance(got, (list, tuple)):
        return f"your loop's result is a {type(got).__name__}; expected a list with one (ε̂, x̂_0, x_{{t-1}}) per step"
    if len(got) != len(want):
        return f"your loop returned {len(got)} steps; expected {len(want)}, one per timestep of {list(timesteps)}"
    for k, (g, w) in enumerate(zip(got, want)):
        head = f"step {k + 1} (t = {timesteps[k]})"
        if not isinstance(g, (list, tuple)) or len(g) != 3:
            return f"{head}: your loop gave a {type(g).__name__}; expected a tuple (ε̂, x̂_0, x_{{t-1}})"
        for name, gq, wq in zip(STEP_NAMES, g, w):
            d = difference(gq, wq, atol=atol, rtol=rtol, where=f"your {name}")
            if d:
                return f"{head}: {d}{_regions(gq, wq, keep_mask, atol, rtol)}"
    return None


# ----------------------------------------------------------------------------------------------
# 08.forward: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε, for points and for images
# ----------------------------------------------------------------------------------------------


def _forward_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(81, seed))
    abar = _abar_full().float()
    out = []
    for shape, t in (((4, 2), [999, 500, 10, 0]), ((2, 3, 4, 4), [777, 111]), ((3, 1, 2, 2), [250, 250, 998])):
        out.append((torch.rand(shape, generator=g) * 2 - 1, torch.tensor(t), torch.randn(shape, generator=g), abar))
    return out


def _forward_reference(x0, t, noise, alphas_cumprod):
    d = GaussianDiffusion(betas=get_named_beta_schedule("squaredcos_cap_v2", 1000))
    return d.q_sample(x0, t, noise)


def q_sample(x0, t, noise, alphas_cumprod):
    """x_t ~ q(x_t | x_0) for points [N, 2] or images [B, C, H, W]: one timestep per row."""
    abar = alphas_cumprod[t].reshape(-1, *[1] * (x0.dim() - 1))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def _row_abar(x0, t, ab):
    return ab[t].reshape(-1, *[1] * (x0.dim() - 1))


FORWARD = Exercise(
    id="08.forward", title="the forward process, for points and images", function="q_sample",
    paper="§3.1, eq. 1 in closed form",
    prompt="Write q_sample(x0, t, noise, alphas_cumprod) -> x_t for a batch of any shape: 2-D points [N, 2] "
           "(the toy) or images [B, C, H, W]. t [B] holds one timestep per row, alphas_cumprod is ᾱ of the 1000 steps.",
    stub='''def q_sample(x0, t, noise, alphas_cumprod):
    """x_t ~ q(x_t | x_0): x0, noise [B, ...]; t [B]; alphas_cumprod [1000] (ᾱ)."""
    abar = ...    # TODO: ᾱ_t of each row, shaped to broadcast over x0 whatever its number of dimensions
    return ...    # TODO: mix x0 and noise
''',
    reference=_forward_reference, solution=q_sample, cases=_forward_cases,
    mistakes=(
        Mistake(lambda x0, t, n, ab: _row_abar(x0, t, ab) * x0 + (1 - _row_abar(x0, t, ab)) * n,
                "the square roots are missing: ᾱ_t and 1 − ᾱ_t are variances; x_0 and ε are scaled by their roots"),
        Mistake(lambda x0, t, n, ab: (1 - _row_abar(x0, t, ab)).sqrt() * x0 + _row_abar(x0, t, ab).sqrt() * n,
                "the coefficients are swapped: at t = 0 (ᾱ ≈ 1) x_t must be almost x_0"),
        Mistake(lambda x0, t, n, ab: ab[t[0]].sqrt() * x0 + (1 - ab[t[0]]).sqrt() * n,
                "every row used the first row's timestep: index ᾱ with the whole t"),
    ),
    checks="x_t against GaussianDiffusion.q_sample on points [N, 2] and images, mixed t per batch (0 and 999 included)",
    hints=("§3.1 of the paper (eq. 1) gives one step of noise; its closed form over t steps is in Ho et al. 2020, "
           "eq. 4, and in notebook 01, section 1.",
           "x_t is a weighted sum of x_0 and ε; the weights are the standard deviations that go with ᾱ_t and 1 − ᾱ_t. "
           "Reshape ᾱ_t to [B, 1, …, 1] with as many ones as x0 has dimensions after the first."),
    hint="abar = alphas_cumprod[t].reshape(-1, *[1] * (x0.dim() - 1)); x_t = abar.sqrt() · x0 + (1 − abar).sqrt() · noise.",
)

# ----------------------------------------------------------------------------------------------
# 08.step: one reverse step x_t -> (x̂_0, x_{t-1})
# ----------------------------------------------------------------------------------------------


def _step_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(82, seed))
    diffusion, timesteps, abar = schedule(STEPS, SCHEDULE)
    out = []
    for shape, k, clip, forced in (((4, 2), 1, False, False), ((2, 3, 4, 4), 3, True, False),
                                   ((1, 3, 4, 4), 6, True, True), ((5, 2), STEPS - 1, False, False)):
        t, t_prev = timesteps[k], (timesteps[k + 1] if k + 1 < STEPS else None)
        a_t = float(abar[t])
        a_prev = float(abar[t_prev]) if t_prev is not None else 1.0
        fn = _force_to(torch.full(shape, 0.25)) if forced else None
        out.append((torch.randn(shape, generator=g), torch.randn(shape, generator=g), a_t, a_prev,
                    torch.randn(shape, generator=g), fn, clip))
    return out


def _force_to(value):
    def denoised_fn(x0):  # a stand-in for the known-region step: half of x̂_0 replaced
        keep = torch.zeros_like(x0)
        keep[..., : x0.shape[-1] // 2] = 1
        return x0 * (1 - keep) + value * keep
    return denoised_fn


def _step_reference(x_t, eps, abar_t, abar_prev, noise, denoised_fn=None, clip=False):
    """The library's step (:func:`romlib.teach.loop.library_step`) at the kept step whose ᾱ is ``abar_t``."""
    diffusion = schedule(STEPS, SCHEDULE)[0]
    i = int(abs(torch.from_numpy(diffusion.alphas_cumprod) - abar_t).argmin())
    k = diffusion.num_timesteps - 1 - i
    _, x0, x_prev = library_step(lambda x, t: eps, x_t, diffusion, k, noise, denoised_fn=denoised_fn, clip=clip)
    return x0, x_prev


def reverse_step(x_t, eps, abar_t, abar_prev, noise, denoised_fn=None, clip=False):
    """x_t -> (x̂_0, x_{t-1}): x̂_0 from ε, then a draw from the posterior q(x_{t-1} | x_t, x̂_0), σ² = β̃_t."""
    x0_pred = (x_t - (1 - abar_t) ** 0.5 * eps) / abar_t ** 0.5
    if denoised_fn is not None:
        x0_pred = denoised_fn(x0_pred)
    if clip:
        x0_pred = x0_pred.clamp(-1, 1)
    alpha = abar_t / abar_prev          # α_t of this (respaced) step
    beta = 1 - alpha
    mean = (beta * abar_prev ** 0.5 * x0_pred + (1 - abar_prev) * alpha ** 0.5 * x_t) / (1 - abar_t)
    var = beta * (1 - abar_prev) / (1 - abar_t)   # β̃_t
    x_prev = mean + var ** 0.5 * noise if abar_prev < 1 else mean
    return x0_pred, x_prev


def _step_variant(*, sqrt_x0=True, mean_x_t_coef=True, var="tilde"):
    def fn(x_t, eps, abar_t, abar_prev, noise, denoised_fn=None, clip=False):
        x0 = (x_t - ((1 - abar_t) ** 0.5 if sqrt_x0 else (1 - abar_t)) * eps) / abar_t ** 0.5
        if denoised_fn is not None:
            x0 = denoised_fn(x0)
        if clip:
            x0 = x0.clamp(-1, 1)
        alpha = abar_t / abar_prev
        beta = 1 - alpha
        mean = (beta * abar_prev ** 0.5 * x0 + ((1 - abar_prev) * alpha ** 0.5 if mean_x_t_coef else 0) * x_t) / (1 - abar_t)
        v = beta * (1 - abar_prev) / (1 - abar_t) if var == "tilde" else (beta if var == "beta" else 0.0)
        return x0, (mean + v ** 0.5 * noise if abar_prev < 1 else mean)
    return fn


def _pair_locate(names):
    def locate(args, got, want):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return None
        for name, g, w in zip(names, got, want):
            d = difference(g, w, atol=1e-4, where=f"your {name}")
            if d:
                return d
        return None
    return locate


STEP = Exercise(
    id="08.step", title="one reverse step", function="reverse_step", paper="§3.1, eq. 2 (the reverse process)",
    prompt="Write reverse_step(x_t, eps, abar_t, abar_prev, noise, denoised_fn=None, clip=False) -> (x0_pred, x_prev): "
           "x̂_0 from x_t and ε; then, if given, denoised_fn(x̂_0) (the known-region step goes there later), clip to "
           "[−1, 1] if clip; then x_{t−1} = μ̃(x_t, x̂_0) + σ_t·noise with σ_t² = β̃_t, the mean and variance of the "
           "posterior q(x_{t−1} | x_t, x_0) (Ho et al. 2020, eq. 6–7: derive them, or let rl.hint's later calls give them). "
           "abar_t, abar_prev are the ᾱ of this step and of the next kept step (1 after the last: then no noise is "
           "added).",
    stub='''def reverse_step(x_t, eps, abar_t, abar_prev, noise, denoised_fn=None, clip=False):
    """x_t -> (x̂_0, x_{t-1}); abar_t, abar_prev: ᾱ of this step and of the next kept one (1 after the last)."""
    x0_pred = ...                       # TODO: invert the forward process with the predicted noise
    if denoised_fn is not None:
        x0_pred = denoised_fn(x0_pred)
    if clip:
        x0_pred = x0_pred.clamp(-1, 1)
    alpha = abar_t / abar_prev          # α_t of this (respaced) step
    beta = 1 - alpha
    mean = ...                          # TODO: the posterior mean μ̃(x_t, x̂_0)
    var = ...                           # TODO: the posterior variance β̃_t
    x_prev = mean + var ** 0.5 * noise if abar_prev < 1 else mean
    return x0_pred, x_prev
''',
    reference=_step_reference, solution=reverse_step, cases=_step_cases, atol=1e-4,
    mistakes=(
        Mistake(_step_variant(sqrt_x0=False), "x̂_0 = (x_t − sqrt(1 − ᾱ_t)·ε) / sqrt(ᾱ_t): the noise is scaled by the "
                "standard deviation sqrt(1 − ᾱ_t), not the variance"),
        Mistake(_step_variant(mean_x_t_coef=False), "the posterior mean has two terms: a part of x̂_0 and a part of x_t "
                "(coefficient (1 − ᾱ_prev)·sqrt(α_t) / (1 − ᾱ_t)); yours has only the first"),
        Mistake(_step_variant(var="beta"), "σ_t² = β_t is DDPM's other choice, but here the variance is "
                "β̃_t = β_t·(1 − ᾱ_prev)/(1 − ᾱ_t), the posterior's"),
        Mistake(_step_variant(var="zero"), "no noise is added: x_{t−1} = μ̃ + σ_t·noise with σ_t² = β̃_t (only the "
                "last step adds none)"),
    ),
    locate=_pair_locate(("x̂_0", "x_{t-1}")),
    checks="(x̂_0, x_{t−1}) against the library's p_sample (σ² = β̃) on points and images, with a denoised_fn and clip, "
           "the last step included",
    hints=("§3.1 of the paper: the reverse step samples q(x_{t−1} | x_t, x_0) with x_0 replaced by the model's "
           "estimate; the posterior's mean and variance are eq. 6–7 of Ho et al. 2020.",
           "x̂_0 undoes q_sample with ε in place of the noise; the mean is coef1·x̂_0 + coef2·x_t with coef1 = "
           "β_t·sqrt(ᾱ_prev)/(1 − ᾱ_t); the variance is β_t times a ratio of two (1 − ᾱ)."),
    hint="x0 = (x_t − sqrt(1 − ᾱ_t)·ε)/sqrt(ᾱ_t); mean = (β·sqrt(ᾱ_prev)·x0 + (1 − ᾱ_prev)·sqrt(α)·x_t)/(1 − ᾱ_t); "
         "var = β·(1 − ᾱ_prev)/(1 − ᾱ_t).",
)

# ----------------------------------------------------------------------------------------------
# 08.loop: the whole loop
# ----------------------------------------------------------------------------------------------


def _with_text(model, text, image=None):
    def eps_fn(x_t, t):
        return model(x_t, t, text, image)
    return eps_fn


def _loop_cases(seed: int = 0):
    _, timesteps, abar = schedule(STEPS, SCHEDULE)
    out = []
    for shape, text, clip, noise_seed in (((6, 2), "a blue truck", False, 1), ((2, 3, 4, 4), "a red circle", True, 2)):
        x_T, noises = loop_noise(shape, STEPS, fresh_seed(noise_seed, seed))
        out.append((_with_text(stand_in_model, text), x_T, timesteps, abar, noises, None, clip))
    x_T, noises = loop_noise((1, 3, 4, 4), STEPS, fresh_seed(3, seed))
    out.append((_with_text(stand_in_model, "a green square"), x_T, timesteps, abar, noises,
                _force_to(torch.full((1, 3, 4, 4), -0.5)), True))
    return out


def _loop_reference(eps_fn, x_T, timesteps, alphas_cumprod, noises, denoised_fn=None, clip=False):
    diffusion = schedule(len(timesteps), SCHEDULE)[0]
    return library_loop(eps_fn, x_T, diffusion, noises, denoised_fn=denoised_fn, clip=clip)


def sample_loop(eps_fn, x_T, timesteps, alphas_cumprod, noises, denoised_fn=None, clip=False):
    """Ancestral sampling from x_T along the kept timesteps; one (ε̂, x̂_0, x_{t-1}) per step."""
    steps, x = [], x_T
    for k, t in enumerate(timesteps):
        abar_prev = alphas_cumprod[timesteps[k + 1]] if k + 1 < len(timesteps) else 1.0
        eps = eps_fn(x, t)
        x0_pred, x = reverse_step(x, eps, alphas_cumprod[t], abar_prev, noises[k], denoised_fn, clip)
        steps.append((eps, x0_pred, x))
    return steps


def _loop_variant(kind):
    def fn(eps_fn, x_T, timesteps, ab, noises, denoised_fn=None, clip=False):
        steps, x = [], x_T
        for k, t in enumerate(timesteps):
            if kind == "t-1":
                a_prev = ab[t - 1] if t > 0 else 1.0
            elif kind == "noise-last":
                a_prev = ab[timesteps[k + 1]] if k + 1 < len(timesteps) else ab[0]
            else:
                a_prev = ab[timesteps[k + 1]] if k + 1 < len(timesteps) else 1.0
            x_in = x_T if kind == "restart" else x
            eps = eps_fn(x_in, k if kind == "index" else t)
            x0, x = reverse_step(x_in, eps, ab[t], a_prev, noises[k], denoised_fn, clip)
            steps.append((eps, x0, x))
        return steps
    return fn


_TIMESTEPS = schedule(STEPS, SCHEDULE)[1]


def _traj_locate(timesteps_at: int | None, keep_at: int | None = None):
    def locate(args, got, want):
        keep = args[keep_at] if keep_at is not None else None
        ts = args[timesteps_at] if timesteps_at is not None else _TIMESTEPS
        return divergence(got, want, ts, keep_mask=keep, **_LOOP_TOL)
    return locate


LOOP = Exercise(
    id="08.loop", title="the whole sampling loop", function="sample_loop", paper="§3.1 (sampling), §4.1",
    prompt="Write sample_loop(eps_fn, x_T, timesteps, alphas_cumprod, noises, denoised_fn=None, clip=False): start at "
           "x_T, and at every kept timestep t (timesteps runs from the noisiest down to 0) ask eps_fn(x, t) for ε and "
           "take one reverse_step with noises[k]. Return one (ε̂, x̂_0, x_{t−1}) per step. It calls your reverse_step: "
           "pass 08.step first.",
    stub='''def sample_loop(eps_fn, x_T, timesteps, alphas_cumprod, noises, denoised_fn=None, clip=False):
    """Ancestral sampling; returns [(ε̂, x̂_0, x_{t-1}) for each step]."""
    steps, x = [], x_T
    for k, t in enumerate(timesteps):
        abar_prev = ...    # TODO: ᾱ of the next kept timestep (and after the last one?)
        eps = ...          # TODO: the model's noise prediction at this x and t
        x0_pred, x = reverse_step(x, eps, alphas_cumprod[t], abar_prev, noises[k], denoised_fn, clip)
        steps.append((eps, x0_pred, x))
    return steps
''',
    reference=_loop_reference, solution=sample_loop, cases=_loop_cases, atol=1e-4, needs=("08.step",),
    mistakes=(
        Mistake(_loop_variant("t-1"), "ᾱ_prev is ᾱ of the next *kept* timestep (the schedule is respaced: 999, 888, …), "
                "not of t − 1"),
        Mistake(_loop_variant("index"), "eps_fn takes the timestep t (of the 1000 steps), not the step number k"),
        Mistake(_loop_variant("restart"), "every step starts again from x_T: carry x from one step to the next"),
        Mistake(_loop_variant("noise-last"), "the last step adds noise: after it ᾱ_prev = 1 (no noise on the last "
                "step)"),
    ),
    locate=_traj_locate(2),
    checks="the trajectory (ε̂, x̂_0, x_{t−1}) step by step against the library's loop with the same noise, on points "
           "and images, with and without clip and a denoised_fn",
    hints=("§3.1: sampling runs the reverse step from t = T down to 0; with a respaced schedule (notebook 01, section 2) "
           "only the kept timesteps are visited.",
           "At step k: ᾱ_prev is ᾱ at timesteps[k + 1] (1.0 after the last); ε comes from eps_fn at the current x and "
           "this t; x becomes the step's x_{t−1}."),
    hint="abar_prev = alphas_cumprod[timesteps[k + 1]] if k + 1 < len(timesteps) else 1.0; eps = eps_fn(x, t).",
)

# ----------------------------------------------------------------------------------------------
# 08.cf and 08.ccf: the guided ε inside the loop (eq. 6, eq. 8)
# ----------------------------------------------------------------------------------------------


def _guided_cases(with_ref: bool, seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(83, seed))
    out = []
    for shape, ref, target, s in (((1, 3, 6, 6), "the red circle", "a blue square", 3.0),
                                  ((1, 3, 4, 4), "the yellow triangle", "a triangle", 15.0)):
        image = torch.rand(shape, generator=g) * 2 - 1
        keep = torch.ones(1, 1, *shape[-2:])
        keep[..., 1:-1, 1:-1] = 0  # edit the middle (GLIDE's 1 = keep)
        args = (stand_in_model, image, keep, ref, target, s) if with_ref else (stand_in_model, image, keep, target, s)
        out.append(args)
    return out


def _run_guided(args, eps_fn):
    """What the guided-ε exercises compare: the library's inpainting loop driven by the student's eps_fn."""
    if eps_fn is None:
        raise Unexpected("the result is None: did you forget `return` (of eps_fn)?")
    if not callable(eps_fn):
        raise Unexpected(f"the result is a {type(eps_fn).__name__}; expected eps_fn, a function of (x_t, t) "
                         "(return eps_fn itself, not eps_fn(...))")
    image, keep = args[1], args[2]
    x_T, noises = loop_noise((2, *image.shape[1:]), STEPS, seed=int(image.shape[-1]))
    return library_inpaint_loop(eps_fn, x_T, schedule(STEPS, SCHEDULE)[0], noises, image, keep)


def _texts(texts):
    *rest, scale = texts
    ref, target = rest if len(rest) == 2 else ("", rest[0])
    return ref, target, scale


def _rule_eps_fn(rule):
    def fn(model, image, keep_mask, *texts):
        ref, target, scale = _texts(texts)
        spec = RULES[rule]
        seen = image if spec.uses_original(target) else image * keep_mask
        return lambda x_t, t: guided_eps(model(x_t, t, target, seen), model(x_t, t, spec.base_prompt(ref), seen), scale)
    return fn


def cf_eps_fn(model, image, keep_mask, target, scale):
    """CF (eq. 6) as an eps_fn for the loop: both branches see the masked image; the base branch has no text."""
    masked = image * keep_mask

    def eps_fn(x_t, t):
        eps_cond = model(x_t, t, target, masked)
        eps_uncond = model(x_t, t, "", masked)
        return eps_uncond + scale * (eps_cond - eps_uncond)

    return eps_fn


def ccf_eps_fn(model, image, keep_mask, ref, target, scale):
    """CCF (eq. 8) as an eps_fn for the loop: both branches see the original image; the base branch is c_ref."""
    def eps_fn(x_t, t):
        eps_target = model(x_t, t, target, image)
        eps_base = model(x_t, t, ref, image)
        return eps_base + scale * (eps_target - eps_base)

    return eps_fn


def _guided_variant(base, masked, *, swap=False, no_scale=False):
    def fn(model, image, keep_mask, *texts):
        ref, target, scale = _texts(texts)
        seen = image * keep_mask if masked else image
        text_base = {"ref": ref, "empty": ""}[base]
        cond, text_base = (text_base, target) if swap else (target, text_base)

        def eps_fn(x_t, t):
            e_c, e_b = model(x_t, t, cond, seen), model(x_t, t, text_base, seen)
            return e_c if no_scale else e_b + scale * (e_c - e_b)
        return eps_fn
    return fn


CF_LOOP = Exercise(
    id="08.cf", title="CF inside the loop", function="cf_eps_fn", paper="§3.3, eq. 6",
    prompt="Write cf_eps_fn(model, image, keep_mask, target, scale) -> eps_fn: the function of (x_t, t) your loop "
           "calls, giving GLIDE's classifier-free ε̂ (eq. 6). model(x_t, t, text, inpaint_image) -> ε; CF shows the "
           "model the masked image (image·keep_mask; keep_mask: 1 = keep) in both branches; ∅, the empty text, is \"\".",
    stub='''def cf_eps_fn(model, image, keep_mask, target, scale):
    """CF (eq. 6) as an eps_fn(x_t, t) for sample_loop."""
    masked = image * keep_mask

    def eps_fn(x_t, t):
        eps_cond = ...      # TODO: the target branch
        eps_uncond = ...    # TODO: the base branch (which text?)
        return ...          # TODO: eq. 6

    return eps_fn
''',
    reference=_rule_eps_fn("cf"), solution=cf_eps_fn, cases=lambda seed=0: _guided_cases(False, seed), atol=1e-4,
    observe=_run_guided, locate=_traj_locate(None, 2),
    mistakes=(
        Mistake(_guided_variant("empty", masked=False), "CF shows the model the masked image (image·keep_mask), not the "
                "original: the original image in both branches is one of CCF's two changes"),
        Mistake(_guided_variant("empty", masked=True, swap=True), "the branches are swapped: eq. 6 starts at ε(x|∅) "
                "and moves s times along ε(x|c) − ε(x|∅)"),
        Mistake(_guided_variant("empty", masked=True, no_scale=True), "the scale is ignored: that is the plain "
                "conditional model (s = 1)"),
    ),
    checks="the library's inpainting loop driven by the student's eps_fn, step by step, against the same loop under "
           "romlib's CF rule (stand-in model, s = 3 and 15)",
    hints=("§3.3 of the paper, eq. 6, and notebook 01's classifier-free section: which text and which image each "
           "branch gets.",
           "eps_fn calls model twice with the masked image — once with the target text, once with the empty text "
           "\"\" — and returns base + s·(target branch − base)."),
    hint="eps_cond = model(x_t, t, target, masked); eps_uncond = model(x_t, t, '', masked); "
         "return eps_uncond + scale·(eps_cond − eps_uncond).",
)

CCF_LOOP = Exercise(
    id="08.ccf", title="CCF inside the loop", function="ccf_eps_fn", paper="§4.3, eq. 8",
    prompt="Write ccf_eps_fn(model, image, keep_mask, ref, target, scale) -> eps_fn: the paper's conditional "
           "classifier-free ε̂ (eq. 8) as a function of (x_t, t) for your loop: which text does the base branch get, "
           "and which image do both branches see?",
    stub='''def ccf_eps_fn(model, image, keep_mask, ref, target, scale):
    """CCF (eq. 8) as an eps_fn(x_t, t) for sample_loop."""
    def eps_fn(x_t, t):
        eps_target = ...    # TODO
        eps_base = ...      # TODO: eq. 8's base branch
        return ...          # TODO

    return eps_fn
''',
    reference=_rule_eps_fn("ccf"), solution=ccf_eps_fn, cases=lambda seed=0: _guided_cases(True, seed), atol=1e-4,
    observe=_run_guided, locate=_traj_locate(None, 2),
    mistakes=(
        Mistake(_guided_variant("empty", masked=True), "that is CF (eq. 6): the empty text on the masked image; CCF "
                "starts from ε(x|c_ref) on the original image (eq. 8)"),
        Mistake(_guided_variant("empty", masked=False), "the base branch has no text: CCF's base is ε(x|c_ref), eq. 8 "
                "(the image is right: the original)"),
        Mistake(_guided_variant("ref", masked=True), "the masked image: CCF shows both branches the original image "
                "(§4.3); the direction c_ref → c_target is right"),
        Mistake(_guided_variant("ref", masked=False, swap=True), "the branches are swapped: you guide from c_target "
                "back towards c_ref, the object you are removing"),
    ),
    checks="the library's inpainting loop driven by the student's eps_fn, step by step, against the same loop under "
           "romlib's CCF rule (stand-in model, s = 3 and 15)",
    hints=("§4.3 of the paper, eq. 8 against eq. 6: what replaces ∅, and what the paper says about the inpainting input.",
           "Both branches see the original image; the base branch is conditioned on the referring text; the "
           "combination is the same line as CF's."),
    hint="eps_target = model(x_t, t, target, image); eps_base = model(x_t, t, ref, image); "
         "return eps_base + scale·(eps_target − eps_base).",
)

# ----------------------------------------------------------------------------------------------
# 08.known-region: GLIDE's known region inside the loop
# ----------------------------------------------------------------------------------------------


def _inpaint_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(84, seed))
    _, timesteps, abar = schedule(STEPS, SCHEDULE)
    out = []
    for shape, noise_seed in (((2, 3, 6, 6), 5), ((1, 3, 4, 4), 6)):
        image = torch.rand(1, *shape[1:], generator=g) * 2 - 1
        keep = torch.ones(1, 1, *shape[-2:])
        keep[..., 1:-1, 1:] = 0
        x_T, noises = loop_noise(shape, STEPS, fresh_seed(noise_seed, seed))
        out.append((_with_text(stand_in_model, "a purple circle", image * keep), x_T, timesteps, abar, noises, image,
                    keep))
    return out


def _inpaint_reference(eps_fn, x_T, timesteps, alphas_cumprod, noises, image, keep_mask):
    return library_inpaint_loop(eps_fn, x_T, schedule(len(timesteps), SCHEDULE)[0], noises, image, keep_mask)


def inpaint_loop(eps_fn, x_T, timesteps, alphas_cumprod, noises, image, keep_mask):
    """GLIDE's inpainting: the known region forced through x̂_0 at every step (keep_mask: 1 = keep), x̂_0 clipped."""
    def denoised_fn(x0_pred):
        return x0_pred * (1 - keep_mask) + image * keep_mask

    return sample_loop(eps_fn, x_T, timesteps, alphas_cumprod, noises, denoised_fn, clip=True)


def _inpaint_variant(kind):
    def fn(eps_fn, x_T, timesteps, ab, noises, image, keep):
        if kind == "x_t":  # the clean known pixels pasted into x_{t-1}
            steps, x = [], x_T
            for k, t in enumerate(timesteps):
                a_prev = ab[timesteps[k + 1]] if k + 1 < len(timesteps) else 1.0
                eps = eps_fn(x, t)
                x0, x = reverse_step(x, eps, ab[t], a_prev, noises[k], None, True)
                x = x * (1 - keep) + image * keep
                steps.append((eps, x0, x))
            return steps
        forced = {"inverted": lambda x0: x0 * keep + image * (1 - keep),
                  "zero": lambda x0: x0 * (1 - keep)}.get(kind, lambda x0: x0 * (1 - keep) + image * keep)
        return sample_loop(eps_fn, x_T, timesteps, ab, noises, forced, kind != "no-clip")
    return fn


KNOWN_REGION = Exercise(
    id="08.known-region", title="the known region inside the loop", function="inpaint_loop",
    paper="GLIDE's inpainting sampler (Nichol et al. 2022), the one the paper edits with (§4.1); RePaint (Lugmayr et al. 2022) for the comparison",
    prompt="Write inpaint_loop(eps_fn, x_T, timesteps, alphas_cumprod, noises, image, keep_mask): your sample_loop "
           "with the known region (keep_mask = 1) forced at every step the way GLIDE does it (its denoised_fn), and x̂_0 "
           "clipped to [−1, 1]. It calls your sample_loop: pass 08.loop first.",
    stub='''def inpaint_loop(eps_fn, x_T, timesteps, alphas_cumprod, noises, image, keep_mask):
    """GLIDE's inpainting loop (keep_mask: 1 = keep)."""
    def denoised_fn(x0_pred):
        return ...      # TODO: which pixels of x̂_0 are replaced, and by what?

    return sample_loop(eps_fn, x_T, timesteps, alphas_cumprod, noises, denoised_fn, clip=True)
''',
    reference=_inpaint_reference, solution=inpaint_loop, cases=_inpaint_cases, atol=1e-4, needs=("08.step", "08.loop"),
    locate=_traj_locate(2, 6),
    mistakes=(
        Mistake(_inpaint_variant("x_t"), "the known region is forced through x̂_0, not x_t: GLIDE replaces the known "
                "pixels of the prediction x̂_0 (its denoised_fn), so x_{t−1} stays a noisy image of level t − 1; the "
                "clean image pasted into x_{t−1} puts noise-free pixels beside noisy ones"),
        Mistake(_inpaint_variant("inverted"), "the mask convention is inverted: keep_mask is 1 where the image is "
                "kept, so the image's pixels go where keep_mask = 1 and the prediction where it is 0"),
        Mistake(_inpaint_variant("no-clip"), "x̂_0 is not clipped: pass clip=True (GLIDE clips x̂_0 to [−1, 1])"),
        Mistake(_inpaint_variant("zero"), "the known pixels are set to 0: they are the image's"),
    ),
    checks="the trajectory step by step against GLIDE's inpainting loop (known_region_fn as denoised_fn, clip) with the "
           "same noise; the message says whether the difference is in the known or the edited region",
    hints=("GLIDE's inpainting sampler (Nichol et al. 2022), which the paper edits with (§4.1): the known region is "
           "forced at every step through the predicted x_0 (GLIDE's denoised_fn).",
           "denoised_fn returns x̂_0 where keep_mask = 0 and the image where keep_mask = 1: a blend of two tensors with "
           "the mask and its complement."),
    hint="return x0_pred * (1 - keep_mask) + image * keep_mask",
)

# ----------------------------------------------------------------------------------------------
# 08.diffedit: an edit mask from ε(x|c_target) − ε(x|c_ref) over several t
# ----------------------------------------------------------------------------------------------


def _diffedit_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(85, seed))
    _, timesteps, abar = schedule(STEPS, SCHEDULE)
    out = []
    for shape, ts, ref, target in (((1, 3, 6, 6), [777, 555, 333], "the red circle", "a blue square"),
                                   ((1, 3, 4, 4), [444, 222], "the yellow triangle", "a yellow circle")):
        noises = [torch.randn(shape, generator=g) for _ in ts]
        out.append((stand_in_model, torch.rand(shape, generator=g) * 2 - 1, ref, target, ts, abar.float(), noises))
    return out


def diffedit_map(model, image, ref, target, timesteps, alphas_cumprod, noises):
    """DiffEdit's map [H, W] in [0, 1]: |ε(x_t|target) − ε(x_t|ref)| over channels and t's, divided by its maximum."""
    total = 0
    for t, noise in zip(timesteps, noises):
        abar = alphas_cumprod[t]
        x_t = abar.sqrt() * image + (1 - abar).sqrt() * noise
        diff = model(x_t, t, target) - model(x_t, t, ref)
        total = total + diff.abs().mean(dim=1)[0]
    m = total / len(timesteps)
    return m / m.max()


def _diffedit_variant(kind):
    def fn(model, image, ref, target, timesteps, ab, noises):
        maps = []
        for t, noise in zip(timesteps, noises):
            a = ab[t]
            x_t = image if kind == "clean" else a.sqrt() * image + (1 - a).sqrt() * noise
            d = model(x_t, t, target) - model(x_t, t, ref)
            maps.append(d.mean(dim=1)[0] if kind == "signed" else d.abs().mean(dim=1)[0])
        m = maps[0] if kind == "first" else sum(maps) / len(maps)
        return m if kind == "raw" else m / m.max()
    return fn


DIFFEDIT = Exercise(
    id="08.diffedit", title="DiffEdit's edit mask", function="diffedit_map", paper="§4.2 (where the mask comes from); DiffEdit",
    prompt="Write diffedit_map(model, image, ref, target, timesteps, alphas_cumprod, noises) -> [H, W] in [0, 1]: "
           "noise the image to each t (with noises[k]), ask model(x_t, t, text) for both texts, and average the size "
           "of their difference over channels and over the t's; divide by its largest value. Thresholded, it is an "
           "edit mask found without a segmenter (DiffEdit, Couairon et al. 2023).",
    stub='''def diffedit_map(model, image, ref, target, timesteps, alphas_cumprod, noises):
    """[H, W] in [0, 1]: where the two texts' noise predictions differ. image [1, 3, H, W]."""
    total = 0
    for t, noise in zip(timesteps, noises):
        x_t = ...          # TODO: the image noised to t
        diff = ...         # TODO: ε(x_t | target) − ε(x_t | ref)
        total = total + ...   # TODO: its size, averaged over the channels -> [H, W]
    m = total / len(timesteps)
    return ...             # TODO: scaled to [0, 1]
''',
    reference=library_diffedit_map,
    solution=diffedit_map, cases=_diffedit_cases, atol=1e-4,
    mistakes=(
        Mistake(_diffedit_variant("signed"), "the signed difference averages out over the channels: take its size, "
                "|ε(x|c_target) − ε(x|c_ref)|, before averaging"),
        Mistake(_diffedit_variant("raw"), "not scaled: divide by the map's largest value so that 0.5 means 'half of the "
                "strongest difference'"),
        Mistake(_diffedit_variant("first"), "only the first t counts: average the map over all the timesteps (one t is "
                "noisy; several agree on the object)"),
        Mistake(_diffedit_variant("clean"), "the clean image was given to the model: noise it to each t first "
                "(x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·noise), as the model was trained"),
    ),
    checks="the map against romlib.teach.loop.diffedit_map on a stand-in model, two images, two sets of t",
    hints=("DiffEdit (Couairon et al. 2023), step 1; in the paper's terms, CCF's guidance direction ε(x|c_target) − "
           "ε(x|c_ref) of §4.3 — notebook 04 measures where it is large.",
           "For each (t, noise): x_t from q_sample, then the two predictions' difference; |·| averaged over dim 1 gives "
           "[H, W]; the mean over t, divided by its max, is in [0, 1]."),
    hint="x_t = abar.sqrt()·image + (1 − abar).sqrt()·noise with abar = alphas_cumprod[t]; "
         "total += (model(x_t, t, target) − model(x_t, t, ref)).abs().mean(dim=1)[0]; return m / m.max().",
)

# ----------------------------------------------------------------------------------------------
# 08.train-step: one step of L_simple on the toy
# ----------------------------------------------------------------------------------------------


def _train_cases(seed: int = 0):
    out = []
    abar = _abar_full().float()
    for base, n in ((86, 32), (87, 8)):
        g = torch.Generator().manual_seed(fresh_seed(base, seed))
        torch.manual_seed(fresh_seed(base, seed))
        model = ToyModel(3, width=16, t_dim=8)
        for p in model.parameters():  # stale gradients of an earlier step: zero_grad must clear them
            p.grad = torch.randn(p.shape, generator=g)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x0 = torch.rand(n, 2, generator=g) * 2 - 1
        out.append((model, opt, x0, torch.randint(0, 4, (n,), generator=g), torch.randint(0, 1000, (n,), generator=g),
                    torch.randn(n, 2, generator=g), abar))
    return out


def _observe_train(args, loss):
    return loss, torch.cat([p.detach().flatten() for p in args[0].parameters()])


def train_step(model, optimizer, x0, labels, t, noise, alphas_cumprod):
    """One step of L_simple (eq. 3) on the toy; returns the loss as a number."""
    import torch.nn.functional as F

    abar = alphas_cumprod[t].reshape(-1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    loss = F.mse_loss(model.eps(x_t, t, labels), noise)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _train_variant(kind):
    def fn(model, opt, x0, labels, t, noise, ab):
        a = ab[t].reshape(-1, 1)
        x_t = x0 if kind == "clean" else (a * x0 + (1 - a) * noise if kind == "no-sqrt" else a.sqrt() * x0 + (1 - a).sqrt() * noise)
        loss = F.mse_loss(model.eps(x_t, t, labels), x0 if kind == "x0" else noise)
        if kind != "no-zero-grad":
            opt.zero_grad()
        loss.backward()
        if kind != "no-step":
            opt.step()
        return loss.item()
    return fn


TRAIN_STEP = Exercise(
    id="08.train-step", title="one training step", function="train_step", paper="§3.1, eq. 3 (L_simple)",
    prompt="Write train_step(model, optimizer, x0, labels, t, noise, alphas_cumprod) -> loss: one step of L_simple on "
           "notebook 01's toy. model.eps(x_t, t, labels) is ε_θ; the data x0 [N, 2], the labels, the timesteps and the "
           "noise are given. Return the loss as a number; the check also compares the weights after your step.",
    stub='''import torch.nn.functional as F

def train_step(model, optimizer, x0, labels, t, noise, alphas_cumprod):
    """One step of L_simple (eq. 3); returns the loss as a number."""
    x_t = ...                       # TODO: the forward process
    loss = ...                      # TODO: eq. 3 (F.mse_loss)
    ...                             # TODO: the optimizer's three calls
    return loss.item()
''',
    reference=toy_train_step,
    solution=train_step, cases=_train_cases, atol=1e-5, observe=_observe_train,
    locate=_pair_locate(("loss", "weight vector after the step")),
    mistakes=(
        Mistake(_train_variant("x0"), "the loss compares the prediction with x_0: ε_θ predicts the noise, so the "
                "target of L_simple is ε (eq. 3)"),
        Mistake(_train_variant("no-zero-grad"), "the gradients of an earlier step were added to this one: call "
                "optimizer.zero_grad() before loss.backward()"),
        Mistake(_train_variant("no-step"), "the weights did not move: optimizer.step() after loss.backward()"),
        Mistake(_train_variant("clean"), "the model saw the clean x_0: it learns to predict the noise of x_t, so noise "
                "x0 to t first"),
        Mistake(_train_variant("no-sqrt"), "x_t without square roots: sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε"),
    ),
    checks="the loss and every weight after the step against romlib.teach.toy.train_step, on a small toy model with "
           "stale gradients (so a missing zero_grad shows)",
    hints=("§3.1 of the paper, eq. 3 (L_simple), and notebook 01's section 3, where the toy trains.",
           "x_t from the forward process; the loss is the mean squared error between ε_θ(x_t, t, c) and the noise; then "
           "zero the gradients, backpropagate, step."),
    hint="x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·noise; loss = F.mse_loss(model.eps(x_t, t, labels), noise); "
         "optimizer.zero_grad(); loss.backward(); optimizer.step().",
)

EXERCISES = (FORWARD, STEP, LOOP, CF_LOOP, CCF_LOOP, KNOWN_REGION, TRAIN_STEP, DIFFEDIT)  # the notebook's order

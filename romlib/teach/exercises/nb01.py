"""Notebook 01's exercises: the forward process, the CF line (eq. 6) and CCF's branches (eq. 8)."""
from __future__ import annotations

import zlib

import torch

from ...guidance.cfg import RULES, guided_eps
from ...sampling.diffusion import GaussianDiffusion, get_named_beta_schedule
from .core import Exercise, Mistake, fresh_seed

# ----------------------------------------------------------------------------------------------
# 01.q-sample: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε
# ----------------------------------------------------------------------------------------------


def _q_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(1, seed))
    out = []
    for schedule, shape, t in (("linear", (3, 3, 4, 4), [0, 500, 999]), ("squaredcos_cap_v2", (2, 1, 8, 8), [999, 37]),
                               ("linear", (4, 3, 2, 2), [250, 250, 10, 700])):
        abar = torch.from_numpy(GaussianDiffusion(betas=get_named_beta_schedule(schedule, 1000)).alphas_cumprod).float()
        x0 = torch.rand(shape, generator=g) * 2 - 1
        out.append((x0, torch.tensor(t), torch.randn(shape, generator=g), abar))
    return out


def _q_reference(x0, t, noise, alphas_cumprod):
    a = alphas_cumprod[t].reshape(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def q_sample(x0, t, noise, alphas_cumprod):
    """x_t ~ q(x_t | x_0): sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε, ᾱ_t read for each row's own t."""
    abar = alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def _abar(x0, t, alphas_cumprod):
    return alphas_cumprod[t].reshape(-1, *([1] * (x0.dim() - 1)))


Q_SAMPLE = Exercise(
    id="01.q-sample", title="the forward process in one line", function="q_sample",
    paper="§3.1, eq. 1 in closed form (Ho et al. 2020)",
    prompt="Write q_sample(x0, t, noise, alphas_cumprod): a draw x_t of q(x_t | x_0) (section 1) made from x0 and the "
           "given noise ε. x0 and noise are [B, C, H, W], t is [B] (one timestep per row: each row its own ᾱ_t), "
           "alphas_cumprod is ᾱ as a [T] tensor.",
    stub='''def q_sample(x0, t, noise, alphas_cumprod):
    """x_t ~ q(x_t | x_0) for a batch: x0, noise [B, C, H, W]; t [B]; alphas_cumprod [T] (ᾱ)."""
    return ...  # TODO: mix x0 and noise with the weights of q(x_t | x_0), each row at its own t
''',
    reference=_q_reference, solution=q_sample, cases=_q_cases,
    mistakes=(
        Mistake(lambda x0, t, n, ab: _abar(x0, t, ab) * x0 + (1 - _abar(x0, t, ab)).sqrt() * n,
                "sqrt missing on ᾱ_t: the signal is scaled by sqrt(ᾱ_t), not ᾱ_t (the variances add to 1, "
                "the standard deviations do not)"),
        Mistake(lambda x0, t, n, ab: _abar(x0, t, ab) * x0 + (1 - _abar(x0, t, ab)) * n,
                "both square roots are missing: x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε — ᾱ_t and 1 − ᾱ_t are variances"),
        Mistake(lambda x0, t, n, ab: (1 - _abar(x0, t, ab)).sqrt() * x0 + _abar(x0, t, ab).sqrt() * n,
                "the coefficients are swapped: x_0 gets sqrt(ᾱ_t) (near 1 at small t), the noise sqrt(1 − ᾱ_t)"),
        Mistake(lambda x0, t, n, ab: (ab[t[0]].sqrt() * x0 + (1 - ab[t[0]]).sqrt() * n),
                "every row used the first row's timestep t[0]: index ᾱ with the whole t and reshape it to [B, 1, 1, 1]"),
        Mistake(lambda x0, t, n, ab: _q_reference(x0, (t - 1).clamp(min=0), n, ab),
                "off by one: ᾱ_t is alphas_cumprod[t] (step t counts from 0 in the code), you read alphas_cumprod[t − 1]"),
    ),
    checks="x_t against sqrt(ᾱ_t)x_0 + sqrt(1−ᾱ_t)ε on linear and cosine schedules, mixed t per batch (t = 0 and 999 included)",
    hints=('§3.1 of the paper (eq. 1–2) and the first section of this notebook: what are ᾱ_t and 1 − ᾱ_t the variances of?',
           'x_t is a weighted sum of x_0 and ε, one weight each; the weights are the standard deviations that go with ᾱ_t and 1 − ᾱ_t; index alphas_cumprod with the whole t and reshape it to [B, 1, 1, 1] to broadcast.'),
    hint="ᾱ_t = alphas_cumprod[t] per row; x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε.",
)

# ----------------------------------------------------------------------------------------------
# 01.cf: ε̂ = ε(x|∅) + s·(ε(x|c) − ε(x|∅))
# ----------------------------------------------------------------------------------------------


def _eps_cases(seed: int = 0):
    g = torch.Generator().manual_seed(fresh_seed(2, seed))
    out = []
    for shape, s in (((2, 3, 4, 4), 5.0), ((1, 3, 8, 8), 15.0), ((3, 3, 2, 2), 1.0), ((2, 3, 4, 4), 0.0),
                     ((1, 3, 4, 4), 2.5)):
        out.append((torch.randn(shape, generator=g), torch.randn(shape, generator=g), s))
    return out


def cf_eps(eps_uncond, eps_cond, scale):
    """GLIDE's classifier-free guidance, eq. 6."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


CF = Exercise(
    id="01.cf", title="the classifier-free guidance line", function="cf_eps", paper="§3.3, eq. 6",
    prompt="Write cf_eps(eps_uncond, eps_cond, scale): GLIDE's guided noise prediction "
           "ε̂ = ε(x_t|∅) + s·(ε(x_t|c) − ε(x_t|∅)), with eps_uncond = ε(x_t|∅) and eps_cond = ε(x_t|c_target).",
    stub='''def cf_eps(eps_uncond, eps_cond, scale):
    """ε̂ of classifier-free guidance (eq. 6): eps_uncond = ε(x_t|∅), eps_cond = ε(x_t|c)."""
    return ...  # TODO: start at ε(x_t|∅) and move s times along the guidance direction
''',
    reference=lambda u, c, s: guided_eps(c, u, s), solution=cf_eps, cases=_eps_cases,
    mistakes=(
        Mistake(lambda u, c, s: c + s * (u - c),
                "the roles are swapped: you start at ε(x|c) and move towards ε(x|∅), i.e. away from the text; "
                "eq. 6 starts at ε(x|∅) and moves along ε(x|c) − ε(x|∅)"),
        Mistake(lambda u, c, s: s * (c - u),
                "the base term is missing: ε̂ = ε(x|∅) + s·(...) — the guidance direction alone is not a noise prediction"),
        Mistake(lambda u, c, s: c + s * (c - u),
                "that is the (1 + w) form of Ho & Salimans (ε(x|c) + w·(ε(x|c) − ε(x|∅))): with GLIDE's s, "
                "ε̂ = ε(x|∅) + s·(ε(x|c) − ε(x|∅)); yours equals GLIDE's at s + 1"),
        Mistake(lambda u, c, s: c, "the scale is ignored: you return ε(x|c), the plain conditional model (s = 1)"),
        Mistake(lambda u, c, s: u + s * (c + u),
                "sign error: the direction is ε(x|c) − ε(x|∅), you added ε(x|∅)"),
    ),
    checks="ε̂ against eq. 6 at s = 0, 1, 2.5, 5, 15 on random ε pairs (romlib.guidance.cfg.guided_eps)",
    hints=('§3.3 of the paper, eq. 6 (and the markdown of section 4 above): a start, and a direction scaled by s.',
           'Start at the unconditional prediction, then add s times the difference between the two predictions, the conditional one first.'),
    hint="ε̂ = eps_uncond + scale · (eps_cond − eps_uncond).",
)

# ----------------------------------------------------------------------------------------------
# 01.ccf-base: both branches of CCF (eq. 8) and the image they see
# ----------------------------------------------------------------------------------------------


def _text_vector(text: str, channels: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    return torch.randn(channels, generator=g)


def toy_eps_model(x_t: torch.Tensor, t: torch.Tensor, text: str, inpaint_image: torch.Tensor) -> torch.Tensor:
    """A fixed stand-in for GLIDE's ε(x_t, t | text, inpaint_image): a different output for every text
    and every image, so the check can tell which branch was given which input."""
    g = _text_vector(text, x_t.shape[1]).view(1, -1, 1, 1)
    return torch.tanh(x_t * (1 + t.float().view(-1, 1, 1, 1) / 1000) + g + 0.7 * inpaint_image)


def _ccf_cases(seed: int = 0):
    gen = torch.Generator().manual_seed(fresh_seed(3, seed))
    out = []
    for shape, s, ref, target in (((2, 3, 8, 8), 15.0, "the red circle", "a blue square"),
                                  ((1, 3, 4, 4), 5.0, "the dog", "a cat"),
                                  ((3, 3, 6, 6), 2.0, "the yellow triangle", "a triangle")):
        keep = torch.ones(1, 1, *shape[-2:])
        keep[..., 1:-1, 1:-1] = 0  # edit the middle, keep the border (GLIDE's 1 = keep)
        out.append((toy_eps_model, torch.randn(shape, generator=gen), torch.randint(0, 1000, (shape[0],), generator=gen),
                    torch.rand(shape, generator=gen) * 2 - 1, keep, ref, target, s))
    return out


def _ccf_reference(model, x_t, t, image, keep_mask, ref, target, scale, rule="ccf"):
    spec = RULES[rule]
    seen = image if spec.uses_original(target) else image * keep_mask
    return guided_eps(model(x_t, t, target, seen), model(x_t, t, spec.base_prompt(ref), seen), scale)


def ccf_eps(model, x_t, t, image, keep_mask, ref, target, scale):
    """CCF (eq. 8): both branches see the original image; the base branch is conditioned on c_ref."""
    eps_target = model(x_t, t, target, image)
    eps_ref = model(x_t, t, ref, image)
    return eps_ref + scale * (eps_target - eps_ref)


def _variant(text_of_base, masked, swap=False):
    def fn(model, x_t, t, image, keep_mask, ref, target, scale):
        seen = image * keep_mask if masked else image
        base = {"ref": ref, "empty": "", "target": target}[text_of_base]
        cond = ref if swap else target
        e_c, e_b = model(x_t, t, cond, seen), model(x_t, t, base, seen)
        return e_b + scale * (e_c - e_b)
    return fn


CCF_BASE = Exercise(
    id="01.ccf-base", title="CCF's base branch and its input", function="ccf_eps", paper="§4.3, eq. 8 (vs eq. 6)",
    prompt="Write ccf_eps(model, x_t, t, image, keep_mask, ref, target, scale): the paper's conditional "
           "classifier-free guidance. model(x_t, t, text, inpaint_image) returns ε. Call it for the target branch and "
           "for the base branch with the right text and the right image (masked image = image·keep_mask, "
           "keep_mask: 1 = keep, 0 = edit), then combine them as in eq. 8.",
    stub='''def ccf_eps(model, x_t, t, image, keep_mask, ref, target, scale):
    """CCF's ε̂ (eq. 8). model(x_t, t, text, inpaint_image) -> ε; keep_mask: 1 = keep, 0 = edit."""
    masked = image * keep_mask
    eps_target = model(x_t, t, target, ...)   # TODO: which image does CCF feed the model?
    eps_base = model(x_t, t, ..., ...)        # TODO: the base branch's text (eq. 8) and image
    return eps_base + scale * (eps_target - eps_base)
''',
    reference=_ccf_reference, solution=ccf_eps, cases=_ccf_cases,
    mistakes=(
        Mistake(_variant("empty", masked=True),
                "your base branch is ε(x|∅) on the masked image: that is CF, eq. 6; CCF starts from ε(x|c_ref) "
                "on the original image, eq. 8"),
        Mistake(_variant("empty", masked=False),
                "your base branch is ε(x|∅): that is CF's direction, eq. 6; CCF starts from ε(x|c_ref), eq. 8 "
                "(the image is right: the original)"),
        Mistake(_variant("ref", masked=True),
                "you used the masked image — CCF feeds the original image to both branches (§4.3); the direction "
                "c_ref → c_target is right (this is the 'ccf-direction' ablation)"),
        Mistake(_variant("target", masked=False, swap=True),
                "the branches are swapped: you guide from c_target towards c_ref, i.e. back to the object you are "
                "removing; the base is ε(x|c_ref), the guided branch ε(x|c_target)"),
    ),
    checks="ε̂ against romlib's CCF rule (RULES['ccf'] + guided_eps) on a stand-in model that answers differently "
           "for every text and image",
    hints=('§4.3 of the paper: eq. 8 against eq. 6 — what replaces ∅ — and the paragraph on the inpainting input.',
           'Two calls of model with the same x_t and t: the target text and the referring text; both with one of the two images (the original or the masked one).'),
    hint="base branch: model(x_t, t, ref, image); target branch: model(x_t, t, target, image).",
)

EXERCISES = (Q_SAMPLE, CF, CCF_BASE)

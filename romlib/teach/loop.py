"""Notebook 08 ("write the loop"): the library's sampling loop step by step, the models a student's loop calls,
and where two loops first part.

The student's loop and the library's take the same inputs: ``eps_fn(x_t, t) -> ε`` (t an int, of the 1000
training steps), ``x_T``, the kept ``timesteps`` from T−1 down to 0, ``alphas_cumprod`` (ᾱ of all 1000 steps) and
one noise tensor per step. A loop returns its trajectory: one ``(ε̂, x̂_0, x_{t−1})`` per step. The library's is
:func:`library_loop` — :meth:`romlib.sampling.diffusion.GaussianDiffusion.p_sample` on a respaced diffusion with
the fixed variance σ_t² = β̃_t (DDPM's posterior variance); the checks of :mod:`romlib.teach.exercises.nb08` say at
which step and in which quantity a student's trajectory first leaves it.

The text models have one signature, ``model(x_t, t, text, inpaint_image=None) -> ε``: :func:`stand_in_model`
(a fixed function, for the checks), :func:`world_model` (an embedded backend's base inpainting UNet: the 64 px world's in notebook 08) and
:func:`toy_model` (notebook 01's 2-D toy).
"""
from __future__ import annotations

import zlib
from typing import Callable, Sequence

import torch

from ..guidance.cfg import known_region_fn
from ..sampling.diffusion import SpacedDiffusion, create_diffusion
from ..sampling.inpaint import encode_prompts
from ..shapes.oracle import describe_region
from ..world import oracle as world_oracle
from ..world.render import SIZE as WORLD_SIZE

__all__ = ["schedule", "library_step", "library_loop", "inpaint_loop", "repaint_loop", "stand_in_model", "world_model", "toy_model",
           "loop_noise", "iou", "diffedit_map", "seen", "edit_figure", "STEP_NAMES"]

#: what each entry of a step of a trajectory is, in the messages
STEP_NAMES = ("ε̂", "x̂_0", "x_{t-1}")


def schedule(steps: int = 10, name: str = "squaredcos_cap_v2") -> tuple[SpacedDiffusion, list[int], torch.Tensor]:
    """``(diffusion, timesteps, alphas_cumprod)``: a respaced diffusion of ``steps`` kept steps, its kept timesteps
    from the noisiest down to 0, and ᾱ of all 1000 steps (float64)."""
    diffusion = create_diffusion(1000, name, str(steps))
    full = create_diffusion(1000, name, "1000")
    return diffusion, list(reversed(diffusion.timestep_map)), torch.from_numpy(full.alphas_cumprod)


def loop_noise(shape: Sequence[int], steps: int, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(x_T, noises)``: the start and one noise tensor per step, from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(tuple(shape), generator=g)
    return x_T, [torch.randn(tuple(shape), generator=g) for _ in range(steps)]


def library_step(eps_fn: Callable, x_t: torch.Tensor, diffusion: SpacedDiffusion, k: int, noise: torch.Tensor, *,
                 denoised_fn: Callable | None = None, clip: bool = False) -> tuple:
    """Step ``k`` (0 = the noisiest) of the library's ancestral loop: ``(ε̂, x̂_0, x_{t−1})`` with σ_t² = β̃_t;
    ``denoised_fn`` acts on x̂_0 before clipping, as GLIDE's does (the known region is forced there)."""
    def model(x, t):  # t: the original timesteps (SpacedDiffusion maps them); v = −1 picks β̃_t
        eps = eps_fn(x, int(t[0]))
        if not isinstance(eps, torch.Tensor) or eps.shape != x.shape:  # shape first: a huge answer costs nothing
            what = f"shape {tuple(eps.shape)}" if isinstance(eps, torch.Tensor) else f"a {type(eps).__name__}"
            raise ValueError(f"eps_fn returned {what}; expected a tensor of x_t's shape {tuple(x.shape)}")
        return torch.cat([eps, -torch.ones_like(eps)], dim=1)

    i = diffusion.num_timesteps - 1 - k
    t = torch.full((x_t.shape[0],), i, dtype=torch.long)
    with torch.no_grad():
        out = diffusion.p_sample(model, x_t, t, clip_denoised=clip, denoised_fn=denoised_fn, noise=noise)
    return out["eps"], out["pred_xstart"], out["sample"]


def library_loop(eps_fn: Callable, x_T: torch.Tensor, diffusion: SpacedDiffusion, noises: Sequence[torch.Tensor], *,
                 denoised_fn: Callable | None = None, clip: bool = False) -> list[tuple]:
    """The library's ancestral loop, one ``(ε̂, x̂_0, x_{t−1})`` per step (:func:`library_step`)."""
    steps, x = [], x_T
    for k in range(diffusion.num_timesteps):
        steps.append(library_step(eps_fn, x, diffusion, k, noises[k], denoised_fn=denoised_fn, clip=clip))
        x = steps[-1][2]
    return steps


def inpaint_loop(eps_fn: Callable, x_T: torch.Tensor, diffusion: SpacedDiffusion, noises: Sequence[torch.Tensor],
                 image: torch.Tensor, keep_mask: torch.Tensor) -> list[tuple]:
    """GLIDE's inpainting loop: the known region forced through x̂_0 at every step (``known_region_fn``, the
    ``denoised_fn`` of :mod:`romlib.sampling.inpaint`), x̂_0 clipped to [−1, 1]. ``keep_mask``: 1 = keep."""
    return library_loop(eps_fn, x_T, diffusion, noises, denoised_fn=known_region_fn(image, keep_mask), clip=True)


def repaint_loop(eps_fn: Callable, x_T: torch.Tensor, diffusion: SpacedDiffusion, noises: Sequence[torch.Tensor],
                 image: torch.Tensor, keep_mask: torch.Tensor, *, seed: int = 1,
                 schedule_name: str = "squaredcos_cap_v2") -> list[tuple]:
    """RePaint-style inpainting (Lugmayr et al. 2022, without its resampling), for comparison with GLIDE's: x̂_0 is
    not touched; after each step the known region of x_{t−1} is replaced by the image noised to t−1,
    q(x_{t−1} | x_0) (the image itself after the last step), with fresh noise from ``seed``. ``keep_mask``: 1 = keep;
    ``schedule_name``: the diffusion's β schedule."""
    g = torch.Generator().manual_seed(seed)
    timesteps = list(reversed(diffusion.timestep_map))
    abar = torch.from_numpy(create_diffusion(1000, schedule_name, "1000").alphas_cumprod).float()
    steps, x = [], x_T
    for k in range(len(timesteps)):
        eps, x0, x_prev = library_step(eps_fn, x, diffusion, k, noises[k], clip=True)
        if k + 1 < len(timesteps):
            a = abar[timesteps[k + 1]]
            known = a.sqrt() * image + (1 - a).sqrt() * torch.randn(x_prev.shape, generator=g)
        else:
            known = image.expand_as(x_prev)
        x = x_prev * (1 - keep_mask) + known * keep_mask
        steps.append((eps, x0, x))
    return steps


def _text_vector(text: str, channels: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    return torch.randn(channels, generator=g)


def stand_in_model(x_t: torch.Tensor, t: int, text: str, inpaint_image: torch.Tensor | None = None) -> torch.Tensor:
    """A fixed stand-in for a text-conditional ε model (the checks use it): a different, bounded answer for every
    text, timestep and image; ``inpaint_image=None`` means nothing is known."""
    shape = [1, -1] + [1] * (x_t.dim() - 2)
    g = _text_vector(text, x_t.shape[1]).view(shape)
    image = 0 if inpaint_image is None else 0.7 * inpaint_image
    return torch.tanh(0.8 * x_t * (1 + t / 1000) + g + image)


def world_model(pipe, keep_mask: torch.Tensor) -> Callable:
    """``model(x_t, t, text, inpaint_image=None) -> ε`` on the pipeline's base inpainting UNet (an embedded world's),
    with ``keep_mask`` (1 = keep) fixed; ``inpaint_image=None``: nothing known (an all-zero keep mask), which makes it
    a plain text-conditional model (DiffEdit). Text embeddings are computed once per text."""
    model, tokenizer = pipe.backend.base_model, pipe.backend.tokenizer
    cache: dict = {}

    def fn(x_t, t, text, inpaint_image=None):
        if text not in cache:
            (cache[text],) = encode_prompts(model, tokenizer, [text])
        b = x_t.shape[0]
        emb = {k: (v.expand(b, *v.shape[1:]) if v is not None else None) for k, v in cache[text].items()}
        if inpaint_image is None:
            image, keep = torch.zeros_like(x_t), torch.zeros_like(keep_mask)
        else:
            image, keep = inpaint_image, keep_mask
        with torch.no_grad():
            out = model(x_t, torch.full((b,), int(t), dtype=torch.long), text_emb=emb,
                        inpaint_image=image.expand(b, -1, -1, -1), inpaint_mask=keep.expand(b, -1, -1, -1))
        return out[:, :x_t.shape[1]]

    return fn


def toy_model(model, world) -> Callable:
    """``model(x_t, t, text, inpaint_image=None) -> ε`` on notebook 01's toy (:mod:`romlib.teach.toy`); the image
    is ignored (the toy has none)."""
    def fn(x_t, t, text, inpaint_image=None):
        n = x_t.shape[0]
        with torch.no_grad():
            return model.eps(x_t, torch.full((n,), int(t), dtype=torch.long), torch.full((n,), world.label(text)))

    return fn


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two masks (nonzero = in); 1.0 when both are empty."""
    a, b = torch.as_tensor(a).bool(), torch.as_tensor(b).bool()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def diffedit_map(model: Callable, image: torch.Tensor, ref: str, target: str, timesteps: Sequence[int],
                 alphas_cumprod: torch.Tensor, noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """DiffEdit's edit map (Couairon et al. 2023, step 1) [H, W] in [0, 1]: the image noised to each t, the two texts'
    noise predictions compared, |ε(x_t|c_target) − ε(x_t|c_ref)| averaged over channels and over the t's, divided by
    its largest value. ``model(x_t, t, text)`` as in this module (nothing known: no inpainting input)."""
    total = 0
    for t, noise in zip(timesteps, noises):
        a = alphas_cumprod[t]
        x_t = a.sqrt() * image + (1 - a).sqrt() * noise
        total = total + (model(x_t, t, target) - model(x_t, t, ref)).abs().mean(dim=1)[0]
    m = total / len(timesteps)
    return m / m.max()


def seen(samples: torch.Tensor, edit_mask, case=None) -> list[str]:
    """What the oracle sees in the edited region of each sample [B, 3, H, W] (or '—' for nothing recognisable).
    ``case``: the 64 px world's case the samples edit (:class:`romlib.world.cases.WorldCase`): its oracle
    (:func:`romlib.world.oracle.read`) on each sample enlarged to 64×64 (bilinear; the region nearest), against the
    scene before the edit — 'shiny purple cone'. Without it: ShapesWorld's exact judge ('purple circle')."""
    region = torch.as_tensor(edit_mask).bool().reshape(samples.shape[-2:])
    out = []
    if case is not None:
        side = WORLD_SIZE
        hole = torch.nn.functional.interpolate(region[None, None].float(), size=(side, side), mode="nearest")[0, 0]
        big = torch.nn.functional.interpolate(samples.float(), size=(side, side), mode="bilinear", align_corners=False)
        for x in big.clamp(-1, 1):
            r = world_oracle.read(x, case.scene, case.i, hole.bool().numpy())
            out.append(" ".join(w for w in (r.material, r.colour, r.shape) if w) if r.found else "—")
        return out
    for x in samples:
        r = describe_region(x, region.numpy())
        out.append(" ".join(w for w in (r.colour, r.shape) if w) or "—")
    return out


def edit_figure(rows: dict, image: torch.Tensor, keep_mask: torch.Tensor, size: float = 1.6, case=None):
    """One row per loop (``{title: samples [B, 3, H, W]}``): the input with its edit region outlined, then each sample,
    titled with what the oracle sees there (:func:`seen`; ``case``: the world's case the samples edit)."""
    import matplotlib.pyplot as plt

    n = max(len(s) for s in rows.values())
    fig, axes = plt.subplots(len(rows), n + 1, figsize=(size * (n + 1), size * 1.15 * len(rows)), squeeze=False)
    edit = (1 - keep_mask)[0, 0]
    for ax_row, (title, samples) in zip(axes, rows.items()):
        ax_row[0].imshow(((image[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1))
        ax_row[0].contour(edit.numpy(), levels=[0.5], colors="w", linewidths=1)
        ax_row[0].set_title(title, fontsize=8)
        for ax, x, said in zip(ax_row[1:], samples, seen(samples, edit, case)):
            ax.imshow(((x.permute(1, 2, 0) + 1) / 2).clamp(0, 1))
            ax.set_title(said, fontsize=8)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout()
    return fig

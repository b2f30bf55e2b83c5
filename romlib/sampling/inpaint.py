"""The two GLIDE stages of ROM: guided 64×64 inpainting, then 64→256 inpainting upsampling.

As the authors' code (``image_editor_glide.py``): base model with 100 respaced steps under a
guidance rule of :mod:`romlib.guidance`; upsampler with ``fast27`` steps, the target prompt,
the masked 256×256 image, initial noise × 0.997, and the 64×64 samples rounded to 8-bit levels;
the known region is forced through x̂_0 at every step in both stages.

Noise comes from one generator per sample (:func:`romlib.sampling.diffusion.sample_generators`), so sample
i is the same whatever the batch size, and every rule starts from the same seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from .diffusion import SpacedDiffusion, randn, sample_generators
from ..guidance.cfg import RULES, GuidedModel, known_region_fn
from .samplers import SAMPLER_SPECS, get_sampler

__all__ = ["BaseSetup", "prepare_base", "sample_base", "sample_base_progressive", "sample_upsample", "encode_prompts",
           "round_to_uint8_levels", "chunks", "auto_batch_size"]


def encode_prompts(model, tokenizer, texts: list[str]) -> list[dict]:
    """The text transformer run once on the distinct prompts; one one-row dict per text."""
    uniq = list(dict.fromkeys(texts))
    device = next(model.parameters()).device
    tokens, mask = tokenizer.batch(uniq, model.cfg.text_ctx, device=device)
    with torch.no_grad():
        emb = model.encode_text(tokens, mask)
    rows = {t: {k: (v[i:i + 1] if v is not None else None) for k, v in emb.items()} for i, t in enumerate(uniq)}
    return [rows[t] for t in texts]


def chunks(n: int, size: int | None) -> list[slice]:
    size = n if not size else max(1, int(size))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


@dataclass
class BaseSetup:
    """Everything one base-sampling run needs (notebooks use it to step through sampling)."""

    model_fn: Callable
    denoised_fn: Callable
    shape: tuple
    rule: str
    scale: float
    inpaint_image: torch.Tensor  # what the model sees (masked or original)
    info: dict = field(default_factory=dict)
    cond_fn: Callable | None = None  # classifier (CLIP) guidance, romlib.guidance.clip


def prepare_base(model, tokenizer, *, image: torch.Tensor, keep_mask: torch.Tensor, target: str, ref: str,
                 rule: str = "ccf", scale: float, record: bool = False) -> BaseSetup:
    """Build the guided model function for one 64×64 image.

    ``image``: [1, 3, 64, 64] in [-1, 1]; ``keep_mask``: [1, 1, 64, 64], 1 = keep, 0 = edit.
    """
    if rule not in RULES:
        raise ValueError(f"unknown guidance rule {rule!r}; expected one of {sorted(RULES)}")
    spec = RULES[rule]
    scale = float(scale)
    masked = image * keep_mask
    inpaint_image = image if spec.uses_original(target) else masked
    cond_emb, base_emb = encode_prompts(model, tokenizer, [target, spec.base_prompt(ref)])
    cond = {"text_emb": cond_emb, "inpaint_image": inpaint_image, "inpaint_mask": keep_mask}
    base = {"text_emb": base_emb, "inpaint_image": inpaint_image, "inpaint_mask": keep_mask}
    return BaseSetup(
        model_fn=GuidedModel(model, scale, cond, base, record=record),
        denoised_fn=known_region_fn(image, keep_mask),
        shape=tuple(image.shape[1:]),
        rule=rule,
        scale=scale,
        inpaint_image=inpaint_image,
        info={"base_prompt": spec.base_prompt(ref), "inpaint_input": "original" if spec.uses_original(target) else "masked"},
    )


def sample_base_progressive(setup: BaseSetup, diffusion: SpacedDiffusion, generators: list[torch.Generator],
                            device=None, progress: bool = False) -> Iterator[dict]:
    """Every step of one batch (one generator per sample), with the guidance branches when
    ``record=True`` was asked of :func:`prepare_base`."""
    device = device or setup.inpaint_image.device
    shape = (len(generators), *setup.shape)
    for out in diffusion.p_sample_loop_progressive(setup.model_fn, shape, denoised_fn=setup.denoised_fn,
                                                   cond_fn=setup.cond_fn, clip_denoised=True, device=device,
                                                   generator=generators, progress=progress):
        if getattr(setup.model_fn, "last", None):
            out.update(setup.model_fn.last)
        yield out


def sample_base(setup: BaseSetup, diffusion: SpacedDiffusion, *, samples: int, seed: int = 0,
                batch_size: int | None = None, device=None, progress=None, sampler: str = "ancestral",
                eta: float = 0.0) -> torch.Tensor:
    """B samples [B, 3, 64, 64] in [-1, 1], in micro-batches of ``batch_size``, with one of
    :data:`romlib.sampling.samplers.SAMPLERS` (``eta``: DDIM's η). Every sampler starts from the
    same x_T for a seed; CLIP guidance (``setup.cond_fn``) needs the ancestral sampler."""
    run = get_sampler(sampler)
    extra = {k: v for k, v in {"eta": eta}.items() if k in SAMPLER_SPECS[sampler].knobs}
    if setup.cond_fn is not None:
        if sampler != "ancestral":
            raise ValueError(f"sampler={sampler!r}: classifier (CLIP) guidance shifts the ancestral step's mean "
                             "(eq. 4); accepted: sampler='ancestral'")
        extra = {"cond_fn": setup.cond_fn}
    gens = sample_generators(seed, samples, stream=0)
    device = device or setup.inpaint_image.device
    out = []
    for sl in chunks(samples, batch_size):
        x_T = randn((len(gens[sl]), *setup.shape), gens[sl], device)
        out.append(run(setup.model_fn, x_T, diffusion, denoised_fn=setup.denoised_fn, clip_denoised=True,
                       generator=gens[sl], progress=bool(progress), **extra))
    return torch.cat(out)


def round_to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    """Round an image in [-1, 1] to the 256 levels of 8-bit pixels (the upsampler's ``low_res``)."""
    return ((x + 1) * 127.5).round() / 127.5 - 1


def sample_upsample(model, diffusion: SpacedDiffusion, tokenizer, *, low_res: torch.Tensor, image: torch.Tensor,
                    keep_mask: torch.Tensor, target: str, seed: int = 0, temperature: float = 0.997,
                    batch_size: int | None = None, progress=None, indices: list[int] | None = None) -> torch.Tensor:
    """Upsample B 64×64 samples to [B, 3, 256, 256] with GLIDE's inpainting upsampler.

    ``image`` [1, 3, 256, 256] and ``keep_mask`` [1, 1, 256, 256] (1 = keep) are the full-size
    input and mask; the model sees the masked image and the target prompt. ``indices``: which samples of the
    run ``low_res`` holds (default 0..B−1), so sample i gets its own noise however many are upsampled.
    """
    n = low_res.shape[0]
    device = low_res.device
    (text_emb,) = encode_prompts(model, tokenizer, [target])
    masked = image * keep_mask
    denoised_fn = known_region_fn(image, keep_mask)
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(indices) != n:
        raise ValueError(f"indices={indices} name {len(indices)} samples for {n} low-resolution images")
    every = sample_generators(seed, max(indices) + 1, stream=1)
    gens = [every[i] for i in indices]
    low_res = round_to_uint8_levels(low_res)
    out = []
    for sl in chunks(n, batch_size):
        b = len(gens[sl])
        kwargs = dict(text_emb={k: v.expand(b, *v.shape[1:]) for k, v in text_emb.items()},
                      inpaint_image=masked.expand(b, -1, -1, -1), inpaint_mask=keep_mask.expand(b, -1, -1, -1),
                      low_res=low_res[sl])
        shape = (b, *image.shape[1:])
        noise = randn(shape, gens[sl], device) * temperature
        out.append(diffusion.p_sample_loop(model, shape, noise=noise, clip_denoised=True, denoised_fn=denoised_fn,
                                           model_kwargs=kwargs, device=device, generator=gens[sl],
                                           progress=bool(progress)))
    return torch.cat(out)


def auto_batch_size(model, samples: int, *, branches: int = 1, device=None) -> int:
    """Largest micro-batch that should fit: on a GPU from free memory and an estimate of the
    UNet's activations per image (skip connections of every level, ×4 working space); on the
    CPU at most 8 images (speed is flat beyond that, memory is not)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if device.type != "cuda":
        return max(1, min(samples, 8))
    cfg = model.cfg
    size = cfg.image_size or 64
    elems = sum((cfg.num_res_blocks + 1) * cfg.model_channels * m * (size >> lvl) ** 2 for lvl, m in enumerate(cfg.channel_mult))
    per_image = elems * (2 if model.dtype == torch.float16 else 4) * 4 * branches
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(samples, int(0.8 * free / per_image)))

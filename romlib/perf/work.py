"""The work an edit does: forward passes of each UNet (one pass = one image row through the network) and the
TFLOP they add up to, counted with :func:`romlib.perf.forward_gflop` — reported by every ``EditResult.work`` and
estimated ahead of a run (:func:`estimate_work`: the preview budget, the T4 question of docs/performance.md).

A classifier-free base step is 2 passes per sample (the target and the base branch run as one batch of 2B rows);
an upsampler step 1 pass per upsampled sample. Text encoding, segmentation and ranking are not counted (they are
a few passes of smaller networks per edit). GLIDE-family UNets are counted in TFLOP (Blended Diffusion's
ADM and the noised CLIP are listed as uncounted). On a latent model (``sd``, ``tiny-sd``) the UNet is ``"base"``
(its one batched call per step runs both branches: 2 passes per sample, as GLIDE's), and the VAE's encoder (once
per edit: the conditioning image) and decoder (once per sample) are ``"vae-encode"`` and ``"vae-decode"``,
each counted with diffusers' own classes on the meta device (:func:`latent_gflop`).
"""
from __future__ import annotations

from contextlib import contextmanager

from ..models.glide import GlideConfig
from .measure import forward_gflop

__all__ = ["count_passes", "work_report", "estimate_work", "gflop_per_pass", "latent_parts", "latent_gflop"]


_GFLOP: dict = {}  # repr(config) -> GFLOP per pass (counted once per process, on the meta device)


def _gflop(cfg, size: int, low_res: bool) -> float:
    key = (repr(cfg), size, low_res)
    if key not in _GFLOP:
        _GFLOP[key] = forward_gflop(cfg, size, low_res=low_res)
    return _GFLOP[key]


def gflop_per_pass(model) -> float | None:
    """GFLOP of one pass of one image through a GLIDE UNet (its config suffices), ``None`` for other networks."""
    cfg = getattr(model, "cfg", model)
    if not isinstance(cfg, GlideConfig):
        return None
    return _gflop(cfg, cfg.image_size or 64, bool(cfg.super_res))


def latent_parts(inpainter) -> dict:
    """The networks of a :class:`romlib.models.sd.LatentInpainter` whose passes an edit counts:
    ``{"base": unet, "vae-encode": vae.encoder, "vae-decode": vae.decoder}``."""
    return {"base": inpainter.unet, "vae-encode": inpainter.vae.encoder, "vae-decode": inpainter.vae.decoder}


def latent_gflop(inpainter) -> dict:
    """GFLOP of one pass of one image through each of :func:`latent_parts` (UNet at the latent grid with the
    tokenizer's text length, VAE encoder at the pixel frame, decoder at the latent grid), counted once per process
    on copies built on the meta device from the models' configs (free)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    unet, vae = inpainter.unet, inpainter.vae
    h, S = inpainter.cfg.image_size, inpainter.cfg.frame_size
    length = int(getattr(inpainter.tokenizer, "model_max_length", 77))
    key = ("latent", repr(dict(unet.config)), repr(dict(vae.config)), length)
    if key not in _GFLOP:
        with torch.device("meta"):
            u, v = UNet2DConditionModel.from_config(unet.config), AutoencoderKL.from_config(vae.config)
        meta = lambda *shape: torch.zeros(*shape, device="meta")  # noqa: E731
        calls = {"base": lambda: u(meta(1, unet.config.in_channels, h, h), meta(1),
                                   encoder_hidden_states=meta(1, length, unet.config.cross_attention_dim)),
                 "vae-encode": lambda: v.encoder(meta(1, vae.config.in_channels, S, S)),
                 "vae-decode": lambda: v.decoder(meta(1, vae.config.latent_channels, h, h))}
        out = {}
        for name, call in calls.items():
            with FlopCounterMode(display=False) as fc:
                call()
            out[name] = fc.get_total_flops() / 1e9
        _GFLOP[key] = out
    return dict(_GFLOP[key])


@contextmanager
def count_passes(models: dict):
    """Count the image rows each of ``models`` ({name: nn.Module}) sees while the block runs; yields the
    ``{name: passes}`` dict it fills (a forward pre-hook per model, removed on exit)."""
    counts = {name: 0 for name in models}
    handles = []
    for name, m in models.items():
        if m is None or not hasattr(m, "register_forward_pre_hook"):
            continue

        def hook(module, args, kwargs, name=name):
            x = args[0] if args else kwargs.get("x")
            counts[name] += int(x.shape[0]) if x is not None else 1
        handles.append(m.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def work_report(passes: dict, models: dict, gflop: dict | None = None) -> dict:
    """``{"passes": {model: n}, "gflop_per_pass": {model: g}, "tflop": total, "uncounted": [models without a
    FLOP count]}`` from the counted passes; ``gflop``: GFLOP per pass already known by name (e.g.
    :func:`latent_gflop`), else :func:`gflop_per_pass` of ``models[name]``."""
    gflop = gflop or {}
    per = {name: gflop[name] if name in gflop else gflop_per_pass(models.get(name)) for name in passes}
    uncounted = sorted(n for n, g in per.items() if g is None and passes[n])
    tflop = sum(passes[n] * g for n, g in per.items() if g is not None) / 1e3
    return {"passes": dict(passes), "gflop_per_pass": {n: round(g, 4) for n, g in per.items() if g is not None},
            "tflop": round(tflop, 4), "uncounted": uncounted}


def estimate_work(base, upsampler, *, samples: int, steps: int, upsample_steps: int = 0, upsampled: int | None = None,
                  branches: int = 2) -> dict:
    """The work of one edit before running it: ``steps × branches × samples`` base passes and
    ``upsample_steps × upsampled`` upsampler passes (``upsampled`` defaults to ``samples``), in the form of
    :func:`work_report`. ``base``/``upsampler``: the UNets or their configs (``upsampler=None``: none); ``base`` may
    be a latent model (:class:`romlib.models.sd.LatentInpainter`): its UNet's passes, one VAE encode and
    ``samples`` VAE decodes, as an edit counts them."""
    upsampled = samples if upsampled is None else upsampled
    passes = {"base": steps * branches * samples}
    if hasattr(base, "unet") and hasattr(base, "vae"):  # a latent model: its UNet and VAE (no upsampler)
        if upsampler is not None:
            raise ValueError(f"upsampler={type(upsampler).__name__} with a latent model; accepted: None (a latent "
                             "backend has no upsampler)")
        return work_report({**passes, "vae-encode": 1, "vae-decode": samples}, latent_parts(base),
                           gflop=latent_gflop(base))
    models = {"base": base}
    if upsampler is not None:
        passes["upsample"] = upsample_steps * upsampled
        models["upsample"] = upsampler
    return work_report(passes, models)

"""Timing a glide-text2im checkout's own sampling loop beside romlib's (``romlib bench --reference PATH``);
the checkout is imported from the user's path at run time only, never a dependency."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch

from ..io import load_mask, to_tensor
from ..models.glide import official_config
from ..models.tiny import tiny_glide_config
from .measure import BenchRow, _bench_input, _peak, _peak_reset, _sync, forward_gflop

log = logging.getLogger("romlib.perf")

def import_reference(path: str | os.PathLike):
    """``glide_text2im.model_creation`` from a glide-text2im checkout at ``path`` (imported from
    there at run time; romlib neither ships nor depends on it). Raises ``ValueError`` naming what
    is missing when ``path`` is not such a checkout."""
    import importlib

    root = Path(path).expanduser().resolve()
    needed = ("glide_text2im/model_creation.py", "glide_text2im/gaussian_diffusion.py", "glide_text2im/text2im_model.py")
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise ValueError(f"--reference {str(path)!r} is not a glide-text2im checkout: {', '.join(missing)} not found "
                         "under it (git clone https://github.com/openai/glide-text2im and pass the clone's folder)")
    loaded = sys.modules.get("glide_text2im")
    if loaded is not None and not str(Path(loaded.__file__).resolve()).startswith(str(root)):
        raise ValueError(f"another glide_text2im is already imported from {loaded.__file__}; run the bench in a fresh "
                         f"process to time the checkout at {root}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("glide_text2im.model_creation")


def _reference_options(mc, c, respacing: str, fp16: bool, tiny: bool, upsampler: bool) -> dict:
    opts = mc.model_and_diffusion_defaults_upsampler() if upsampler else mc.model_and_diffusion_defaults()
    opts.update(inpaint=True, use_fp16=fp16, timestep_respacing=respacing)
    if tiny:  # the same architecture at the sizes of romlib's tiny models (c: their GlideConfig)
        size = c.image_size
        opts.update(num_channels=c.model_channels, num_res_blocks=c.num_res_blocks,
                    channel_mult=",".join(str(m) for m in c.channel_mult),
                    attention_resolutions=",".join(str(size // d) for d in c.attention_resolutions),
                    num_head_channels=c.num_head_channels, xf_width=c.xf_width, xf_layers=c.xf_layers,
                    xf_heads=c.xf_heads, text_ctx=c.text_ctx)
    return opts


def run_reference(path, device, *, batches=(4, 24), dtype="fp16", tiny=False, steps=100, upsample_steps="fast27",
                  warmup_steps: int = 3, scale: float = 5.0) -> list[BenchRow]:
    """Time glide-text2im's own inpainting loop (its models with random weights, its
    ``p_sample_loop``, classifier-free guidance with both halves in one batch, known pixels forced
    through x̂_0, the upsampler at temperature 0.997) on the same image and mask."""
    import torch.nn.functional as F



    mc = import_reference(path)
    device = torch.device(device)
    fp16 = dtype == "fp16"
    cfgs = {"base": tiny_glide_config("base-inpaint") if tiny else official_config("base-inpaint"),
            "up": tiny_glide_config("upsample-inpaint") if tiny else official_config("upsample-inpaint")}
    built = {}
    for kind, respacing in (("base", str(steps)), ("up", str(upsample_steps))):
        opts = _reference_options(mc, cfgs[kind], respacing, fp16, tiny, kind == "up")
        model, diffusion = mc.create_model_and_diffusion(**opts)
        model.eval().requires_grad_(False)
        if fp16:
            model.convert_to_fp16()
        warm = mc.create_gaussian_diffusion(steps=opts["diffusion_steps"], noise_schedule=opts["noise_schedule"],
                                            timestep_respacing=str(warmup_steps))
        built[kind] = (model.to(device), {"timed": diffusion, "warm-up": warm}, opts)

    image, mask_img = _bench_input(256)
    img256 = to_tensor(image, 256).to(device)
    keep256 = 1 - F.interpolate(load_mask(mask_img, image.size)[None, None].float(), (256, 256), mode="nearest").to(device)
    img64 = F.interpolate(img256, (64, 64), mode="bilinear", antialias=True)
    keep64 = F.interpolate(keep256, (64, 64), mode="nearest")
    gf_base = forward_gflop(cfgs["base"], 64)
    gf_up = forward_gflop(cfgs["up"], 256, low_res=True)

    def edit(b, which):
        (model, diffusions, opts), (model_up, diffusions_up, opts_up) = built["base"], built["up"]
        diffusion, diffusion_up = diffusions[which], diffusions_up[which]
        tok = model.tokenizer
        times = {}

        def text(prompt, ctx, n):
            ids, m = tok.padded_tokens_and_mask(tok.encode(prompt), ctx)
            return torch.tensor([ids] * n, device=device), torch.tensor([m] * n, dtype=torch.bool, device=device)

        t_c, m_c = text("a blue truck", opts["text_ctx"], b)
        t_u, m_u = text("", opts["text_ctx"], b)
        kw = dict(tokens=torch.cat([t_c, t_u]), mask=torch.cat([m_c, m_u]),
                  inpaint_image=(img64 * keep64).repeat(2 * b, 1, 1, 1), inpaint_mask=keep64.repeat(2 * b, 1, 1, 1))

        def guided(x_t, ts, **k):  # classifier-free guidance, both halves in one batch
            x = x_t[: len(x_t) // 2]
            out = model(torch.cat([x, x]), ts, **k)
            eps_c, eps_u = out[:, :3].chunk(2)
            eps = eps_u + scale * (eps_c - eps_u)
            return torch.cat([torch.cat([eps, eps]), out[:, 3:]], dim=1)

        def keep_known(k):
            return lambda x0: x0 * (1 - k["inpaint_mask"]) + k["inpaint_image"] * k["inpaint_mask"]

        _sync(device)
        t0 = time.perf_counter()
        samples = diffusion.p_sample_loop(guided, (2 * b, 3, 64, 64), device=device, clip_denoised=True, progress=False,
                                          model_kwargs=kw, cond_fn=None, denoised_fn=keep_known(kw))[:b]
        _sync(device)
        times["base"] = time.perf_counter() - t0
        t_up, m_up = text("a blue truck", opts_up["text_ctx"], b)
        kw_up = dict(low_res=((samples + 1) * 127.5).round() / 127.5 - 1, tokens=t_up, mask=m_up,
                     inpaint_image=(img256 * keep256).repeat(b, 1, 1, 1), inpaint_mask=keep256.repeat(b, 1, 1, 1))
        shape = (b, 3, 256, 256)
        t0 = time.perf_counter()
        diffusion_up.p_sample_loop(model_up, shape, noise=torch.randn(shape, device=device) * 0.997, device=device,
                                   clip_denoised=True, progress=False, model_kwargs=kw_up, cond_fn=None,
                                   denoised_fn=keep_known(kw_up))
        _sync(device)
        times["upsample"] = time.perf_counter() - t0
        return times, len(diffusion.use_timesteps), len(diffusion_up.use_timesteps)

    rows = []
    for b in batches:
        t0 = time.perf_counter()
        with torch.inference_mode():
            edit(b, "warm-up")
        warmup = time.perf_counter() - t0
        _peak_reset(device)
        with torch.inference_mode():
            times, n_base, n_up = edit(b, "timed")
        rows.append(BenchRow("reference", dtype, b, n_base, n_up, times["base"], times["upsample"], None,
                             times["base"] + times["upsample"], warmup, None, _peak(device),
                             gf_base * 2 * b * n_base + gf_up * b * n_up, "glide-text2im loop"))
    return rows

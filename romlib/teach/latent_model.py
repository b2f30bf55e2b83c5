"""Notebook 07's helpers: the paper's guidance on a latent model (Stable Diffusion 1.5 inpainting).

* :func:`latent_backend` — ``"sd"`` on a GPU whose files are reachable, else ``"world-latent"`` (the embedded
  world's latent model: SD's classes, a small VAE and UNet trained on the world, :mod:`romlib.world.latent`);
* :func:`vae_figure` — what the VAE keeps of a frame (the round trip, its error, the latents themselves);
* :func:`pixel_vs_latent` — one case, mask and seeds on the world's pixel model and on its latent model;
* :func:`anatomy` — what a pixel model and a latent model denoise, in numbers;
* :func:`conformance` — romlib's loop against diffusers' ``StableDiffusionInpaintPipeline`` on the same
  model, seeds and scheduler (CF: the plain pipeline; CCF: ``negative_prompt=ref`` and
  ``masked_image_latents`` of the original image);
* :func:`example` — the COCO photo of the two cats for the real model, else the backend's example;
* :data:`T4_ESTIMATE` — time and memory of one edit on a T4, *estimated* (no T4 was measured).
"""
from __future__ import annotations

import numpy as np
import torch

from ..backends import choose
from ..guidance.cfg import guided_eps
from ..guidance.methods import METHODS
from ..models.sd import make_scheduler, tiny_inpainter
from ..sampling.diffusion import randn, sample_generators
from ..sampling.latent import prepare_latent, sample_latent
from ..specs import backend_spec
from .nb import chosen_case, example as nb_example, pipeline

__all__ = ["latent_backend", "OFFLINE_LATENT", "vae_figure", "pixel_vs_latent", "comparison", "anatomy", "conformance", "example", "guidance_lines", "T4_ESTIMATE", "gpu_numbers",
           "coincide_at_scale", "comparison_setup", "explorer_case", "RULES4"]

#: CF, CCF and CCF's two changes taken one at a time (the order of notebook 04)
RULES4 = ("cf", "ccf-direction", "cf-original", "ccf")

#: an estimate, not a measurement: SD 1.5 fp16 at 512x512 on a T4 runs about 6 UNet evaluations of batch 2 per
#: second with PyTorch's scaled-dot-product attention; an edit of B samples at 25 DPM-Solver++ steps makes
#: 25 evaluations of batch 2B (both branches), then B VAE decodes and B CLIP crops
T4_ESTIMATE = ("about 5 s per sample at 25 DPM-Solver++ steps (B = 4: about 20-25 s with decoding and ranking); "
               "peak GPU memory about 4-5 GB in fp16 (UNet 1.7 GB, VAE 0.17 GB, text encoder 0.25 GB, CLIPSeg and CLIP "
               "ViT-B/16 about 0.5 GB, activations of a batch of 8); estimated, not measured on a T4")


#: the latent model notebook 07 runs where Stable Diffusion is not at hand (offline, CPU)
OFFLINE_LATENT = "world-latent"


def latent_backend() -> str:
    """``$ROMLIB_LATENT_BACKEND`` if set; else ``"sd"`` on a GPU when every sd file is cached or a mirror is set
    (or the network is allowed), else :data:`OFFLINE_LATENT`."""
    return choose("sd", OFFLINE_LATENT, env="ROMLIB_LATENT_BACKEND", probe=False)


def _on_world(pipe) -> bool:
    """Whether ``pipe``'s backend is one of the embedded world's (its spec's example is the world's)."""
    return backend_spec(pipe.backend.name).example == "world"


def _world_case():
    """Notebook 04's first example (a shape target; the referring text silent on the colour)."""
    from ..world.guidestudy import example_case

    return example_case("shape", ref_names_colour=False)


@torch.no_grad()
def vae_figure(pipe, image=None):
    """What a latent pipeline's VAE keeps of a frame: the frame, its round trip (encode to the latents' mean,
    decode), the error ×4, and the latent channels the UNet denoises. ``image``: uint8 [S, S, 3] at the model's frame
    (default: notebook 04's example scene on the world's latent model, else the backend's example resized to the
    frame). Returns ``(figure, numbers)``: PSNR of the round trip over the frame (and over the world case's object),
    and the values per frame in pixels and in latents."""
    import matplotlib.pyplot as plt
    import numpy as np

    model = pipe.backend.base_model
    S = model.cfg.frame_size
    case = _world_case() if image is None and _on_world(pipe) else None
    if image is None:
        image = case.image if case is not None else np.asarray(example(pipe)[0].convert("RGB").resize((S, S)))
    image = np.asarray(image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    z = model.encode_image(x.to(next(model.vae.parameters()).device))
    rec = model.decode(z).cpu()
    err = (rec - x)[0].pow(2).mean(0)  # per-pixel MSE in [-1, 1]
    psnr = lambda m: float(10 * torch.log10(4 / m.clamp_min(1e-10)))  # noqa: E731
    numbers = {"psnr_db": round(psnr(err.mean()), 1), "values_pixels": x[0].numel(), "values_latents": z[0].numel()}
    if case is not None:
        numbers["object_psnr_db"] = round(psnr(err[torch.from_numpy(case.mask)].mean()), 1)
    c = min(4, z.shape[1])  # the first four channels (of 8 on the world's latent model)
    fig, ax = plt.subplots(1, 3 + c, figsize=(2.1 * (3 + c), 2.5))
    ax[0].imshow(image, interpolation="nearest")
    ax[0].set_title(f"frame {image.shape[0]}x{image.shape[1]}x3\n{numbers['values_pixels']} values", fontsize=8)
    ax[1].imshow(((rec[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).byte().numpy(), interpolation="nearest")
    ax[1].set_title(f"decode(encode(frame))\nPSNR {numbers['psnr_db']} dB", fontsize=8)
    ax[2].imshow((rec - x)[0].abs().mean(0).mul(4).clamp(0, 1).numpy(), cmap="magma", vmin=0, vmax=1,
                 interpolation="nearest")
    ax[2].set_title("|error| x4\n(bright: lost)", fontsize=8)
    for k in range(c):
        ax[3 + k].imshow(z[0, k].cpu().numpy(), cmap="coolwarm", interpolation="nearest")
        ax[3 + k].set_title(f"latent channel {k} of {z.shape[1]}\n{z.shape[-2]}x{z.shape[-1]}", fontsize=8)
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    return fig, numbers


def pixel_vs_latent(pixel_pipe, latent_pipe, *, rule: str = "ccf", scale: float = 3.0, case=None):
    """One case (default: notebook 04's first example), its true mask dilated by 3, the same seeds, ``rule`` at
    ``scale`` on the world's pixel model (32 px base + upsampler) and on its latent model, three rows: the pixel
    model's samples; the same samples sent through the latent model's VAE (``decode(encode(·))``: what the VAE alone
    loses); the latent model's samples as decoded (the known region included) — the first and last titled with the
    world oracle's verdicts. Returns ``(figure, rows)``: per model its seconds, steps, values denoised per step and
    verdicts (yes/no/? counted by the caller)."""
    import time

    import matplotlib.pyplot as plt

    from ..io import to_pil
    from ..world.bench import edit_case, judge_edit
    from ..world.guidestudy import DILATION, SAMPLES, SEED, mark

    case = case or _world_case()
    vae_model = latent_pipe.backend.base_model
    rows, frames = [], {}
    for pipe, what in ((pixel_pipe, "pixel"), (latent_pipe, "latent")):
        t0 = time.perf_counter()
        r = edit_case(pipe, case, rule=rule, scale=scale, samples=SAMPLES, seed=SEED, dilation=DILATION)
        seconds = time.perf_counter() - t0
        recs = judge_edit(pipe, r, case)
        order = torch.empty(len(r.order), dtype=torch.long)
        order[torch.tensor(r.order)] = torch.arange(len(r.order))
        frames[what] = r.images[order]  # sampling order
        b = pipe.backend
        steps = str(r.settings.get("steps"))
        if b.upsampler is not None:
            steps += f" + {b.upsample_steps} (upsampler)"
        cfg = b.base_model.cfg
        values = (f"{3 * cfg.image_size ** 2} at {cfg.image_size}x{cfg.image_size}, then {3 * cfg.image_size ** 2 * 4} "
                  f"(upsampler)" if b.upsampler is not None else f"{cfg.latent_channels * cfg.image_size ** 2}")
        rows.append({"label": f"{what} ({b.name}) {rule}", "seconds": round(seconds, 2), "steps": steps,
                     "values per step": values, "samples": [{"reached": x["success"], "colour": x["colour"],
                                                             "shape": x["shape"]} for x in recs]})
    with torch.no_grad():
        z = vae_model.encode_image(frames["pixel"].to(next(vae_model.vae.parameters()).device))
        through = vae_model.decode(z).cpu()
    fig, axes = plt.subplots(3, SAMPLES, figsize=(2.05 * SAMPLES, 2.6 * 3), squeeze=False)
    titled = {0: rows[0], 2: rows[1]}
    for k, (imgs, label) in enumerate(((frames["pixel"], "pixel"), (through, "pixel through the VAE"),
                                       (frames["latent"], "latent (decoded)"))):
        for s in range(SAMPLES):
            ax = axes[k, s]
            ax.imshow(to_pil(imgs[s]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k in titled:
                v = titled[k]["samples"][s]
                ax.set_title(f"{label}, sample {s}\nreached {mark(v['reached'])}: {v['colour'] or '?'} {v['shape'] or '?'}",
                             fontsize=7.5)
            else:
                err = float((imgs[s] - frames["pixel"][s]).pow(2).mean())
                ax.set_title(f"{label}, sample {s}\nPSNR {10 * np.log10(4 / max(err, 1e-10)):.1f} dB", fontsize=7.5)
    fig.suptitle(f"{case.ref!r} -> {case.target!r} (case {case.index}), {rule} s = {scale:g}, the same seeds and mask",
                 fontsize=9)
    fig.tight_layout()
    return fig, rows


def anatomy(model, pixel: str = "glide") -> dict:
    """What the latent model denoises, against a pixel model's (``pixel``: "glide", or "world" for the embedded
    world's pair): sizes and the UNets' input channels."""
    cfg = model.cfg
    spec = backend_spec(pixel)
    b, f = spec.base_frame, spec.frame
    return {"frame (pixels)": f"{cfg.frame_size}x{cfg.frame_size}x3",
            "latents z_t": f"{cfg.latent_channels}x{cfg.image_size}x{cfg.image_size}",
            "values per sample": cfg.latent_channels * cfg.image_size ** 2,
            "pixel values per sample": 3 * cfg.frame_size ** 2,
            "UNet input channels": f"{model.unet.config.in_channels} = {cfg.latent_channels} (z_t) + 1 (mask) + "
                                   f"{cfg.latent_channels} (image latents)",
            f"{pixel} base (pixels)": f"{b}x{b}x3 = {3 * b * b} values, input 3 (x_t) + 3 (image) + 1 (mask)",
            f"{pixel} upsampler": f"{f}x{f}x3 = {3 * f * f} values"}


def guidance_lines() -> str:
    """The guidance line of romlib (:func:`romlib.guidance.cfg.guided_eps`) and of diffusers' inpainting
    pipeline, as their sources say it."""
    import inspect


    ours = [ln.strip() for ln in inspect.getsource(guided_eps).splitlines() if ln.strip().startswith("return")][0]
    theirs = "noise_pred = noise_pred_uncond + self.guidance_scale * (noise_pred_text - noise_pred_uncond)"
    try:
        from diffusers import StableDiffusionInpaintPipeline

        src = inspect.getsource(StableDiffusionInpaintPipeline.__call__)
        theirs = next(ln.strip() for ln in src.splitlines() if "noise_pred_uncond + " in ln)
    except (ImportError, StopIteration, OSError):
        pass
    return f"romlib  : {ours}\ndiffusers: {theirs}"


@torch.no_grad()
def conformance(model=None, *, rule: str = "cf", steps: str = "ddim6", scale: float = 7.5, seed: int = 0,
                samples: int = 2, target: str = "a red ball", ref: str = "a blue cube") -> dict:
    """Run ``rule`` (``"cf"`` or ``"ccf"``) with romlib's loop and with diffusers' pipeline on ``model``
    (default: the tiny random SD), same seeds, scheduler and scale; returns ``{"max_abs_diff", "max_abs"}``
    of the final latents. CCF is the pipeline with ``negative_prompt=ref`` and ``masked_image_latents`` of
    the *original* image, drawn from the VAE posterior with sample 0's generator after its noise, as romlib."""
    from diffusers import StableDiffusionInpaintPipeline


    if rule not in ("cf", "ccf"):
        raise ValueError(f"rule={rule!r}: the pipeline has a counterpart for 'cf' and 'ccf' only")
    model = model if model is not None else tiny_inpainter()
    S, h = model.cfg.frame_size, model.cfg.image_size
    g = torch.Generator().manual_seed(1)
    image01 = torch.rand(1, 3, S, S, generator=g)  # the pipeline takes [0, 1] and maps it to [-1, 1] as we do
    image = image01 * 2 - 1
    keep = torch.ones(1, 1, S, S)
    keep[..., S // 4: 3 * S // 4, S // 8: S // 2] = 0
    setup = prepare_latent(model, image=image, keep_mask=keep, target=target, ref=ref, rule=rule, scale=scale)
    ours = sample_latent(setup, steps, samples=samples, seed=seed, batch_size=samples, output="latents")
    extra = {}
    if rule == "ccf":
        g0 = sample_generators(seed, 1)[0]
        randn((model.cfg.latent_channels, h, h), g0, "cpu")
        extra = {"negative_prompt": ref, "masked_image_latents": model.encode_image(image, g0)}
    pipe = StableDiffusionInpaintPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                          unet=model.unet, scheduler=make_scheduler(model.scheduler_config, steps),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt=target, image=image01, mask_image=1 - keep, height=S, width=S,
                  num_inference_steps=int(str(steps).removeprefix("ddim")), guidance_scale=scale,
                  num_images_per_prompt=samples, generator=sample_generators(seed, samples), output_type="latent",
                  **extra).images
    return {"max_abs_diff": float((ours - theirs).abs().max()), "max_abs": float(theirs.abs().max())}


def example(pipe, index: int = 0) -> tuple:
    """``(image, ref, target)``: the two cats of COCO #39769 for the real models (sd, glide), else the backend's."""
    return chosen_case(pipe, "colour") if backend_spec(pipe.backend.name).oracle else nb_example(pipe, index)


def comparison_setup(latent: str) -> tuple:
    """Notebook 07's comparison: ``(pipe, (image, ref, target), scale, segmenters)``. A trained latent model (``sd``,
    ``world-latent``): its own pipeline and example, CF's scale for every rule, each of its segmenters (sd: CLIPSeg's
    and MDETR's masks); a random one (``tiny-sd``): its stand-in's pipeline, notebook 04's colour-only case, CCF's
    scale, the stand-in's own segmenter."""
    spec = backend_spec(latent)
    if spec.stand_in is None:  # a trained model: the same scale for every rule, every segmenter it names
        pipe = pipeline(spec.name)
        return pipe, example(pipe), METHODS["cf"].scale(pipe.backend), (spec.segmenter, *spec.segmenters)
    pipe = pipeline(spec.stand_in)
    return pipe, example(pipe), METHODS["ccf"].scale(pipe.backend), (None,)


def comparison(pipe, image, ref: str, target: str, scale: float, segmenters, *, progress: bool = False):
    """The four rules of :data:`RULES4` on one frame, mask and seeds: ``[(figure, lines)]``. On the world's latent
    model one figure, notebook 04's first example with its true mask, each rule at its own tuned scale (``scale`` is
    not read), every sample titled with the world oracle's verdicts (:func:`romlib.world.guidestudy.rows_figure`),
    and a line per rule counting them; otherwise one
    :meth:`~romlib.pipeline.ROMPipeline.compare` figure per segmenter, a line of ranking distances per rule (and on
    a GPU the measured time and memory)."""
    if _on_world(pipe):
        from ..world.guidestudy import rows_figure

        rows = [(pipe, g, METHODS[g].scale(pipe.backend), g) for g in RULES4]  # each rule at its tuned scale
        fig, rows = rows_figure(_world_case(), rows)
        def counts(values):
            values = list(values)
            return f"yes {values.count(True)}, no {values.count(False)}, ? {values.count(None)}"

        lines = [f"{r['rule']:14s} s = {r['scale']:g}: reached {counts(v['reached'] for v in r['samples'])}; colour kept "
                 f"{counts(v.get('kept_colour') for v in r['samples'])} ({r['seconds']:.1f} s; the first row's time "
                 f"includes warm-up)" for r in rows]
        return [(fig, lines)]
    out = []
    for seg in segmenters:  # sd: CLIPSeg's mask, then MDETR's; a stand-in: its own segmenter
        results, fig = pipe.compare(image, ref, target, guidances=RULES4, samples=4, scale=scale, segmenter=seg,
                                    progress=progress)
        lines = [f"{pipe.backend.name} ({seg or 'own'} mask): {ref!r} -> {target!r}, s = {scale:g}"]
        lines += [f"{g:14s} scores {[round(x, 3) for x in r.scores]}" for g, r in results.items()]
        if torch.cuda.is_available():
            lines += gpu_numbers(results)  # measured on this GPU
        out.append((fig, lines))
    return out


def explorer_case(pipe, example: tuple) -> tuple:
    """``(image, ref, target)`` the explorer opens on: notebook 04's first example on the embedded world's latent
    model (the comparison's case), else ``example`` (the backend's own, e.g. the cats)."""
    if _on_world(pipe):
        case = _world_case()
        return case.pil(), case.ref, case.target
    return example


def gpu_numbers(results: dict) -> list[str]:
    """One line per method: seconds of sampling and the peak GPU memory so far (measured on this machine)."""
    peak = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else float("nan")
    return [f"{g:14s} sampling {r.timings.get('sampling', float('nan')):.1f} s for B = {r.settings['samples']}, "
            f"peak GPU memory {peak:.1f} GB" for g, r in results.items()]


@torch.no_grad()
def coincide_at_scale(model, scale: float = 1.0, *, steps: str = "6", seed: int = 0) -> list[tuple[str, str]]:
    """The pairs of :data:`RULES4` whose samples agree (within fp32 rounding) at guidance ``scale`` on the same
    frame, mask and seeds (notebook 07's exercise: what does the scale multiply?)."""
    S = model.cfg.frame_size
    dev = next(model.unet.parameters()).device
    g = torch.Generator().manual_seed(2)
    image = (torch.rand(1, 3, S, S, generator=g) * 2 - 1).to(dev)
    keep = torch.ones(1, 1, S, S, device=dev)
    keep[..., S // 4: 3 * S // 4, S // 4: 3 * S // 4] = 0
    out = {r: sample_latent(prepare_latent(model, image=image, keep_mask=keep, target="a red ball", ref="a blue cube",
                                           rule=r, scale=scale), steps, samples=1, seed=seed, output="latents").float()
           for r in RULES4}
    top = max(v.abs().max().item() for v in out.values())
    tol = 1e-4 if model.dtype == torch.float32 else 1e-2  # fp16 rounds ε_base + (ε_cond − ε_base) to ~1e-3
    return [(a, b) for i, a in enumerate(RULES4) for b in RULES4[i + 1:]
            if (out[a] - out[b]).abs().max().item() <= tol * top]

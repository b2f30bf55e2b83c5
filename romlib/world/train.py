"""Training the embedded world's four models from scratch (one command, resumable).

=============  ===============================================================================================
``base``       32×32 GLIDE inpainting UNet (:func:`romlib.world.models.base_config`), GLIDE's hybrid loss
               (:func:`romlib.shapes.train.hybrid_loss`), weight 1 in the hole and 0.1 outside, cosine
               schedule; input under the hole: the data's ``source`` (a counterfactual source or the
               blanked image), so the model reads the source as CCF needs.
``upsampler``  32→64 inpainting upsampler (:func:`romlib.world.models.upsampler_config`, no attention),
               linear schedule as GLIDE's upsampler, trained on **random 32×32 crops** of the 64×64
               example (biased to hold the hole) with the matching crop of the upsampled low-res
               input: fully convolutional, so it samples at 64×64
               (:func:`romlib.sampling.inpaint.sample_upsample`). The low-res input is the 64×64 image
               area-downsampled to 32×32, blurred (σ ∈ [0.4, 0.8] px, half the examples) and noised
               (σ ≤ 0.02) a little, then rounded to 8-bit levels as at sampling; the inpainting input
               is the 64×64 image under the keep mask (the upsampler masks it, as sampling does).
``segmenter``  :class:`romlib.world.segmenter.WorldSegmenterNet`, :func:`~romlib.world.segmenter.segmenter_loss`.
``ranker``     :class:`romlib.world.models.WorldRanker`, contrastive (InfoNCE both ways; equal texts
               in a batch are all positives).
=============  ===============================================================================================

Every model: AdamW, linear warm-up then cosine decay (:func:`romlib.training.lr_at`), EMA weights
shipped in float16, a tqdm bar, a loss CSV and PNG curve, a checkpoint (model, EMA, optimiser, step,
elapsed time, numpy and torch RNG states) every ``--save-every`` steps, so that ``--resume``
continues exactly as an uninterrupted run would; ``--minutes`` caps each model's training time.
A folder that holds a run is refused unless ``--resume`` or ``--overwrite`` (as ``shapes-train``).

The step-time study and the chosen sizes: docs/world_training.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..interrupts import deferred
from ..sampling.diffusion import GaussianDiffusion, get_named_beta_schedule
from ..sampling.inpaint import round_to_uint8_levels
from ..shapes.backend import read_weights
from ..shapes.measure import wilson
from ..training import (DiffusionArrays, atomic_write, check_run_folder, checkpoint_step, half_state, hybrid_loss, lr_at,
                        plot_loss_curve, save_weights, write_csv)
from . import data
from . import models as M
from .recipes import MODELS, RECIPES, RUN_FILES, TRAIN_COMMAND, Recipe, add_train_args
from .segmenter import WorldSegmenter, WorldSegmenterNet, mask_iou, segmenter_loss

__all__ = ["MODELS", "RUN_FILES", "Recipe", "RECIPES", "train_model", "train", "Setup", "SETUPS", "setup_base",
           "setup_upsampler", "setup_segmenter", "setup_ranker", "evaluate_segmenter", "summarise_ious",
           "evaluate_ranker", "upsampler_inputs", "crop_check", "add_train_args", "train_command", "describe_run", "step_time", "main",
           "write_untrained"]

log = logging.getLogger(__name__)

_CHECKPOINT_KEYS = ("model", "ema", "opt", "step", "elapsed", "rows", "rng", "torch_rng")


def _default_batches():
    """The module the trainers draw their batches from (``inpaint_batch``, ``segment_batch``,
    ``rank_batch``, ``tokenizer``): :mod:`romlib.world.data`; tests may pass a stand-in."""
    return data


# ----------------------------------------------------------------------------- the loop
def train_model(name: str, out_dir: str | Path, model: torch.nn.Module, loss_fn: Callable, save: Callable, *,
                recipe: Recipe, steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
                minutes: float | None = None, seed: int = 0, resume: bool = False, save_every: int = 250,
                pause_at: int | None = None, device="cpu", progress: bool = True, meta: dict | None = None) -> Path:
    """The shared training loop. ``loss_fn(model, rng, batch_size) -> dict`` (``"loss"`` a tensor,
    other entries logged); ``save(path, ema_model, meta)`` writes the weight file.

    Stops at ``steps``, after ``minutes`` of training (time before a resume counts; ``None``: the
    recipe's cap, ``0`` or ``inf``: none), or at
    ``pause_at`` (a checkpoint is written; ``resume=True`` goes on — for tests and chunked runs).
    The learning-rate schedule follows whichever of steps and minutes is further along.
    Returns the weight file's path (``None`` when paused).
    """
    from romlib.progress import tqdm

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(MODELS)}")
    steps = recipe.steps if steps is None else int(steps)
    batch_size = recipe.batch_size if batch_size is None else int(batch_size)
    lr = recipe.lr if lr is None else float(lr)
    minutes = recipe.minutes if minutes is None else float(minutes)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / RUN_FILES[name][1]
    torch.manual_seed(seed)
    model = model.to(device)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=recipe.weight_decay)
    rng = np.random.default_rng(seed)
    step, elapsed, rows = 0, 0.0, []
    if resume and ckpt.is_file():
        def restore(c):
            missing = [k for k in _CHECKPOINT_KEYS if k not in c]
            if missing:
                raise KeyError(f"missing {missing}")
            model.load_state_dict(c["model"])
            ema_model.load_state_dict(c["ema"])
            opt.load_state_dict(c["opt"])
            rng.bit_generator.state = c["rng"]
            torch.set_rng_state(c["torch_rng"])
            if c.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(c["cuda_rng"])
            return c["step"], float(c["elapsed"]), c["rows"]

        step, elapsed, rows = read_weights(ckpt, restore, map_location=device, mmap=False,
                                           advice="it cannot be resumed: move it away, or pass --overwrite")
        log.info("%s: resumed at step %d (%.1f min)", name, step, elapsed / 60)
    elif resume:
        log.info("%s: no checkpoint in %s, training from scratch", name, out)
    n_params = M.n_params(model)
    log.info("%s: %.3f M parameters, batch %d, %d steps, device %s", name, n_params / 1e6, batch_size, steps, device)
    budget = (minutes or float("inf")) * 60
    meta = {**(meta or {}), "steps": step, "batch_size": batch_size, "lr": lr, "ema": recipe.ema, "seed": seed,
            "threads": torch.get_num_threads(), "params": n_params, "device": str(device)}

    def save_checkpoint():
        state = {"model": model.state_dict(), "ema": ema_model.state_dict(), "opt": opt.state_dict(), "step": step,
                 "elapsed": elapsed, "rows": rows, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        with deferred():
            atomic_write(ckpt, lambda tmp: torch.save(state, tmp))
            write_csv(out / RUN_FILES[name][2], rows)

    stop = min(steps, pause_at) if pause_at is not None else steps
    bar = tqdm(total=steps, initial=step, desc=f"world {name}", disable=not progress, dynamic_ncols=True)
    model.train()
    t_last = time.perf_counter()
    while step < stop and elapsed < budget:
        cur_lr = lr_at(step, max(step / steps, elapsed / budget), lr, warmup=recipe.warmup)
        for g in opt.param_groups:
            g["lr"] = cur_lr
        losses = loss_fn(model, rng, batch_size)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(recipe.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema_model.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        now = time.perf_counter()
        elapsed += now - t_last
        t_last = now
        logged = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}
        rows.append({"step": step, "elapsed_s": round(elapsed, 2), **logged, "lr": cur_lr})
        bar.update(1)
        bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", min=f"{elapsed / 60:.1f}")
        if step % save_every == 0:
            save_checkpoint()
    bar.close()
    with deferred():
        save_checkpoint()
        if step < steps and pause_at is not None and step >= pause_at:
            return None
        meta.update(steps=step, minutes=round(elapsed / 60, 2))
        columns = [k for k in rows[-1] if k not in ("step", "elapsed_s", "lr", "acc")] if rows else ["loss"]
        if rows:
            plot_loss_curve(out / RUN_FILES[name][2], out / RUN_FILES[name][3], columns=columns,
                            title=f"world {name}: {step} steps, {elapsed / 60:.1f} min")
        path = out / RUN_FILES[name][0]
        save(path, ema_model.eval(), meta)
    log.info("%s: %d steps in %.1f min -> %s", name, step, elapsed / 60, path)
    return path


# ----------------------------------------------------------------------------- the four models
def _unet_loss(arrays: DiffusionArrays, tok, x0, keep, texts, **inputs) -> dict:
    tokens, mask = tok.batch(texts, M.TEXT_CTX, device=x0.device)
    t = torch.randint(0, arrays.num_timesteps, (x0.shape[0],), device=x0.device)
    weight = (1 - keep) + 0.1 * keep
    return dict(tokens=tokens, mask=mask, t=t, weight=weight, inpaint_mask=keep, **inputs)


def _hybrid(model, arrays, x0, kw) -> dict:
    t, weight = kw.pop("t"), kw.pop("weight")
    mse, vb = hybrid_loss(model, arrays, x0, t, torch.randn_like(x0), weight, **kw)
    return {"loss": mse + vb, "mse": mse.detach(), "vb": vb.detach()}


def _arrays(schedule, device) -> DiffusionArrays:
    return DiffusionArrays(GaussianDiffusion(betas=get_named_beta_schedule(*schedule)), torch.device(device))


@dataclass
class Setup:
    """One model ready to train: the model, ``loss_fn(model, rng, batch_size) -> dict`` (``"loss"`` a
    tensor, the other entries logged), ``save(path, ema_model, meta)`` and the meta to store."""

    model: torch.nn.Module
    loss_fn: Callable
    save: Callable
    meta: dict


def setup_base(batches=None, *, device="cpu", seed: int = 0, recipe_options: dict | None = None) -> Setup:
    """The 32×32 base inpainting model (``batches.inpaint_batch(rng, B, size=32, **recipe_options)``)."""
    batches = batches or _default_batches()
    tok = batches.tokenizer()
    torch.manual_seed(seed)
    model = M.build_base(M.base_config(tok.n_vocab))
    arrays = _arrays(M.BASE_SCHEDULE, device)
    options = dict(recipe_options or {})

    def loss_fn(model, rng, batch_size):
        b = batches.inpaint_batch(rng, batch_size, size=M.BASE_SIZE, **options)
        x0, keep = b["image"].to(device), b["keep"].to(device)
        return _hybrid(model, arrays, x0, _unet_loss(arrays, tok, x0, keep, b["text"], inpaint_image=b["source"].to(device)))

    return Setup(model, loss_fn, save_weights, {"schedule": list(M.BASE_SCHEDULE), "recipe_options": options})


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (5×5, σ per image; σ < 0.1 leaves the image as it is)."""
    r = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    s = sigma.clamp(min=0.1)[:, None]
    k1 = torch.exp(-r[None] ** 2 / (2 * s ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)  # [B, 5]
    k = (k1[:, :, None] * k1[:, None, :])  # [B, 5, 5]
    b, c, h, w = x.shape
    y = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate").reshape(1, b * c, h + 4, w + 4),
                 k.repeat_interleave(c, 0)[:, None], groups=b * c).reshape(b, c, h, w)
    return torch.where((sigma >= 0.1)[:, None, None, None], y, x)


def upsampler_inputs(rng: np.random.Generator, batch: dict, *, crop: int | None = 32, augment: bool = True) -> dict:
    """The upsampler's training example from an ``inpaint_batch(size=64)`` batch: ``x0``, ``low_res``
    (upsampled to 64 and cropped like x0, so the model's own resize is the identity), ``inpaint_image``,
    ``keep``, ``text``; cropped to ``crop``×``crop`` (``None``: the full frame). Three crops in four
    hold the hole's centre."""
    x = batch["image"]
    n, _, size, _ = x.shape
    low = F.interpolate(x, size=(size // 2,) * 2, mode="area")
    if augment:
        sigma = torch.from_numpy(np.where(rng.random(n) < 0.5, rng.uniform(0.4, 0.8, n), 0.0)).float()
        low = _blur(low, sigma)
        noise = torch.from_numpy(rng.standard_normal(low.shape).astype(np.float32))
        low = low + noise * torch.from_numpy(rng.uniform(0, 0.02, n).astype(np.float32))[:, None, None, None]
    low = round_to_uint8_levels(low.clamp(-1, 1))
    low_up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    keep = batch["keep"]
    fields = {"x0": x, "low_res": low_up, "inpaint_image": batch["source"], "keep": keep}
    if crop is None or crop >= size:
        return {**fields, "text": list(batch["text"])}
    out = {k: [] for k in fields}
    for i in range(n):
        hole = (keep[i, 0] < 0.5).nonzero()
        if len(hole) and rng.random() < 0.75:
            cy, cx = hole.float().mean(0).tolist()
            oy, ox = (int(np.clip(c - rng.uniform(4, crop - 4), 0, size - crop)) for c in (cy, cx))
        else:
            oy, ox = (int(v) for v in rng.integers(0, size - crop + 1, 2))
        for k, v in fields.items():
            out[k].append(v[i, :, oy:oy + crop, ox:ox + crop])
    return {**{k: torch.stack(v) for k, v in out.items()}, "text": list(batch["text"])}


def setup_upsampler(batches=None, *, device="cpu", seed: int = 0, crop: int | None = 32,
                    recipe_options: dict | None = None) -> Setup:
    """The 32→64 inpainting upsampler, on ``crop``×``crop`` crops (``None``: full 64×64 frames)."""
    batches = batches or _default_batches()
    tok = batches.tokenizer()
    torch.manual_seed(seed)
    model = M.build_upsampler(M.upsampler_config(tok.n_vocab))
    arrays = _arrays(M.UPSAMPLE_SCHEDULE, device)
    options = dict(recipe_options or {})

    def loss_fn(model, rng, batch_size):
        u = upsampler_inputs(rng, batches.inpaint_batch(rng, batch_size, size=M.FULL_SIZE, **options), crop=crop)
        x0, keep = u["x0"].to(device), u["keep"].to(device)
        return _hybrid(model, arrays, x0, _unet_loss(arrays, tok, x0, keep, u["text"], low_res=u["low_res"].to(device),
                                                     inpaint_image=u["inpaint_image"].to(device)))

    return Setup(model, loss_fn, save_weights, {"schedule": list(M.UPSAMPLE_SCHEDULE), "crop": crop,
                                                 "middle_attention": False, "recipe_options": options})


def _save_plain(config: dict):
    def save(path: Path, model, meta: dict) -> None:
        state = half_state(model)
        atomic_write(path, lambda tmp: torch.save({"config": config, "state_dict": state, "meta": meta}, tmp))
    return save


def setup_segmenter(batches=None, *, device="cpu", seed: int = 0, eval_n: int = 500, config: dict | None = None) -> Setup:
    """The learned referring segmenter; its held-out IoU (``eval_n`` examples, seed 10 000) goes into the meta.
    ``config`` overrides :func:`romlib.world.models.segmenter_config` (e.g. ``{"film": True}``)."""
    batches = batches or _default_batches()
    tok = batches.tokenizer()
    torch.manual_seed(seed)
    cfg = M.segmenter_config(tok.n_vocab, **(config or {}))
    net = WorldSegmenterNet(**cfg)

    def loss_fn(model, rng, batch_size):
        b = batches.segment_batch(rng, batch_size, size=M.FULL_SIZE)
        tokens, mask = tok.batch(b["text"], M.TEXT_CTX, device=device)
        b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()}
        return segmenter_loss(model, b, tokens, mask)

    plain = _save_plain(cfg)

    def save(path, ema_net, meta):
        if eval_n:
            meta["heldout"] = summarise_ious(evaluate_segmenter(WorldSegmenter(copy.deepcopy(ema_net), tok), batches, n=eval_n))
            log.info("segmenter held-out: %s", meta["heldout"])
        plain(path, ema_net, meta)

    return Setup(net, loss_fn, save, {})


def setup_ranker(batches=None, *, device="cpu", seed: int = 0, eval_n: int = 512) -> Setup:
    """The tiny CLIP-like ranker; its held-out top-1 accuracy over the batch's descriptions goes into the meta."""
    batches = batches or _default_batches()
    tok = batches.tokenizer()
    torch.manual_seed(seed)
    ranker = M.WorldRanker(tok)

    def loss_fn(model, rng, batch_size):
        images, texts = batches.rank_batch(rng, batch_size, size=model.image_size)
        uniq = list(dict.fromkeys(texts))
        pos = torch.tensor([[t == u for u in uniq] for t in texts], device=device)
        logits = model.logits(images.to(device), uniq)  # [B, U]
        l_img = -(torch.logsumexp(logits.masked_fill(~pos, -1e4), 1) - torch.logsumexp(logits, 1)).mean()
        l_txt = -(torch.logsumexp(logits.T.masked_fill(~pos.T, -1e4), 1) - torch.logsumexp(logits.T, 1)).mean()
        acc = (pos.gather(1, logits.argmax(1, keepdim=True))).float().mean()
        return {"loss": (l_img + l_txt) / 2, "acc": acc}

    plain = _save_plain({"image_size": ranker.image_size, "dim": ranker.dim, "n_vocab": tok.n_vocab})

    def save(path, ema_ranker, meta):
        if eval_n:
            meta["heldout_acc"] = evaluate_ranker(ema_ranker, batches, n=eval_n)
        plain(path, ema_ranker, meta)

    return Setup(ranker, loss_fn, save, {})


def _vae_inputs(batches, rng, batch_size: int) -> torch.Tensor:
    """What the VAE encodes at sampling: scenes (half the batch) and the images a model is shown (the other half:
    the blanked hole or a paired source)."""
    b = batches.inpaint_batch(rng, batch_size, size=M.FULL_SIZE)
    half = batch_size // 2
    return torch.cat([b["image"][:batch_size - half], b["source"][batch_size - half:]])


def setup_vae(batches=None, *, device="cpu", seed: int = 0, eval_n: int = 64) -> Setup:
    """The latent model's VAE (:func:`romlib.world.latent.vae_config`): L1 + MSE reconstruction + 1e-6 KL. Saving
    measures its ``scaling_factor`` (1 / the std of the latents of ``eval_n`` held-out images, seed 10 000) and
    their reconstruction PSNR."""
    from . import latent as LM

    batches = batches or _default_batches()
    torch.manual_seed(seed)
    vae = LM.build_vae()

    def loss_fn(model, rng, batch_size):
        x = _vae_inputs(batches, rng, batch_size).to(device)
        post = model.encode(x).latent_dist
        rec = model.decode(post.sample()).sample
        l1, mse, kl = (rec - x).abs().mean(), ((rec - x) ** 2).mean(), post.kl().mean()
        return {"loss": l1 + mse + 1e-6 * kl, "mse": mse.detach(), "kl": kl.detach()}

    def save(path, ema_vae, meta):
        if eval_n:
            with torch.no_grad():
                x = _vae_inputs(batches, np.random.default_rng(10_000), eval_n).to(device)
                z = ema_vae.encode(x).latent_dist.mode()
                rec = ema_vae.decode(z).sample.clamp(-1, 1)
            ema_vae.register_to_config(scaling_factor=round(1 / float(z.std()), 5))
            psnr = 10 * torch.log10(4 / ((rec - x) ** 2).mean((1, 2, 3)))
            meta["heldout_psnr_db"] = round(float(psnr.median()), 2)
        LM.save_vae(path, ema_vae, meta, atomic_write)

    return Setup(vae, loss_fn, save, {})


def setup_latent(batches=None, *, device="cpu", seed: int = 0, vae=None) -> Setup:
    """The latent inpainting UNet and its text encoder (:mod:`romlib.world.latent`) on a trained VAE (``vae``: a
    ``vae.pt`` path or the module): ε-prediction MSE on SD's schedule, weight 1 in the hole and 0.1 outside, the
    image latents of the data's ``source`` (the pixel base model's recipe)."""
    from . import latent as LM

    batches = batches or _default_batches()
    if vae is None:
        raise ValueError("the latent model trains on a trained VAE: pass vae= (a vae.pt path or the module)")
    vae = LM.load_vae(vae, device=device) if isinstance(vae, (str, Path)) else vae
    torch.manual_seed(seed)
    model = LM.build_latent(vae)
    ac = LM.alphas_cumprod().to(device)
    sf = float(vae.config.scaling_factor)

    def loss_fn(model, rng, batch_size):
        b = batches.inpaint_batch(rng, batch_size, size=M.FULL_SIZE)
        with torch.no_grad():
            z0 = sf * model.vae.encode(b["image"].to(device)).latent_dist.sample()
            shown = sf * model.vae.encode(b["source"].to(device)).latent_dist.sample()
        ids = model.tokenizer(b["text"], padding="max_length", max_length=model.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids.to(device)
        states = model.text_encoder(ids)[0]
        t = torch.randint(0, len(ac), (batch_size,), device=device)
        a = ac[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(z0)
        edit = LM.latent_mask(b["keep"].to(device))
        eps = model.unet(torch.cat([a.sqrt() * z0 + (1 - a).sqrt() * noise, edit, shown], 1), t,
                         encoder_hidden_states=states).sample
        weight = edit + 0.1 * (1 - edit)
        mse = ((eps - noise) ** 2 * weight).sum() / (weight.sum() * eps.shape[1])
        return {"loss": mse}

    return Setup(model, loss_fn, lambda path, ema, meta: LM.save_latent(path, ema, meta, atomic_write),
                 {"vae_meta": dict(getattr(vae, "meta", {}))})


SETUPS = {"base": setup_base, "upsampler": setup_upsampler, "segmenter": setup_segmenter, "ranker": setup_ranker,
          "vae": setup_vae, "latent": setup_latent}


def train(name: str, out_dir, *, batches=None, device="cpu", seed: int = 0, setup_options: dict | None = None,
          **kw) -> Path | None:
    """Train model ``name`` (:data:`MODELS`) into ``out_dir``; ``setup_options`` go to its ``setup_*``
    (e.g. ``crop``, ``recipe_options``, ``eval_n``), the rest to :func:`train_model`."""
    if name not in SETUPS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(MODELS)}")
    options = dict(setup_options or {})
    if name == "latent" and "vae" not in options:  # the latent model trains on the VAE of the same run
        options["vae"] = Path(out_dir) / RUN_FILES["vae"][0]
        if not options["vae"].is_file():
            raise FileNotFoundError(f"the latent model trains on a trained VAE, and {options['vae']} is missing: train "
                                    f"it first ({TRAIN_COMMAND} --out {out_dir} --what vae)")
    s = SETUPS[name](batches, device=device, seed=seed, **options)
    return train_model(name, out_dir, s.model, s.loss_fn, s.save, recipe=RECIPES[name], device=device, seed=seed,
                       meta=s.meta, **kw)


def write_untrained(out_dir, models=MODELS, *, seed: int = 0) -> dict:
    """Each model's weight file as its trainer writes it (the same ``save``, configs and meta), from the
    untrained (random) model: a weights folder for tests of the ``world`` backend, in seconds. Returns
    ``{model: path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for m in models:
        options = {"eval_n": 0} if m in ("segmenter", "ranker", "vae") else {}
        if m == "latent":
            options["vae"] = out / RUN_FILES["vae"][0] if (out / RUN_FILES["vae"][0]).is_file() else SETUPS["vae"]().model
        s = SETUPS[m](seed=seed, **options)
        paths[m] = out / RUN_FILES[m][0]
        s.save(paths[m], s.model.eval(), {**s.meta, "steps": 0, "untrained": True})
    return paths


# ----------------------------------------------------------------------------- held-out checks
@torch.no_grad()
def evaluate_segmenter(segmenter: WorldSegmenter, batches=None, *, n: int = 500, seed: int = 10_000,
                       threshold: float = 0.5, batch_size: int = 50) -> dict:
    """On ``n`` held-out examples: ``"iou"`` at 64×64 of the best query's mask with the referred
    object's, and ``"wrong_object"``: whether that mask overlaps another object of the scene more
    (IoU) than the referred one (the look-alike mistake)."""
    batches = batches or _default_batches()
    rng = np.random.default_rng(seed)
    ious, wrong = [], []
    for i in range(0, n, batch_size):
        b = batches.segment_batch(rng, min(batch_size, n - i), size=M.FULL_SIZE)
        out = segmenter.predict(b["image"], b["text"])
        k = out["ref_logits"].argmax(1)
        logits = out["mask_logits"][torch.arange(len(k)), k]
        up = F.interpolate(logits[:, None], size=b["mask"].shape[-2:], mode="bilinear", align_corners=False)
        pred = up.sigmoid() > threshold
        iou = mask_iou(pred[:, 0], b["mask"][:, 0] > 0.5)
        each = mask_iou(pred, b["masks_all"] > 0.5)  # [B, N]
        each = each.masked_fill(torch.arange(each.shape[1])[None] >= b["count"][:, None], 0)
        ious.append(iou)
        wrong.append(each.max(1).values > iou + 1e-6)
    return {"iou": torch.cat(ious).numpy(), "wrong_object": torch.cat(wrong).numpy()}


def summarise_ious(result: dict) -> dict:
    """Mean IoU, its quartiles, the failure rate (IoU < 0.5) and the wrong-object rate, each rate
    with its Wilson 95 % interval."""
    ious, wrong = result["iou"], result["wrong_object"]
    fails, wrongs = int((ious < 0.5).sum()), int(wrong.sum())
    return {"n": int(len(ious)), "mean_iou": round(float(ious.mean()), 3),
            "quartiles": [round(float(q), 3) for q in np.quantile(ious, [0.25, 0.5, 0.75])],
            "failure_rate": round(fails / len(ious), 3), "failure_ci95": [round(v, 3) for v in wilson(fails, len(ious))],
            "wrong_object_rate": round(wrongs / len(ious), 3),
            "wrong_object_ci95": [round(v, 3) for v in wilson(wrongs, len(ious))]}


@torch.no_grad()
def evaluate_ranker(ranker, batches=None, *, n: int = 512, seed: int = 10_000) -> float:
    """Top-1 accuracy of naming held-out crops among the distinct descriptions of their batch."""
    batches = batches or _default_batches()
    images, texts = batches.rank_batch(np.random.default_rng(seed), n, size=ranker.image_size)
    uniq = list(dict.fromkeys(texts))
    logits = ranker.logits(images, uniq)
    return float(np.mean([uniq[j] == t for j, t in zip(logits.argmax(1).tolist(), texts)]))


@torch.no_grad()
def crop_check(model, batches=None, *, n: int = 64, seed: int = 7, crop: int = 32, border: int = 4) -> dict:
    """Is an upsampler trained on crops as good on full frames? The same noisy 64×64 examples are
    predicted on the full frame and on a random ``crop``×``crop`` window; the ε error inside the
    window (``border`` px excluded) is compared, paired: both means, their difference and its 95 %
    interval (normal approximation). GroupNorm's statistics are the one thing that differs."""
    batches = batches or _default_batches()
    tok = batches.tokenizer()
    arrays = _arrays(M.UPSAMPLE_SCHEDULE, "cpu")
    rng, g = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    full_err, crop_err = [], []
    for i in range(0, n, 16):
        u = upsampler_inputs(rng, batches.inpaint_batch(rng, min(16, n - i), size=M.FULL_SIZE), crop=None, augment=False)
        x0, keep, b = u["x0"], u["keep"], u["x0"].shape[0]
        t = torch.randint(0, arrays.num_timesteps, (b,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        x_t = arrays.at("sqrt_alphas_cumprod", t) * x0 + arrays.at("sqrt_one_minus_alphas_cumprod", t) * noise
        tokens, mask = tok.batch(u["text"], M.TEXT_CTX)
        cond = dict(tokens=tokens, mask=mask)
        eps_full = model(x_t, t, inpaint_image=u["inpaint_image"], inpaint_mask=keep, low_res=u["low_res"], **cond)[:, :3]
        oy, ox = (int(v) for v in rng.integers(0, x0.shape[-1] - crop + 1, 2))
        win = (slice(None), slice(None), slice(oy, oy + crop), slice(ox, ox + crop))
        eps_crop = model(x_t[win], t, inpaint_image=u["inpaint_image"][win], inpaint_mask=keep[win],
                         low_res=u["low_res"][win], **cond)[:, :3]
        inner = (slice(None), slice(None), slice(border, crop - border), slice(border, crop - border))
        full_err.append(((eps_full[win][inner] - noise[win][inner]) ** 2).mean((1, 2, 3)))
        crop_err.append(((eps_crop[inner] - noise[win][inner]) ** 2).mean((1, 2, 3)))
    f, c = torch.cat(full_err).numpy(), torch.cat(crop_err).numpy()
    d = f - c
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return {"n": int(len(d)), "mse_full_frame": round(float(f.mean()), 4), "mse_crop": round(float(c.mean()), 4),
            "diff": round(float(d.mean()), 4), "diff_ci95": [round(float(d.mean() - half), 4), round(float(d.mean() + half), 4)]}


# ----------------------------------------------------------------------------- CLI
def describe_run(out: str | Path, models=MODELS) -> str | None:
    """What a training folder holds, e.g. ``base_checkpoint.pt (step 500), base_loss.csv in runs/w``."""
    out = Path(out)
    names = []
    for m in models:
        for n in RUN_FILES[m]:
            if (out / n).is_file():
                if n == RUN_FILES[m][1]:
                    try:
                        n = f"{n} (step {checkpoint_step(out / n)})"
                    except ValueError:
                        n = f"{n} (damaged)"
                names.append(n)
    return f"{', '.join(names)} in {out}" if names else None


def _check_out(out: Path, models, *, resume: bool, overwrite: bool, save_every: int) -> None:
    """Before any work: never train over a run unless told how."""
    def check_resume():
        have = [m for m in models if (out / RUN_FILES[m][1]).is_file()]
        if not have:
            raise FileNotFoundError(f"--resume: no checkpoint of {', '.join(models)} in {out} (expected e.g. "
                                    f"{out / RUN_FILES[models[0]][1]}); run without --resume to start a new training")
        for m in have:
            checkpoint_step(out / RUN_FILES[m][1])  # a damaged checkpoint is named before any work

    check_run_folder(out, [n for m in models for n in RUN_FILES[m]], lambda: describe_run(out, models), resume=resume,
                     overwrite=overwrite, save_every=save_every, check_resume=check_resume)


def train_command(args) -> int:
    """Train the world's models (``--what``), writing weights, checkpoints and loss curves into ``--out``."""
    logging.getLogger("romlib").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    models = MODELS if args.what == "all" else (args.what,)
    _check_out(out, models, resume=args.resume, overwrite=args.overwrite, save_every=args.save_every)
    if args.threads:
        torch.set_num_threads(int(args.threads))
    written, t0 = [], time.perf_counter()
    for m in models:
        written.append(train(m, out, steps=getattr(args, f"{m}_steps"), batch_size=args.batch_size, minutes=args.minutes,
                                   seed=args.seed, resume=args.resume, save_every=args.save_every, device=args.device,
                                   progress=not args.quiet))
    info = {"command": "world-train", "args": {k: v for k, v in vars(args).items() if k != "func"},
            "wall_minutes": round((time.perf_counter() - t0) / 60, 2), "files": [str(p) for p in written]}
    atomic_write(out / "train_info.json", lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
    for p in written:
        print(p)
    print(f"loss curves: {'  '.join(str(out / RUN_FILES[m][3]) for m in models)}  ({info['wall_minutes']:.1f} min)")
    return 0


# ----------------------------------------------------------------------------- the step-time study
def step_time(kind: str, *, threads: int = 2, batch_size: int = 32, crop: bool = True, channels_last: bool = False,
              bf16: bool = False, compile: bool = False, steps: int = 3, n_vocab: int = 32, **config) -> dict:
    """Time AdamW steps of a base (``kind="base"``) or upsampler (``"upsampler"``) UNet of the size
    ``config`` (:func:`romlib.world.models.base_config` / ``upsampler_config`` keywords) on random
    inputs: the median wall and CPU seconds of ``steps`` steps after a first (warm-up) one.
    The upsampler runs on 32×32 crops (``crop``) or full 64×64 frames. docs/world_training.md."""
    if kind not in ("base", "upsampler"):
        raise ValueError(f"kind must be 'base' or 'upsampler', got {kind!r}")
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    if kind == "base":
        model, size, schedule = M.build_base(M.base_config(n_vocab, **config)), M.BASE_SIZE, M.BASE_SCHEDULE
    else:
        model, schedule = M.build_upsampler(M.upsampler_config(n_vocab, **config)), M.UPSAMPLE_SCHEDULE
        size = 32 if crop else M.FULL_SIZE
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    arrays = _arrays(schedule, "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compile else model
    x0 = torch.rand(batch_size, 3, size, size) * 2 - 1
    keep = (torch.rand(batch_size, 1, size, size) > 0.3).float()
    kw = dict(tokens=torch.randint(1, n_vocab, (batch_size, M.TEXT_CTX)),
              mask=torch.ones(batch_size, M.TEXT_CTX, dtype=torch.bool), inpaint_image=x0 * keep, inpaint_mask=keep)
    if kind == "upsampler":
        kw["low_res"] = x0
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    walls, cpus = [], []
    for _ in range(steps + 1):
        w, c = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            mse, vb = hybrid_loss(forward, arrays, x0, torch.randint(0, 1000, (batch_size,)), torch.randn_like(x0),
                                  1 - keep + 0.1 * keep, **kw)
        loss = (mse + vb).float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"kind": kind, "params_M": round(M.n_params(model) / 1e6, 3), "size": size, "threads": threads,
            "channels_last": channels_last, "bf16": bf16, "compile": compile, **config,
            "first_wall_s": round(walls[0], 2), "wall_s": round(float(np.median(walls[1:])), 3),
            "cpu_s": round(float(np.median(cpus[1:])), 3), "loss": round(loss.item(), 3),
            "load": round(os.getloadavg()[0], 1)}


def main(argv=None) -> int:
    """``python -m romlib.world.train [options]`` (until the CLI names it)."""
    p = argparse.ArgumentParser(prog=TRAIN_COMMAND, description=__doc__.split("\n")[0])
    add_train_args(p)
    return train_command(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

"""Training the ShapesWorld models from scratch (``romlib shapes-train``).

**Inpainting model** — romlib's own GLIDE inpainting UNet (:class:`romlib.models.glide.GlideUNet`) at a
tiny size (:func:`inpaint_config`), trained as GLIDE's inpainting model was:

* examples: a scene, a hole (edit region) around one object, and a caption of what is in the
  hole. The hole is the object's mask dilated by 0–2 px, or (85 %) another shape just large
  enough to contain the object, so the model learns that a hole's outline does not say what to
  draw; 10 % of holes cover only background. Captions mix descriptions ("a red circle", "a
  circle", "a red shape") and referring expressions ("the circle on the left"), so that both
  c_target and c_ref are in the model's language; 20 % are empty (caption dropout: CF and CCF
  need ε(x_t | ∅)); with ``p_remove`` > 0 (``--p-remove``; 0 for the shipped model) that share of
  object holes gets an empty caption and the *clean background* as the answer, so that an empty
  target removes the object (the paper's Fig. 8) instead of redrawing one;
* input image: ``inpaint_input="pairs"`` (the default, the shipped model's recipe): half of the
  examples show, under the hole, a counterfactual *source* object that keeps the attributes the
  caption does not name and (mostly, 3/4 per attribute) differs in those it names; the other half
  are blanked as in GLIDE. This makes the model an editing model that can use the original object
  — what CCF's "original image as input" needs. ``inpaint_input="masked"`` is GLIDE's recipe (the
  image is always multiplied by the keep mask, so the model never sees the pixels under the hole);
  with it CCF reached only 62–69 % target success (docs/shapesworld.md). Both train a model with
  ``mask_inpaint_input=False``, so at sampling time CCF's original image does reach it (as in the
  authors' modified GLIDE);
* loss: GLIDE's hybrid objective (Nichol & Dhariwal 2021): L_simple = ‖ε − ε_θ(x_t, t)‖² plus
  L_vlb for the learned-range variance (KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t)) with the mean
  frozen, the discretised Gaussian decoder NLL at t = 0; in bits), weighted 1 in the hole and
  0.1 outside; cosine schedule, T = 1000; AdamW, warm-up then cosine decay; EMA weights shipped.

**Ranker** — :class:`romlib.shapes.ranker.ShapesRanker`, contrastively (:func:`train_ranker`).

Both runs log a loss curve (CSV and PNG) and show a tqdm bar; the inpainting run saves a
resumable checkpoint every ``--save-every`` steps and stops at ``--steps`` or ``--minutes``.

**Nothing lost.** ``romlib shapes-train`` refuses a folder that holds a run (:data:`RUN_FILES`) unless
``--resume`` (continue from ``inpaint_checkpoint.pt``; an error when there is none) or ``--overwrite``
(delete that run's files, then start afresh). Every file is written to a temporary name and renamed
into place; the checkpoint and its loss log are written together, signals held meanwhile
(:class:`romlib.interrupts.deferred`), so an interrupt (Ctrl-C, SIGTERM) at any moment leaves the last
checkpoint whole: the message names the files kept and the checkpoint's step, and ``--resume``
continues from it. A damaged or mismatched checkpoint is named as such and nothing is trained.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..interrupts import deferred
from ..io import check_file
from ..models.glide import GlideConfig, GlideUNet
from ..rank import ranking_inputs
from ..sampling.diffusion import GaussianDiffusion, get_named_beta_schedule
from ..training import (DiffusionArrays, atomic_write, check_run_folder, checkpoint_step, hybrid_loss, lr_at,
                        plot_loss_curve, save_weights, write_csv)
from .backend import WEIGHTS_DIR, read_weights
from .ranker import ShapesRanker
from .scenes import COLOURS, SHAPES, SIZE, WordTokenizer, describe, dilate_np, make_scene
from .train_data import InpaintInput, make_batch, make_example

__all__ = ["inpaint_config", "make_batch", "make_example", "hybrid_loss", "train_inpaint", "train_ranker", "ranker_batch", "plot_loss_curve",
           "train_command", "describe_run", "RUN_FILES", "WEIGHTS_DIR", "InpaintInput"]

log = logging.getLogger(__name__)

TEXT_CTX = 8
CHECKPOINT = "inpaint_checkpoint.pt"
#: the files a training run writes into its folder, per model (``train_info.json``: the last command that completed)
RUN_FILES = {"inpaint": ("inpaint.pt", CHECKPOINT, "inpaint_loss.csv", "inpaint_loss.png"),
             "ranker": ("ranker.pt", "ranker_loss.csv", "ranker_loss.png")}
_CHECKPOINT_KEYS = ("model", "ema", "opt", "step", "elapsed", "rows", "rng", "torch_rng")


def inpaint_config():
    """The shipped tiny GLIDE inpainting configuration (32×32, 0.57 M parameters): 32 base
    channels, multipliers 1-1-2, no extra residual block per level (``num_res_blocks=0``: the
    residual down/up-sampling blocks, the middle block and one decoder block per level), attention
    at 8×8, a 2-layer text transformer of width 64 over 8 word tokens;
    ``mask_inpaint_input=False`` (the ROM authors' modification, so CCF's original image reaches it)."""
    return GlideConfig(text_ctx=TEXT_CTX, xf_width=64, xf_layers=2, xf_heads=4, xf_final_ln=True, xf_padding=True,
                       model_channels=32, channel_mult=(1, 1, 2), num_res_blocks=0, attention_resolutions=(4,),
                       num_head_channels=32, dropout=0.0, n_vocab=WordTokenizer.n_vocab, inpaint=True,
                       mask_inpaint_input=False, image_size=SIZE, use_scale_shift_norm=True, resblock_updown=True)


# ----------------------------------------------------------------------------- loss
# ----------------------------------------------------------------------------- loops
def _require_checkpoint(out: Path) -> Path:
    """``out``'s checkpoint, which ``--resume`` needs (FileNotFoundError saying so when missing)."""
    if os.path.lexists(out / CHECKPOINT):
        return check_file(out / CHECKPOINT, "--resume checkpoint")  # a FIFO, a folder: named, never opened
    if not (out / CHECKPOINT).is_file():
        raise FileNotFoundError(f"--resume: no checkpoint in {out} (expected {out / CHECKPOINT}, which shapes-train "
                                "writes every --save-every steps); run without --resume to start a new training")
    return out / CHECKPOINT


def describe_run(out: str | Path, models=("inpaint", "ranker")) -> str | None:
    """What a training folder holds, e.g. ``inpaint_checkpoint.pt (step 500), inpaint_loss.csv in runs/a``
    (None when it holds none of :data:`RUN_FILES`)."""
    out = Path(out)
    names = []
    for n in (n for m in models for n in RUN_FILES[m]):
        if (out / n).is_file():
            if n == CHECKPOINT:
                try:
                    n = f"{n} (step {checkpoint_step(out / n)})"
                except ValueError:
                    n = f"{n} (damaged)"
            names.append(n)
    return f"{', '.join(names)} in {out}" if names else None


def train_inpaint(out_dir: str | Path, *, steps: int = 4500, minutes: float | None = 38.0, batch_size: int = 32,
                  lr: float = 1e-3, ema: float = 0.999, device="cpu", seed: int = 0, resume: bool = False,
                  inpaint_input: InpaintInput = "pairs", save_every: int = 250, threads: int | None = None,
                  p_remove: float = 0.0, p_partial: float = 0.2, p_source: float = 0.5, progress: bool = True) -> Path:
    """Train the tiny GLIDE inpainting model; returns the path of ``inpaint.pt`` (EMA weights).

    Stops at ``steps`` or after ``minutes`` of training (time spent before a resume counts),
    whichever comes first; the learning-rate schedule follows whichever is further along.
    """
    from romlib.progress import tqdm


    if inpaint_input not in ("masked", "pairs"):
        raise ValueError(f"inpaint_input must be 'masked' or 'pairs', got {inpaint_input!r}")
    if not 0.0 <= p_remove < 1.0:
        raise ValueError(f"p_remove must lie in [0, 1), got {p_remove!r}")
    if not 0.0 <= p_source <= 1.0:
        raise ValueError(f"p_source must lie in [0, 1], got {p_source!r}")
    if not 0.0 <= p_partial <= 0.65:
        raise ValueError(f"p_partial must lie in [0, 0.65] (the share of non-referring captions), got {p_partial!r}")
    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    torch.manual_seed(seed)
    model = GlideUNet(inpaint_config()).to(device)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    arrays = DiffusionArrays(GaussianDiffusion(betas=get_named_beta_schedule("squaredcos_cap_v2", 1000)), device)
    tok = WordTokenizer()
    rng = np.random.default_rng(seed)
    step, elapsed, rows = 0, 0.0, []
    ckpt = out / CHECKPOINT
    if resume:
        _require_checkpoint(out)

        def restore(c):
            missing = [k for k in _CHECKPOINT_KEYS if k not in c]
            if missing:
                raise KeyError(f"missing {missing}")
            if not isinstance(c["step"], int) or not isinstance(c["rows"], list) or c["step"] < 0:
                raise ValueError(f"step={c['step']!r} / rows of type {type(c['rows']).__name__}")
            model.load_state_dict(c["model"]), ema_model.load_state_dict(c["ema"]), opt.load_state_dict(c["opt"])
            rng.bit_generator.state = c["rng"]
            torch.set_rng_state(c["torch_rng"])
            return c["step"], float(c["elapsed"]), c["rows"]

        # read, not mapped: this file is rewritten below
        step, elapsed, rows = read_weights(ckpt, restore, map_location=device, mmap=False,
                                           advice="it cannot be resumed: move it away, or pass --overwrite to train from scratch")
        log.info("resumed at step %d (%.1f min)", step, elapsed / 60)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("inpainting model: %.2f M parameters, batch %d, %s input, device %s", n_params / 1e6, batch_size,
             inpaint_input, device)
    budget = (minutes or float("inf")) * 60
    meta = {"steps": step, "batch_size": batch_size, "lr": lr, "ema": ema, "seed": seed, "inpaint_input": inpaint_input,
            "p_remove": p_remove, "p_partial": p_partial, "p_source": p_source,
            "device": str(device), "threads": torch.get_num_threads(), "params": n_params,
            "schedule": ["squaredcos_cap_v2", 1000]}

    def save_checkpoint():
        """The checkpoint and its loss log, together (an interrupt meanwhile is held until both are whole)."""
        state = {"model": model.state_dict(), "ema": ema_model.state_dict(), "opt": opt.state_dict(), "step": step,
                 "elapsed": elapsed, "rows": rows, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
        with deferred():
            atomic_write(ckpt, lambda tmp: torch.save(state, tmp))
            write_csv(out / "inpaint_loss.csv", rows)

    bar = tqdm(total=steps, initial=step, desc="shapes inpainting", disable=not progress, dynamic_ncols=True)
    model.train()
    t_last = time.perf_counter()
    while step < steps and elapsed < budget:
        b = make_batch(rng, batch_size, inpaint_input=inpaint_input, p_remove=p_remove, p_partial=p_partial,
                       p_source=p_source)
        x0, keep = b["x0"].to(device), b["keep"].to(device)
        tokens, mask = tok.batch(b["texts"], TEXT_CTX, device=device)
        t = torch.randint(0, arrays.num_timesteps, (batch_size,), device=device)
        noise = torch.randn_like(x0)
        weight = (1 - keep) + 0.1 * keep
        cur_lr = lr_at(step, max(step / steps, elapsed / budget), lr)
        for g in opt.param_groups:
            g["lr"] = cur_lr
        mse, vb = hybrid_loss(model, arrays, x0, t, noise, weight, tokens=tokens, mask=mask,
                              inpaint_image=b["inpaint_image"].to(device), inpaint_mask=keep)
        loss = mse + vb
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema_model.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        now = time.perf_counter()
        elapsed += now - t_last
        t_last = now
        rows.append({"step": step, "elapsed_s": round(elapsed, 2), "loss": loss.item(), "mse": mse.item(),
                     "vb": vb.item(), "lr": cur_lr})
        bar.update(1)
        bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", min=f"{elapsed / 60:.1f}")
        if step % save_every == 0:
            save_checkpoint()
    bar.close()
    meta.update(steps=step, minutes=round(elapsed / 60, 2))
    path = out / "inpaint.pt"
    with deferred():
        save_checkpoint()
        plot_loss_curve(out / "inpaint_loss.csv", out / "inpaint_loss.png", columns=("loss", "mse", "vb"),
                        title=f"ShapesWorld inpainting: {step} steps, {elapsed / 60:.1f} min")
        save_weights(path, ema_model.eval(), meta)
    log.info("inpainting model: %d steps in %.1f min -> %s", step, elapsed / 60, path)
    return path


# ----------------------------------------------------------------------------- ranker
def ranker_batch(rng: np.random.Generator, batch_size: int, image_size: int = 32) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Ranking inputs exactly as :func:`romlib.rank.ranking_inputs` builds them (local crop of the
    box ×1.3, or the masked frame), blurred and noised a little like samples, with each crop's
    object attributes."""
    crops, attrs = [], []
    for _ in range(batch_size):
        scene = make_scene(rng)
        i = int(rng.integers(len(scene.objects)))
        o = scene.objects[i]
        x = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 127.5 - 1
        sigma = rng.uniform(0, 0.8)
        if sigma > 0.1:
            r = torch.arange(-2, 3, dtype=torch.float32)
            k = torch.exp(-r ** 2 / (2 * sigma ** 2))
            k = (k[:, None] * k[None]) / k.sum() ** 2
            x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k.expand(3, 1, 5, 5).contiguous(), groups=3)
        x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31)))) * rng.uniform(0, 0.06)
        if rng.random() < 0.5:
            box = tuple(float(v) + rng.uniform(-1, 1) for v in o.box)
            crops.append(ranking_inputs(x, "local", box=box, size=image_size))
        else:
            m = torch.from_numpy(dilate_np(o.mask, int(rng.integers(0, 3))))[None, None].float()
            crops.append(ranking_inputs(x, "masked", edit_mask=m, size=image_size))
        attrs.append((o.colour, o.shape))
    return torch.cat(crops), attrs


ALL_TEXTS = [describe((c, s)) for c in COLOURS for s in SHAPES] + [describe((c, None), shape=False) for c in COLOURS] \
    + [describe((None, s), colour=False) for s in SHAPES]


def _text_attrs(text: str) -> tuple[str | None, str | None]:
    words = text.split()
    return next((w for w in words if w in COLOURS), None), next((w for w in words if w in SHAPES), None)


def train_ranker(out_dir: str | Path, *, steps: int = 1200, batch_size: int = 64, lr: float = 2e-3, device="cpu",
                 seed: int = 0, progress: bool = True) -> Path:
    """Contrastive training of the tiny CLIP on crops ↔ texts. Each step scores the batch's crops
    against all 23 ShapesWorld descriptions; every description the crop's object satisfies is a
    positive (multi-positive InfoNCE, image→text and text→image). Returns ``ranker.pt``."""
    from romlib.progress import tqdm


    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    ranker = ShapesRanker().to(device)
    opt = torch.optim.AdamW(ranker.parameters(), lr=lr, weight_decay=1e-4)
    text_attrs = [_text_attrs(t) for t in ALL_TEXTS]
    rows, t0 = [], time.perf_counter()
    for step in tqdm(range(steps), desc="shapes ranker", disable=not progress, dynamic_ncols=True):
        images, attrs = ranker_batch(rng, batch_size)
        pos = torch.tensor([[(tc is None or tc == c) and (ts is None or ts == s) for tc, ts in text_attrs] for c, s in attrs],
                           device=device, dtype=torch.bool)
        logits = ranker.logits(images.to(device), ALL_TEXTS)  # [B, 23]
        l_img = -(torch.logsumexp(logits.masked_fill(~pos, -1e4), 1) - torch.logsumexp(logits, 1)).mean()
        lt = logits.T
        has = pos.T.any(1)
        l_txt = -(torch.logsumexp(lt.masked_fill(~pos.T, -1e4), 1) - torch.logsumexp(lt, 1))[has].mean()
        loss = (l_img + l_txt) / 2
        for g in opt.param_groups:
            g["lr"] = lr_at(step, step / steps, lr, warmup=50)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        full = torch.tensor([ALL_TEXTS.index(describe(a)) for a in attrs], device=device)
        acc = (logits[:, :15].argmax(1) == full).float().mean()
        rows.append({"step": step + 1, "elapsed_s": round(time.perf_counter() - t0, 2), "loss": loss.item(),
                     "acc_full": acc.item()})
    acc = evaluate_ranker(ranker, seed=10_000)
    path = out / "ranker.pt"
    state = {k: v.detach().cpu().half() for k, v in ranker.state_dict().items()}
    meta = {"steps": steps, "batch_size": batch_size, "seed": seed, "heldout_acc": acc,
            "minutes": round((time.perf_counter() - t0) / 60, 2)}
    with deferred():  # the ranker's three files, together
        write_csv(out / "ranker_loss.csv", rows)
        plot_loss_curve(out / "ranker_loss.csv", out / "ranker_loss.png", title=f"ShapesWorld ranker: {steps} steps")
        atomic_write(path, lambda tmp: torch.save({"state_dict": state, "meta": meta}, tmp))
    log.info("ranker: held-out accuracy %.3f (%d steps) -> %s", acc, steps, path)
    return path


@torch.no_grad()
def evaluate_ranker(ranker, n: int = 512, seed: int = 10_000) -> float:
    """Top-1 accuracy of the ranker at naming colour+shape (15 descriptions) of held-out crops."""
    rng = np.random.default_rng(seed)
    images, attrs = ranker_batch(rng, n)
    logits = ranker.logits(images, ALL_TEXTS[:15])
    full = torch.tensor([ALL_TEXTS.index(describe(a)) for a in attrs], device=logits.device)
    return float((logits.argmax(1) == full).float().mean())


# ----------------------------------------------------------------------------- CLI
def _check_train_out(out: Path, models, *, resume: bool, overwrite: bool, save_every: int) -> None:
    """Before any work: never train over a run unless told how (``resume`` or ``overwrite``)."""
    def check_resume():
        if "inpaint" not in models:
            raise ValueError("--resume continues the inpainting model's training (its checkpoint); the ranker has none: "
                             "train it again with --what ranker --overwrite")
        checkpoint_step(_require_checkpoint(out))  # a damaged checkpoint is named before any work

    check_run_folder(out, [n for m in models for n in RUN_FILES[m]], lambda: describe_run(out, models), resume=resume,
                     overwrite=overwrite, save_every=save_every, check_resume=check_resume)


def _kept(out: Path, models) -> str | None:
    """What an interrupted ``shapes-train`` leaves, and how to go on from it (None: nothing)."""
    held = describe_run(out, models)
    if held is None:
        return None
    if (out / CHECKPOINT).is_file() and "inpaint" in models:
        return f"{held}; rerun the same command with --resume to continue from that step"
    return f"{held}; the ranker was not saved: train it with --what ranker"


def train_command(args) -> int:
    """``romlib shapes-train``: train, write weights and loss curves, optionally install them."""
    import shutil

    logging.getLogger("romlib").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    models = ("inpaint", "ranker") if args.what == "all" else (args.what,)
    _check_train_out(out, models, resume=args.resume, overwrite=args.overwrite, save_every=args.save_every)
    written = []
    t0 = time.perf_counter()
    try:
        if "inpaint" in models:
            written.append(train_inpaint(out, steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                                         device=args.device, seed=args.seed, resume=args.resume, threads=args.threads,
                                         inpaint_input=args.inpaint_input, p_remove=args.p_remove,
                                         p_partial=args.p_partial, p_source=args.p_source, save_every=args.save_every,
                                         progress=not args.quiet))
        if "ranker" in models:
            written.append(train_ranker(out, steps=args.ranker_steps, device=args.device, seed=args.seed,
                                        progress=not args.quiet))
    except KeyboardInterrupt as e:
        with deferred(ignore=True):  # the command is ending: a second Ctrl-C must not cut the report short
            e.kept = _kept(out, models)
        raise
    info = {"command": "romlib shapes-train", "args": {k: v for k, v in vars(args).items() if k != "func"},
            "wall_minutes": round((time.perf_counter() - t0) / 60, 2), "files": [str(p) for p in written]}
    atomic_write(out / "train_info.json", lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
    if args.install:
        WEIGHTS_DIR.mkdir(exist_ok=True)
        for p in written:
            shutil.copy(p, WEIGHTS_DIR / p.name)
        written = [WEIGHTS_DIR / p.name for p in written]
    for p in written:
        print(p)
    curves = "  ".join(str(out / f"{m}_loss.png") for m in models)
    print(f"loss curves: {curves}  ({info['wall_minutes']:.1f} min)")
    return 0

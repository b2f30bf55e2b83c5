"""What the trainers of the embedded models share (:mod:`romlib.shapes.train`, :mod:`romlib.world.train`): the
diffusion's arrays on the training device and GLIDE's hybrid loss, the learning-rate schedule, files written whole
(weights, checkpoints, loss logs and curves) and the check of a run folder before any work."""
from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .runs import refuse_broken_link
from .shapes.backend import read_weights

__all__ = ["DiffusionArrays", "hybrid_loss", "lr_at", "atomic_write", "write_csv", "plot_loss_curve", "half_state", "save_weights",
           "checkpoint_step", "check_run_folder"]

log = logging.getLogger(__name__)


class DiffusionArrays:
    """The diffusion's precomputed arrays as float32 tensors on the training device."""

    NAMES = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
             "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2",
             "posterior_log_variance_clipped", "log_betas")

    def __init__(self, diffusion, device):
        self.num_timesteps = diffusion.num_timesteps
        for n in self.NAMES:
            setattr(self, n, torch.tensor(getattr(diffusion, n), dtype=torch.float32, device=device))

    def at(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)[t][:, None, None, None]


def _approx_std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log p(x) of 8-bit data in [-1, 1] under N(mean, exp(log_scale)²) integrated over its bin."""
    centred = x - mean
    inv = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv * (centred + 1 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv * (centred - 1 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_1m_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_1m_cdf_min, torch.log(delta.clamp(min=1e-12))))


def hybrid_loss(model, arrays: DiffusionArrays, x0, t, noise, weight, **model_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """GLIDE / improved-DDPM hybrid loss, weighted per pixel by ``weight`` [B, 1, H, W]:
    ``(L_simple, L_vlb)``, L_simple = mean w·‖ε − ε_θ‖², L_vlb the KL of the learned-range
    variance with the mean stopped (bits per dimension), the decoder NLL at t = 0."""
    x_t = arrays.at("sqrt_alphas_cumprod", t) * x0 + arrays.at("sqrt_one_minus_alphas_cumprod", t) * noise
    out = model(x_t, t, **model_kwargs)
    eps, v = out[:, :3], out[:, 3:]
    denom = weight.sum() * x0.shape[1]
    mse = ((eps - noise) ** 2 * weight).sum() / denom
    x0_pred = arrays.at("sqrt_recip_alphas_cumprod", t) * x_t - arrays.at("sqrt_recipm1_alphas_cumprod", t) * eps.detach()
    c1, c2 = arrays.at("posterior_mean_coef1", t), arrays.at("posterior_mean_coef2", t)
    mean_p, mean_q = c1 * x0_pred + c2 * x_t, c1 * x0 + c2 * x_t
    logvar_q = arrays.at("posterior_log_variance_clipped", t)
    frac = (v + 1) / 2
    logvar_p = frac * arrays.at("log_betas", t) + (1 - frac) * logvar_q
    kl = 0.5 * (-1.0 + logvar_p - logvar_q + torch.exp(logvar_q - logvar_p) + (mean_q - mean_p) ** 2 * torch.exp(-logvar_p))
    nll = -_discretized_gaussian_log_likelihood(x0, mean_p, 0.5 * logvar_p)
    vb = torch.where((t == 0)[:, None, None, None], nll, kl) / math.log(2.0)
    return mse, (vb * weight).sum() / denom


def lr_at(step: int, progress: float, lr: float, warmup: int = 200) -> float:
    """Linear warm-up, then cosine decay to 10 % as ``progress`` goes 0 → 1."""
    return lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: a reader (or an interrupt) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def plot_loss_curve(csv_path: str | Path, png_path: str | Path | None = None, columns=("loss",), title: str = ""):
    """Plot columns of a training log CSV (smoothed) against the step; saves a PNG; returns the Figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    steps = np.array([float(r["step"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for c in columns:
        y = np.array([float(r[c]) for r in rows])
        k = max(1, len(y) // 50)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(steps, y, alpha=0.25, lw=0.8)
        ax.plot(steps[k - 1:], smooth, label=c)
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.set_yscale("log"), ax.legend(), ax.grid(alpha=0.3)
    ax.set_title(title or Path(csv_path).stem, fontsize=9)
    fig.tight_layout()
    if png_path:
        atomic_write(Path(png_path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return fig


def half_state(model) -> dict:
    """``model``'s state dict on the CPU, floating tensors in float16 (how every shipped weight file stores them)."""
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}


def save_weights(path: Path, model, meta: dict) -> None:
    """The EMA weights in float16 (≈ half the size; loaded back as float32) with the config."""
    state = half_state(model)
    atomic_write(path, lambda tmp: torch.save({"config": model.cfg.to_dict(), "state_dict": state, "meta": meta}, tmp))


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint was saved at (ValueError naming the file when it is damaged)."""
    def step(c):
        if not isinstance(c, dict) or not isinstance(c.get("step"), int):
            raise KeyError("step")
        return c["step"]

    return read_weights(path, step, advice="move it away, or pass --overwrite to train from scratch", mmap=False)


def check_run_folder(out: Path, files: Iterable[str], describe: Callable[[], str | None], *, resume: bool,
                     overwrite: bool, save_every: int, check_resume: Callable[[], None]) -> None:
    """Before any work: never train over a run unless told how. ``files``: the run's files (deleted by
    ``overwrite``); ``describe()``: what the folder holds (None: no run); ``check_resume()``: refuses a ``resume``
    without a usable checkpoint."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the run in --out, or replace it")
    if save_every < 1:
        raise ValueError(f"--save-every {save_every} is out of range; accepted: an integer >= 1")
    refuse_broken_link(out)  # was a bare "[Errno 17] File exists"
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder; choose another --out")
    if resume:
        check_resume()
        return
    held = describe()
    if held and not overwrite:
        raise FileExistsError(f"--out already holds a training run ({held}); pass --resume to continue it, --overwrite "
                              "to replace it, or choose another --out")
    if held:
        for n in files:
            (out / n).unlink(missing_ok=True)
        log.info("--overwrite: deleted the earlier run (%s)", held)

"""The embedded world's training recipes and the arguments of its training command, as plain data.

This module imports no torch (only argparse and dataclasses): ``romlib world-train --help`` and the CLI's
argument checks read it, and :mod:`romlib.world.train` (the trainers) and :mod:`romlib.world.backend` (the
weight files a backend needs) take every fact from here.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

__all__ = ["MODELS", "PIXEL_MODELS", "LATENT_MODELS", "RUN_FILES", "WEIGHT_FILES", "Recipe", "RECIPES", "TRAIN_COMMAND", "add_train_args"]

#: the ``world`` backend's models (pixel GLIDE pair, segmenter, ranker) and the latent pair of ``world-latent``
#: (notebook 07: SD's classes, trained on the world; it shares the segmenter and the ranker)
PIXEL_MODELS = ("base", "upsampler", "segmenter", "ranker")
LATENT_MODELS = ("vae", "latent")
MODELS = PIXEL_MODELS + LATENT_MODELS
#: the files a run writes per model: the weights, the resumable checkpoint, the loss log and its curve
RUN_FILES = {m: (f"{m}.pt", f"{m}_checkpoint.pt", f"{m}_loss.csv", f"{m}_loss.png") for m in MODELS}
#: the weight file of each model (what the ``world`` backend reads from its weights folder)
WEIGHT_FILES = {m: files[0] for m, files in RUN_FILES.items()}
#: the command that trains the world's models (``romlib world-train`` runs the same)
TRAIN_COMMAND = "python -m romlib.world.train"


@dataclass(frozen=True)
class Recipe:
    """One model's default training run: steps, batch size, peak learning rate, warm-up steps, EMA
    decay, weight decay, and ``minutes``, the wall-time cap that keeps the run within its budget."""

    steps: int
    batch_size: int
    lr: float
    warmup: int = 200
    ema: float = 0.999
    weight_decay: float = 0.0
    minutes: float | None = None


#: the shipped recipes: steps from the step times measured on the 2-core CPU (docs/world_training.md)
RECIPES = {
    "base": Recipe(steps=7000, batch_size=32, lr=1e-3, minutes=105),
    "upsampler": Recipe(steps=7000, batch_size=32, lr=1e-3, minutes=105),
    "segmenter": Recipe(steps=1500, batch_size=32, lr=1e-3, warmup=100, ema=0.995, weight_decay=1e-4, minutes=20),
    "ranker": Recipe(steps=1500, batch_size=64, lr=2e-3, warmup=50, ema=0.99, weight_decay=1e-4, minutes=10),
    "vae": Recipe(steps=2000, batch_size=32, lr=1e-3, warmup=100, ema=0.995, minutes=20),
    "latent": Recipe(steps=4000, batch_size=32, lr=5e-4, warmup=200, ema=0.999, minutes=45),
}


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Arguments of the world's training command (``python -m romlib.world.train``, ``romlib world-train``)."""
    p.add_argument("--out", default="world_train",
                   help="output folder for weights, checkpoints and loss curves; a folder that holds a run is refused "
                        "unless --resume or --overwrite")
    p.add_argument("--what", choices=["all", *MODELS], default="all", help="which model(s) to train (default all)")
    for m in MODELS:
        r = RECIPES[m]
        p.add_argument(f"--{m}-steps", type=int, default=r.steps, help=f"{m} training steps (default {r.steps})")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop each model's training after this many minutes (default: each recipe's cap, "
                        + ", ".join(f"{m} {r.minutes:g}" for m, r in RECIPES.items()) + "; 0: no cap)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size for every model trained (default: each recipe's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--save-every", type=int, default=250,
                   help="write the resumable checkpoint every this many steps (default 250)")
    p.add_argument("--resume", action="store_true",
                   help="continue each model from its checkpoint in --out (a model without one starts from scratch)")
    p.add_argument("--overwrite", action="store_true", help="delete the earlier run's files (of the models trained) first")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

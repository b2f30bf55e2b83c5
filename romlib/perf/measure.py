"""Measuring one stage: device sync, peak memory, FLOPs of a forward pass, the rows of the benchmark table."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..models.glide import GlideUNet


def forward_gflop(model, size: int, low_res: bool = False) -> float:
    """GFLOP of one forward pass for one image of a GLIDE UNet (or of its :class:`GlideConfig`),
    counted on the meta device, free."""

    from torch.utils.flop_counter import FlopCounterMode


    with torch.device("meta"):
        meta = GlideUNet(getattr(model, "cfg", model))
    meta.nan_guard = False
    ctx = meta.cfg.text_ctx
    kw = dict(x=torch.zeros(1, 3, size, size, device="meta"), timesteps=torch.zeros(1, dtype=torch.long, device="meta"),
              tokens=torch.zeros(1, ctx, dtype=torch.long, device="meta"), mask=torch.ones(1, ctx, dtype=torch.bool, device="meta"),
              inpaint_image=torch.zeros(1, 3, size, size, device="meta"), inpaint_mask=torch.ones(1, 1, size, size, device="meta"))
    if low_res:
        kw["low_res"] = torch.zeros(1, 3, size // 4, size // 4, device="meta")
    with FlopCounterMode(display=False) as fc:
        meta(**kw)
    return fc.get_total_flops() / 1e9


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


@dataclass
class BenchRow:
    """One timed edit: ``path`` is ``plain`` (the plain eager path), ``eager`` (the fast eager
    path), ``compile:<mode>`` or ``reference`` (glide-text2im's own loop). Seconds of the steady
    state (after the warm-up edit); ``warmup_s``: the warm-up edit (a few steps; compilation
    included); ``compile_s``: the first compiled call of each UNet, summed."""

    path: str
    dtype: str
    batch: int
    steps: int
    upsample_steps: int
    base_s: float | None
    upsample_s: float | None
    rank_s: float | None
    total_s: float
    warmup_s: float | None
    compile_s: float | None
    peak_gib: float | None
    gflop: float  # the UNets' work in the timed edit
    note: str = ""
    sampler: str = "ancestral"  # the base model's sampler (romlib.config.EditConfig.sampler)

    @property
    def tflops(self) -> float | None:
        secs = (self.base_s or 0) + (self.upsample_s or 0) or self.total_s
        return self.gflop / 1e3 / secs if self.gflop and secs > 0 else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _bench_input(size: int):
    """A deterministic 320×256 test photo and a box mask (white = edit)."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    W, H = 320, 256
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 255 / W, y * 255 / H, 128 + 60 * np.sin(x / 17.0)], -1) + g.normal(0, 8, (H, W, 3))
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[H // 4:3 * H // 4, W // 3:2 * W // 3] = 255
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)), Image.fromarray(mask)

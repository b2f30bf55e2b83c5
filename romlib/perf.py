"""Speed: :func:`accelerate` (channels-last, ``torch.compile``) and ``romlib bench``, which times the
stages of one edit and reports seconds, peak memory and TFLOP/s.

On a GPU it uses the official model sizes with random weights (timing does not depend on the
weights, and nothing is downloaded); on the CPU tiny models of the same architectures, so that
the benchmark itself is tested in CI. The work per forward pass is counted with
``torch.utils.flop_counter`` (238 GFLOP for the base model, 1282 GFLOP for the upsampler, per image).
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["accelerate", "CompileMode", "BenchRow", "run_bench", "format_bench", "forward_gflop", "add_bench_args", "bench_command"]


log = logging.getLogger(__name__)

# Making GLIDE sampling fast without changing what it computes (issue: GPU speed).
#
# What the default path already does (``romlib.models.glide``, ``romlib.sampling.inpaint``):
#
# * half precision for exactly the layers the reference runs in half (``dtype=torch.float16``);
# * ``scaled_dot_product_attention`` (flash / memory-efficient kernels) instead of einsum + softmax;
# * the text transformer once per call (``encode_text`` → ``text_emb=``), on the distinct prompts only;
# * both guidance branches in one forward pass; noise drawn once per sample.
#
# :func:`accelerate` adds what needs a GPU to pay off: channels-last memory format for the
# convolutions, and ``torch.compile`` of the UNet body (``mode="reduce-overhead"`` adds CUDA
# graphs, i.e. one launch per step). Compilation falls back to eager execution, with a warning,
# wherever it is unavailable or fails.
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]


def accelerate(model, *, channels_last: bool | None = None, compile: CompileMode = "off"):
    """Speed options for a :class:`romlib.models.glide.GlideUNet` (or any model with ``_core``), in place.

    ``channels_last`` defaults to True on CUDA. ``compile`` wraps the model's body in
    ``torch.compile`` (first call compiles: about a minute; worth it for many samples).
    Returns the model.
    """
    device = next(model.parameters()).device
    if channels_last is None:
        channels_last = device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile != "off":
        eager = model._forward
        try:
            compiled = torch.compile(eager, mode=compile, dynamic=False)
        except Exception as e:  # e.g. no compiler toolchain, unsupported platform
            log.warning("torch.compile unavailable (%s); running eagerly", e)
            return model

        def core(*args, **kwargs):
            try:
                return compiled(*args, **kwargs)
            except Exception as e:  # a backend failure at the first call: keep working, eagerly
                log.warning("torch.compile failed (%s: %s); falling back to eager execution", type(e).__name__, e)
                model._core = eager
                return eager(*args, **kwargs)

        model._core = core
    return model


@dataclass
class BenchRow:
    stage: str
    dtype: str
    batch: int
    steps: int
    seconds: float
    peak_gib: float | None
    gflop: float | None  # total work of the stage

    @property
    def tflops(self) -> float | None:
        return self.gflop / 1e3 / self.seconds if self.gflop and self.seconds > 0 else None


def forward_gflop(model, size: int, low_res: bool = False) -> float:
    """GFLOP of one forward pass for one image (counted on the meta device, free)."""

    from torch.utils.flop_counter import FlopCounterMode

    from .models.glide import GlideUNet

    with torch.device("meta"):
        meta = GlideUNet(model.cfg)
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
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    secs = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return out, secs, peak


def _models(device, tiny: bool, dtype):
    from .models.glide import create_model
    from .models.tiny import tiny_glide

    if tiny:
        from .models.tokenizers import ByteTokenizer

        tok = ByteTokenizer()
        base, up = tiny_glide(n_vocab=tok.n_vocab), tiny_glide("upsample-inpaint", n_vocab=tok.n_vocab, seed=1)
    else:
        from .models.tokenizers import ByteTokenizer

        tok = ByteTokenizer()  # timing only: any tokenizer with ids < 50257 will do
        base, up = create_model("base-inpaint", device=device), create_model("upsample-inpaint", device=device)
    base, up = base.to(device), up.to(device)
    if dtype == torch.float16:
        base.convert_to_fp16(), up.convert_to_fp16()
    return base, up, tok


def run_bench(device=None, *, batches=(4, 24), dtypes=("fp16", "fp32"), tiny: bool | None = None, steps: int = 100,
              upsample_steps: str = "fast27", compile: str = "off", ranking: bool = True, progress: bool = False) -> list[BenchRow]:
    """Time base sampling (CCF, 2B images per step), upsampling and ranking for each batch size
    and dtype. ``tiny`` defaults to True on the CPU."""
    from .sampling.diffusion import create_diffusion
    from .sampling.inpaint import prepare_base, sample_base, sample_upsample

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = device.type != "cuda" if tiny is None else tiny
    rows: list[BenchRow] = []
    g = torch.Generator().manual_seed(0)
    for dname in dtypes:
        dtype = {"fp16": torch.float16, "fp32": torch.float32}[dname]
        base, up, tok = _models(device, tiny, dtype)
        accelerate(base, compile=compile), accelerate(up, compile=compile)
        s_base, s_up = base.cfg.image_size, up.cfg.image_size
        gf_base, gf_up = forward_gflop(base, s_base), forward_gflop(up, s_up, low_res=True)
        image = (torch.rand(1, 3, s_up, s_up, generator=g) * 2 - 1).to(device)
        keep_up = torch.ones(1, 1, s_up, s_up, device=device)
        keep_up[..., s_up // 4:s_up // 2, s_up // 4:3 * s_up // 4] = 0
        small = torch.nn.functional.interpolate(image, size=s_base, mode="bilinear", antialias=True)
        keep = torch.nn.functional.interpolate(keep_up, size=s_base, mode="nearest")
        d_base = create_diffusion(1000, "squaredcos_cap_v2", str(steps))
        d_up = create_diffusion(1000, "linear", upsample_steps)
        n_up = len(d_up.timestep_map)
        for b in batches:
            setup = prepare_base(base, tok, image=small, keep_mask=keep, target="a blue truck", ref="the red car", rule="ccf")
            with torch.inference_mode():
                sample_base(setup, create_diffusion(1000, "squaredcos_cap_v2", "2"), samples=b, batch_size=b, device=device)  # warm-up
                samples, secs, peak = _timed(lambda: sample_base(setup, d_base, samples=b, batch_size=b, device=device,
                                                                  progress=progress), device)
            rows.append(BenchRow("base (CCF, 2B/step)", dname, b, steps, secs, peak, gf_base * 2 * b * steps))
            with torch.inference_mode():
                _, secs, peak = _timed(lambda: sample_upsample(up, d_up, tok, low_res=samples, image=image, keep_mask=keep_up,
                                                               target="a blue truck", batch_size=b, progress=progress), device)
            rows.append(BenchRow("upsample", dname, b, n_up, secs, peak, gf_up * b * n_up))
        base = up = None  # free before the next dtype
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if ranking:
        rows += _bench_ranking(device, tiny, batches)
    return rows


def _bench_ranking(device, tiny, batches) -> list[BenchRow]:
    from .models.tiny import tiny_clip_ranker
    from .rank import ClipRanker, rank_samples

    if tiny:
        ranker = tiny_clip_ranker()
    else:
        import open_clip

        model = open_clip.create_model("ViT-B-16", pretrained=None, device=device).eval()
        ranker = ClipRanker(model, open_clip.get_tokenizer("ViT-B-16"))
    rows = []
    for b in batches:
        frames = torch.rand(b, 3, 256, 256, device=device) * 2 - 1
        _, secs, peak = _timed(lambda: rank_samples(ranker, frames, "a blue truck", "local", box=(64, 64, 192, 160)), device)
        rows.append(BenchRow("rank (CLIP, local)", "fp32", b, 1, secs, peak, None))
    return rows


def format_bench(rows: list[BenchRow], device: str = "") -> str:
    head = f"{'stage':<22}{'dtype':>6}{'B':>5}{'steps':>7}{'seconds':>10}{'peak GiB':>10}{'GFLOP':>12}{'TFLOP/s':>9}"
    lines = [f"romlib bench on {device}" if device else "romlib bench", head, "-" * len(head)]
    for r in rows:
        peak = f"{r.peak_gib:.2f}" if r.peak_gib is not None else "-"
        gf = f"{r.gflop:.0f}" if r.gflop else "-"
        tf = f"{r.tflops:.1f}" if r.tflops else "-"
        lines.append(f"{r.stage:<22}{r.dtype:>6}{r.batch:>5}{r.steps:>7}{r.seconds:>10.2f}{peak:>10}{gf:>12}{tf:>9}")
    return "\n".join(lines)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes B (default: 4 24 on a GPU, 2 4 on the CPU)")
    p.add_argument("--dtype", nargs="+", choices=["fp16", "fp32"], default=None,
                   help="precisions to time (default: fp16 fp32 on a GPU; fp32 on the CPU, where half is an emulated slow path)")
    p.add_argument("--steps", type=int, default=None, help="base steps (default: 100 on a GPU, 10 on the CPU)")
    p.add_argument("--upsample-steps", default=None, help="upsampler respacing (default: fast27 on a GPU, 3 on the CPU)")
    p.add_argument("--full", action="store_true", help="official sizes even on the CPU (slow)")
    p.add_argument("--compile", choices=["off", "default", "reduce-overhead", "max-autotune"], default="off",
                   help="torch.compile the UNets (GPU; the first call compiles)")
    p.add_argument("--no-rank", action="store_true", help="skip the ranking stage")


def bench_command(args) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    tiny = not (gpu or args.full)
    rows = run_bench(device, batches=tuple(args.batch or ((4, 24) if gpu else (2, 4))), dtypes=tuple(args.dtype or (("fp16", "fp32") if gpu else ("fp32",))), tiny=tiny,
                     steps=args.steps or (100 if not tiny else 10), upsample_steps=args.upsample_steps or ("fast27" if not tiny else "3"),
                     compile=args.compile, ranking=not args.no_rank)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(format_bench(rows, f"{name}, {'tiny models' if tiny else 'official sizes, random weights'}"))
    return 0

"""``romlib bench``: times :meth:`romlib.pipeline.ROMPipeline.edit` itself, stage by stage, and the fast path
against the plain one."""
from __future__ import annotations

import json
import logging
import time
from typing import Literal

import torch

from .backends import tiny_clip_ranker
from .contracts import Backend
from .interrupts import deferred
from .models.glide import create_model
from .models.tiny import tiny_glide
from .models.tokenizers import ByteTokenizer
from .pipeline import ROMPipeline
from .rank import ClipRanker
from .sampling.samplers import SAMPLERS
from .perf.fast import CompiledCore, accelerate
from .perf.measure import BenchRow, _bench_input, _peak, _peak_reset, _sync, forward_gflop
from .perf.reference import import_reference, run_reference

log = logging.getLogger("romlib.perf")



def _bench_models(device, tiny: bool, dtype: torch.dtype):
    tok = ByteTokenizer()  # timing only: any tokenizer with ids < n_vocab will do
    if tiny:
        base, up = tiny_glide(n_vocab=tok.n_vocab), tiny_glide("upsample-inpaint", n_vocab=tok.n_vocab, seed=1)
        ranker = tiny_clip_ranker()
    else:
        import open_clip


        base, up = create_model("base-inpaint", device=device), create_model("upsample-inpaint", device=device)
        model = open_clip.create_model("ViT-B-16", pretrained=None, device=device).eval().requires_grad_(False)
        ranker = ClipRanker(model, open_clip.get_tokenizer("ViT-B-16"))
    base, up = base.to(device), up.to(device)
    if dtype == torch.float16:
        base.convert_to_fp16(), up.convert_to_fp16()
    return base, up, tok, ranker


def _configure(models, path: str, cache_dir=None):
    for m in models:
        if path == "plain":
            accelerate(m, fast=False)
        elif path == "eager":
            accelerate(m)
        elif path.startswith("compile:"):
            accelerate(m, compile=path.split(":", 1)[1], cache_dir=cache_dir)
        else:
            raise ValueError(f"unknown bench path {path!r}; accepted: plain, eager, compile:<mode>")


def run_bench(device=None, *, batches=(4, 24), dtype: Literal["fp16", "fp32"] | None = None, tiny: bool | None = None,
              steps: int = 100, upsample_steps: str = "fast27", paths=("eager",), reference: str | None = None,
              ranking: bool = True, micro_batch: int | None = None, warmup_steps: int = 3, cache_dir=None,
              progress: bool = False, sampler: str = "ancestral") -> list[BenchRow]:
    """Time ``ROMPipeline.edit`` (CCF, mask given, B samples, ``steps`` base steps and
    ``upsample_steps``) for each path and batch size; ``tiny`` defaults to True on the CPU,
    ``dtype`` to fp16 on a GPU and fp32 on the CPU. Every path first runs a warm-up edit of
    ``warmup_steps`` steps at every batch size (compilation, CUDA graphs, kernel selection),
    then the timed edit. ``sampler``: the base model's (``ancestral``, ``ddim``, ``dpmpp-2m``; the upsampler keeps
    its own). ``reference``: a glide-text2im checkout, timed the same way (its own ancestral loop)."""
    if warmup_steps < 2:
        raise ValueError(f"warmup_steps={warmup_steps} is too few; accepted: an integer >= 2 (3 lets CUDA graphs record)")

    if reference:
        import_reference(reference)  # a wrong path fails now, not after the timing
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = device.type != "cuda" if tiny is None else tiny
    dtype = dtype or ("fp16" if device.type == "cuda" else "fp32")
    tdtype = {"fp16": torch.float16, "fp32": torch.float32}[dtype]
    image, mask = _bench_input(256)
    rows: list[BenchRow] = []
    for path in paths:
        base, up, tok, ranker = _bench_models(device, tiny, tdtype)
        _configure((base, up), path, cache_dir)
        backend = Backend(name="bench", segmenter=None, base_model=base, upsampler=up, tokenizer=tok,
                          ranker=ranker if ranking else None, base_steps=str(steps), upsample_steps=str(upsample_steps))
        pipe = ROMPipeline(backend, device=device)
        gf_base = forward_gflop(base, base.cfg.image_size)
        gf_up = forward_gflop(up, up.cfg.image_size, low_res=True)
        n_base = len(pipe.diffusion("base").timestep_map)
        n_up = len(pipe.diffusion("upsample").timestep_map)
        knobs = dict(mask=mask, seed=0, progress=progress, batch_size=micro_batch, guidance="ccf", sampler=sampler)
        if not ranking:
            knobs["rank"] = "none"
        for b in batches:
            backend.upsample_steps = str(warmup_steps)
            t0 = time.perf_counter()
            with torch.inference_mode():
                pipe.edit(image, "the red car", "a blue truck", samples=b, steps=str(warmup_steps), **knobs)
            _sync(device)
            warmup = time.perf_counter() - t0
            backend.upsample_steps = str(upsample_steps)
            _peak_reset(device)
            _sync(device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                result = pipe.edit(image, "the red car", "a blue truck", samples=b, steps=str(steps), **knobs)
            _sync(device)
            total = time.perf_counter() - t0
            cores = [m._core for m in (base, up) if isinstance(m._core, CompiledCore)]
            compile_s = sum(c.first_call_s or 0 for c in cores) if cores else None
            notes = []
            if tdtype == torch.float16 and (base.dtype != tdtype or up.dtype != tdtype):
                notes.append("fell back to fp32 (non-finite fp16)")
            if path.startswith("compile:") and len(cores) < 2:
                notes.append("compile failed: eager (see the warning)")
            note = "; ".join(notes)
            t = result.timings
            rows.append(BenchRow(path, dtype, b, n_base, n_up, t.get("base"), t.get("upsample"), t.get("rank"), total,
                                 warmup, compile_s, _peak(device), gf_base * 2 * b * n_base + gf_up * b * n_up, note,
                                 sampler))
            log.info("bench %s B=%d: %.2f s", path, b, total)
        del pipe, backend, base, up
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if reference:
        rows += run_reference(reference, device, batches=batches, dtype=dtype, tiny=tiny, steps=steps,
                              upsample_steps=upsample_steps, warmup_steps=warmup_steps)
    return rows


# ----------------------------------------------------------------------------- fast vs plain
def fast_vs_plain(model, *, batch: int = 2, seed: int = 0) -> dict:
    """One forward pass of ``model`` (in its current dtype) on the fast and on the plain path,
    and the plain path in float32 as the yardstick, on seeded inputs. Returns
    ``{"fast_vs_plain": max|fast − plain| / max|plain32|, "half_vs_fp32": max|plain − plain32| /
    max|plain32|, "finite": bool}``: the fast path is right when the first is of the order of the
    second (half-precision rounding)."""
    cfg = model.cfg
    device = next(model.parameters()).device
    size = cfg.image_size or 64
    g = torch.Generator().manual_seed(seed)
    kw = dict(x=torch.randn(batch, 3, size, size, generator=g), timesteps=torch.linspace(10, 900, batch).long(),
              tokens=torch.randint(0, min(cfg.n_vocab, 256), (batch, cfg.text_ctx), generator=g),
              mask=torch.arange(cfg.text_ctx).expand(batch, -1) < 8,
              inpaint_image=torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
              inpaint_mask=(torch.rand(batch, 1, size, size, generator=g) > 0.5).float())
    if cfg.super_res:
        kw["low_res"] = torch.rand(batch, 3, size // 4, size // 4, generator=g) * 2 - 1
    kw = {k: v.to(device) for k, v in kw.items()}
    was_fast, guard, half = model.fast, model.nan_guard, model.dtype == torch.float16
    model.nan_guard = False
    try:
        with torch.inference_mode():
            fast = model.set_fast(True)(**kw).float()
            plain = model.set_fast(False)(**kw).float()
            if half:
                model.convert_to_fp32()
            ref = model(**kw).float()
            if half:
                model.convert_to_fp16()
    finally:
        model.set_fast(was_fast)
        model.nan_guard = guard
    scale = ref.abs().max().item()
    return {"fast_vs_plain": (fast - plain).abs().max().item() / scale,
            "half_vs_fp32": (plain - ref).abs().max().item() / scale,
            "finite": bool(torch.isfinite(fast).all() and torch.isfinite(plain).all())}


# ----------------------------------------------------------------------------- output
_COLUMNS = [("path", "path", 18, "{}"), ("sampler", "sampler", 10, "{}"), ("dtype", "dtype", 6, "{}"), ("batch", "B", 4, "{}"),
            ("steps", "steps", 8, "{}"), ("warmup_s", "warm-up s", 10, "{:.2f}"), ("compile_s", "compile s", 10, "{:.1f}"),
            ("base_s", "base s", 8, "{:.2f}"), ("upsample_s", "up s", 8, "{:.2f}"), ("rank_s", "rank s", 7, "{:.2f}"),
            ("total_s", "total s", 8, "{:.2f}"), ("ratio", "x ref", 6, "{:.2f}"), ("peak_gib", "peak GiB", 9, "{:.2f}"),
            ("tflops", "TFLOP/s", 8, "{:.3g}")]


def format_bench(rows: list[BenchRow], title: str = "", *, markdown: bool = False) -> str:
    """A table of :class:`BenchRow`; ``x ref`` is the total time over the reference's at the same
    B and dtype (when the reference was timed)."""
    ref = {(r.batch, r.dtype): r.total_s for r in rows if r.path == "reference"}
    cells = []
    for r in rows:
        values = {**r.to_dict(), "steps": f"{r.steps}+{r.upsample_steps}", "tflops": r.tflops,
                  "ratio": r.total_s / ref[(r.batch, r.dtype)] if (r.batch, r.dtype) in ref else None}
        cells.append([("-" if values[k] is None else fmt.format(values[k])) for k, _, _, fmt in _COLUMNS]
                     + [r.note])
    heads = [h for _, h, _, _ in _COLUMNS] + ["note"]
    if markdown:
        lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(heads) + " |",
                                                          "|" + "---|" * len(heads)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [w for _, _, w, _ in _COLUMNS]
    fmt_row = lambda c: "".join(f"{v:<{w}}" if i == 0 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(c, widths))) + (
        f"  {c[-1]}" if c[-1] else "")
    head = fmt_row(heads[:-1] + [""])
    return "\n".join(([title] if title else []) + [head, "-" * len(head)] + [fmt_row(c) for c in cells])


def bench_command(args) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    tiny = not (gpu or args.full)
    dtype = args.dtype or ("fp16" if gpu else "fp32")
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    title = f"romlib bench on {name}, {'tiny models' if tiny else 'official sizes, random weights'}"
    if args.fast_vs_plain:
        base, up, _, _ = _bench_models(device, tiny, {"fp16": torch.float16, "fp32": torch.float32}[dtype])
        lines = [f"fast vs plain path, {dtype}, {title[len('romlib bench on '):]}"]
        for label, model in (("base", base), ("upsampler", up)):
            d = fast_vs_plain(model)
            lines.append(f"{label:<10} max|fast-plain|/max|fp32| = {d['fast_vs_plain']:.2e}   "
                         f"max|half-fp32|/max|fp32| = {d['half_vs_fp32']:.2e}   finite = {d['finite']}")
        print("\n".join(lines))
        return 0
    paths = tuple(args.paths or ((f"compile:{args.compile}",) if args.compile not in (None, "off") else ("eager",)))
    rows = run_bench(device, batches=tuple(args.batch or ((4, 24) if gpu else (2, 4))), dtype=dtype, tiny=tiny,
                     steps=args.steps or (100 if not tiny else 10),
                     upsample_steps=args.upsample_steps or ("fast27" if not tiny else "3"), paths=paths,
                     reference=args.reference, ranking=not args.no_rank, micro_batch=args.micro_batch,
                     cache_dir=args.cache_dir, sampler=args.sampler)
    print(format_bench(rows, title, markdown=args.markdown))
    if args.json:
        text = "".join(json.dumps({**r.to_dict(), "device": name, "tiny": tiny}) + "\n" for r in rows)
        with deferred(), open(args.json, "a") as f:  # the rows whole: an interrupt waits for the append
            f.write(text)
    return 0

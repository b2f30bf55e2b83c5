"""Speed: :func:`accelerate` / :func:`accelerate_backend` (fast eager path, ``torch.compile``) and
``romlib bench``, which times :meth:`romlib.pipeline.ROMPipeline.edit` itself.

What is fast and why is written up in ``docs/performance.md``. In short:

* the **fast eager path** (:meth:`romlib.models.glide.GlideUNet.set_fast`, on by default): half
  precision GroupNorm + SiLU with float32 statistics and no float32 copy of the activations, the
  FiLM scale-shift in one ``addcmul``, contiguous (NCHW) layout: CUDA's GroupNorm converts a
  channels-last input back to NCHW, so channels-last only adds layout conversions;
* the **compiled path** (``compile=``): ``torch.compile`` of each UNet's body, one compilation for
  every micro-batch size (the batch dimension is marked dynamic; a batch of 1 is padded to 2, which
  the compiler would otherwise specialise), CUDA graphs with ``"reduce-overhead"``, the compiled
  artifacts cached under ``$ROMLIB_CACHE/torch-compile`` so that a second process starts from
  the cache, and eager execution, with a warning, wherever compilation is unavailable or fails.

``romlib bench`` builds a pipeline of the official model sizes with random weights on a GPU (timing
does not depend on the weights, and nothing is downloaded), tiny models of the same architectures
on the CPU, and times whole edits with a given mask after a warm-up edit of every batch size:
per-stage seconds, the warm-up (compilation) separately, peak memory and TFLOP/s. The work per
forward pass is counted with ``torch.utils.flop_counter`` (238 GFLOP for the base model, 1282 GFLOP
for the upsampler, per image). ``--reference PATH`` times a glide-text2im checkout's own sampling
loop in the same process, imported from that path at run time only.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

__all__ = ["accelerate", "accelerate_backend", "CompileMode", "CompiledCore", "compile_cache_dir", "BenchRow",
           "run_bench", "format_bench", "forward_gflop", "fast_vs_plain", "add_bench_args", "bench_command",
           "AUTO_COMPILE_COST_S"]

log = logging.getLogger(__name__)

CompileMode = Literal["off", "auto", "default", "reduce-overhead", "max-autotune"]
COMPILE_MODES = ("off", "auto", "default", "reduce-overhead", "max-autotune")
AUTO_COMPILE_COST_S = 60.0  # first compile of one GLIDE UNet on a GPU, before any cached measurement
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


# ----------------------------------------------------------------------------- compiled path
def compile_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where compiled artifacts go: ``cache_dir``, else ``$ROMLIB_CACHE/torch-compile``
    (:func:`romlib.hub.cache_dir`). Points inductor's cache (FX graphs, AOT autograd, Triton
    kernels, autotuning) there through ``TORCHINDUCTOR_CACHE_DIR``, unless the user set that
    variable to somewhere of their own. Returns the directory in use."""
    from . import hub

    global _set_by_us
    wanted = Path(cache_dir).expanduser() if cache_dir is not None else hub.cache_dir() / "torch-compile"
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or cache_dir is not None or current in (_inductor_default_dir(), _set_by_us):
        wanted.mkdir(parents=True, exist_ok=True)
        _set_by_us = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(wanted.resolve())
        return wanted.resolve()
    return Path(current)


_set_by_us: str | None = None  # the TORCHINDUCTOR_CACHE_DIR this module chose (a user's own is left alone)


def _inductor_default_dir() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        return os.path.abspath(default_cache_dir())
    except Exception:  # private API moved: only the explicit variable counts then
        return None


def _compile_key(model, mode: str) -> str:
    """Names one compiled model: torch version, device, dtype, mode and the architecture."""
    device = next(model.parameters()).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    cfg = json.dumps(model.cfg.to_dict(), sort_keys=True, default=str) if hasattr(model, "cfg") else type(model).__name__
    text = f"{torch.__version__}|{name}|{getattr(model, 'dtype', '')}|{mode}|{cfg}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _record_path(model, mode: str) -> Path:
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or compile_cache_dir()) / "romlib" / f"{_compile_key(model, mode)}.json"


def _pad_rows(t, n: int, m: int):
    """``t`` contiguous, with its first dimension padded from ``n`` to ``m`` rows (copies of the
    last row). Contiguous inputs give the compiler one stride pattern whoever calls (expanded or
    permuted views would each be guarded, and recompiled, separately)."""
    if not isinstance(t, torch.Tensor):
        return t
    if t.dim() and t.shape[0] == n and m > n:
        t = torch.cat([t, t[-1:].expand(m - n, *t.shape[1:])])
    return t.contiguous()


class CompiledCore:
    """A :class:`~romlib.models.glide.GlideUNet` body under ``torch.compile`` (it replaces the
    model's ``_core``; :func:`accelerate` installs it).

    * one compilation serves every batch size: the batch dimension of every input is marked
      dynamic, inputs are made contiguous, and a batch of 1 is padded to 2 (the compiler
      specialises sizes 0 and 1); each row is computed independently, so padding does not
      change the rows that are kept (up to the kernels' batch-size-dependent rounding);
    * CUDA-graph modes (``"reduce-overhead"``, ``"max-autotune"``) start a new graph step per
      call and return a copy of the output, which the next replay would overwrite;
    * ``after_s`` (the ``"auto"`` rule): run eagerly until this model's eager forward passes
      have taken ``after_s`` seconds, then compile (see :func:`accelerate_backend`);
    * any failure of the compiler (at wrapping or at the first call) logs a warning and the
      model runs eagerly from then on.
    """

    def __init__(self, model, mode: str = "default", *, after_s: float | None = None, backend: str = "inductor",
                 dynamic_batch: bool = True):
        self.model, self.mode, self.after_s, self.backend = model, mode, after_s, backend
        self.dynamic_batch = dynamic_batch
        self.eager = model._forward
        self.compiled = None
        self.eager_s = 0.0  # time spent in eager forward passes while waiting (auto)
        self.first_call_s: float | None = None  # the first compiled call: compilation included
        self.calls = 0

    def _compile(self):
        kwargs = {"backend": self.backend} if self.backend != "inductor" else {"mode": self.mode}
        try:
            self.compiled = torch.compile(self.eager, dynamic=None if self.dynamic_batch else False, **kwargs)
        except Exception as e:  # e.g. no compiler toolchain, unsupported platform
            self._give_up(e)

    def _give_up(self, e: Exception):
        cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        hint = (f" (the compile cache may be damaged, e.g. by a process killed while compiling: delete {cache})"
                if cache and cache in str(e) else "")
        log.warning("torch.compile failed (%s: %s); falling back to eager execution%s", type(e).__name__, e, hint)
        self.model._core = self.eager
        self.compiled = None

    def __call__(self, x, timesteps, tokens, mask, inpaint_image, inpaint_mask, low_res, text_emb):
        args = (x, timesteps, tokens, mask, inpaint_image, inpaint_mask, low_res, text_emb)
        if self.compiled is None and self.after_s is not None and self.eager_s < self.after_s:
            t0 = time.perf_counter()
            out = self.eager(*args)
            _sync(x.device)  # costs nothing extra: the model's NaN guard waits for the output anyway
            self.eager_s += time.perf_counter() - t0
            if self.eager_s >= self.after_s:
                log.info("compile='auto': %.0f s of eager forward passes >= the compile cost (%.0f s); compiling "
                         "the %s now", self.eager_s, self.after_s, type(self.model).__name__)
            return out
        if self.compiled is None:
            self._compile()
            if self.compiled is None:
                return self.eager(*args)
        try:
            t0 = time.perf_counter()
            out = self._run(*args)
            if self.first_call_s is None:
                _sync(x.device)
                self.first_call_s = time.perf_counter() - t0
                self._record()
            self.calls += 1
            return out
        except Exception as e:  # a backend failure at the first call: keep working, eagerly
            self._give_up(e)
            return self.eager(*args)

    def _run(self, x, timesteps, tokens, mask, inpaint_image, inpaint_mask, low_res, text_emb):
        n = x.shape[0]
        m = max(n, 2) if self.dynamic_batch else n
        args = [_pad_rows(a, n, m) for a in (x, timesteps, tokens, mask, inpaint_image, inpaint_mask, low_res)]
        if text_emb is not None:
            text_emb = {k: _pad_rows(v, n, m) for k, v in text_emb.items()}
        if self.dynamic_batch:
            for a in [*args, *(text_emb or {}).values()]:
                if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == m:
                    torch._dynamo.maybe_mark_dynamic(a, 0)
        cuda_graphs = self.mode in _CUDA_GRAPH_MODES and x.device.type == "cuda"
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(*args, text_emb)
        out = out[:n]
        return out.clone() if cuda_graphs else out

    def _record(self):
        """Remember how long this model's first compiled call took (read by the ``"auto"`` rule)."""
        try:
            path = _record_path(self.model, self.mode)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"first_call_s": self.first_call_s, "mode": self.mode, "torch": torch.__version__}))
        except OSError as e:
            log.debug("could not record the compile time: %s", e)


def recorded_compile_s(model, mode: str = "default") -> float | None:
    """The first-call (compile) seconds a previous process measured for this model, if any."""
    try:
        return float(json.loads(_record_path(model, mode).read_text())["first_call_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _compile_available(device: torch.device) -> tuple[bool, str]:
    if device.type != "cuda":
        return False, f"compile='auto' stays eager on {device.type}"
    import importlib.util

    if importlib.util.find_spec("triton") is None:  # inductor's GPU code generator
        return False, "compile='auto' stays eager: triton is not installed"
    return True, ""


def accelerate(model, *, compile: CompileMode = "off", fast: bool = True, channels_last: bool = False,
               cache_dir: str | os.PathLike | None = None, dynamic_batch: bool = True):
    """Speed options for a :class:`romlib.models.glide.GlideUNet`, in place; returns the model.

    ``fast``: the fast eager path (:meth:`~romlib.models.glide.GlideUNet.set_fast`; on by default,
    ``False`` restores the plain path). ``channels_last``: off by default — GroupNorm on CUDA
    converts channels-last activations back to NCHW, so in eager mode every block pays two layout
    conversions (the issue measured the upsampler 43 % slower with it); the compiler chooses
    layouts itself. ``compile``: a ``torch.compile`` mode (``"default"``; ``"reduce-overhead"``
    adds CUDA graphs; ``"max-autotune"`` autotunes kernels and uses CUDA graphs, compiling much
    longer), or ``"auto"`` (:func:`accelerate_backend` documents the rule), or ``"off"``.
    Compiled artifacts are cached under ``cache_dir`` (:func:`compile_cache_dir`).
    """
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile={compile!r} is not a mode; accepted: {', '.join(COMPILE_MODES)}")
    if hasattr(model, "set_fast"):
        model.set_fast(fast)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if isinstance(model._core, CompiledCore):  # re-accelerating replaces an earlier wrapper
        model._core = model._forward
    if compile == "off":
        return model
    device = next(model.parameters()).device
    after_s = None
    mode = compile
    if compile == "auto":
        ok, why = _compile_available(device)
        if not ok:
            log.info(why)
            return model
        mode = "default"
        compile_cache_dir(cache_dir)
        after_s = recorded_compile_s(model, mode) or AUTO_COMPILE_COST_S
    else:
        compile_cache_dir(cache_dir)
    model._core = CompiledCore(model, mode, after_s=after_s, dynamic_batch=dynamic_batch)
    return model


def accelerate_backend(backend, *, compile: CompileMode = "off", cache_dir: str | os.PathLike | None = None):
    """Apply the fast settings to a :class:`romlib.contracts.Backend`'s ``base_model`` and
    ``upsampler`` (when it has one), in place; returns the backend.

    Always: the fast eager path, contiguous layout. ``compile``:

    * ``"off"``: eager only (the fast eager path);
    * ``"default"`` / ``"reduce-overhead"`` (adds CUDA graphs) / ``"max-autotune"``: compile both
      UNets; the first edit pays the compilation (about a minute per model on a GPU the first
      time, seconds when ``$ROMLIB_CACHE/torch-compile`` already holds the artifacts);
    * ``"auto"`` — the rule: on the CPU, or without Triton, stay eager. On a GPU, each UNet runs
      eagerly until its eager forward passes have taken as long as compiling it is expected to
      take, then it is compiled (mode ``"default"``) for the rest of the process. The expected
      cost is what the last process measured for the same model, GPU, dtype and torch version
      (recorded in the compile cache; a few seconds once the cache is warm), else
      :data:`AUTO_COMPILE_COST_S` (60 s). This is the ski-rental rule: whatever the number of
      edits, the time spent is at most about twice that of the better choice made in hindsight,
      a single short edit never waits for a compilation, and a long session compiles early.
      The switch can happen in the middle of an edit; compiled and eager results agree to
      floating-point rounding.
    """
    for model in (backend.base_model, backend.upsampler):
        if model is not None and hasattr(model, "_forward"):
            accelerate(model, compile=compile, cache_dir=cache_dir)
    return backend


# ----------------------------------------------------------------------------- measuring
def forward_gflop(model, size: int, low_res: bool = False) -> float:
    """GFLOP of one forward pass for one image of a GLIDE UNet (or of its :class:`GlideConfig`),
    counted on the meta device, free."""

    from torch.utils.flop_counter import FlopCounterMode

    from .models.glide import GlideUNet

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

    @property
    def tflops(self) -> float | None:
        secs = (self.base_s or 0) + (self.upsample_s or 0) or self.total_s
        return self.gflop / 1e3 / secs if self.gflop and secs > 0 else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _bench_models(device, tiny: bool, dtype: torch.dtype):
    from .models.glide import create_model
    from .models.tiny import tiny_clip_ranker, tiny_glide
    from .models.tokenizers import ByteTokenizer

    tok = ByteTokenizer()  # timing only: any tokenizer with ids < n_vocab will do
    if tiny:
        base, up = tiny_glide(n_vocab=tok.n_vocab), tiny_glide("upsample-inpaint", n_vocab=tok.n_vocab, seed=1)
        ranker = tiny_clip_ranker()
    else:
        import open_clip

        from .rank import ClipRanker

        base, up = create_model("base-inpaint", device=device), create_model("upsample-inpaint", device=device)
        model = open_clip.create_model("ViT-B-16", pretrained=None, device=device).eval().requires_grad_(False)
        ranker = ClipRanker(model, open_clip.get_tokenizer("ViT-B-16"))
    base, up = base.to(device), up.to(device)
    if dtype == torch.float16:
        base.convert_to_fp16(), up.convert_to_fp16()
    return base, up, tok, ranker


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
              progress: bool = False) -> list[BenchRow]:
    """Time ``ROMPipeline.edit`` (CCF, mask given, B samples, ``steps`` base steps and
    ``upsample_steps``) for each path and batch size; ``tiny`` defaults to True on the CPU,
    ``dtype`` to fp16 on a GPU and fp32 on the CPU. Every path first runs a warm-up edit of
    ``warmup_steps`` steps at every batch size (compilation, CUDA graphs, kernel selection),
    then the timed edit. ``reference``: a glide-text2im checkout, timed the same way."""
    if warmup_steps < 2:
        raise ValueError(f"warmup_steps={warmup_steps} is too few; accepted: an integer >= 2 (3 lets CUDA graphs record)")
    from .contracts import Backend
    from .pipeline import ROMPipeline

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
        knobs = dict(mask=mask, seed=0, progress=progress, batch_size=micro_batch, guidance="ccf")
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
                                 warmup, compile_s, _peak(device), gf_base * 2 * b * n_base + gf_up * b * n_up, note))
            log.info("bench %s B=%d: %.2f s", path, b, total)
        del pipe, backend, base, up
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if reference:
        rows += run_reference(reference, device, batches=batches, dtype=dtype, tiny=tiny, steps=steps,
                              upsample_steps=upsample_steps, warmup_steps=warmup_steps)
    return rows


# ----------------------------------------------------------------------------- the reference
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

    from .io import load_mask, to_tensor

    from .models.glide import official_config
    from .models.tiny import tiny_glide_config

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
_COLUMNS = [("path", "path", 18, "{}"), ("dtype", "dtype", 6, "{}"), ("batch", "B", 4, "{}"),
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


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="sample counts B (default: 4 24 on a GPU, 2 4 on the CPU)")
    p.add_argument("--dtype", choices=["fp16", "fp32"], default=None,
                   help="precision (default: fp16 on a GPU; fp32 on the CPU, where half is an emulated slow path)")
    p.add_argument("--steps", type=int, default=None, help="base steps (default: 100 on a GPU, 10 on the CPU)")
    p.add_argument("--upsample-steps", default=None, help="upsampler respacing (default: fast27 on a GPU, 3 on the CPU)")
    p.add_argument("--full", action="store_true", help="official sizes even on the CPU (slow)")
    p.add_argument("--paths", nargs="+", default=None, metavar="PATH",
                   help="what to time: plain (the plain eager path), eager (the fast eager path), "
                        "compile:default, compile:reduce-overhead, compile:max-autotune (default: eager)")
    p.add_argument("--compile", choices=["off", "default", "reduce-overhead", "max-autotune"], default=None,
                   help="shorthand for --paths compile:MODE")
    p.add_argument("--micro-batch", type=int, default=None, help="micro-batch size (default: the pipeline's own choice)")
    p.add_argument("--reference", default=None, metavar="PATH",
                   help="a glide-text2im checkout: also time its own sampling loop in this process")
    p.add_argument("--cache-dir", default=None, help="compiled-artifact cache (default: $ROMLIB_CACHE/torch-compile)")
    p.add_argument("--no-rank", action="store_true", help="skip the ranking stage")
    p.add_argument("--fast-vs-plain", action="store_true",
                   help="instead of timing: compare one forward pass of both UNets, fast vs plain path, in the bench dtype")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--json", default=None, metavar="FILE", help="append the rows to FILE as JSON lines")


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
                     cache_dir=args.cache_dir)
    print(format_bench(rows, title, markdown=args.markdown))
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps({**r.to_dict(), "device": name, "tiny": tiny}) + "\n")
    return 0

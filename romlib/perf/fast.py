"""The fast path: :func:`accelerate` / :func:`accelerate_backend` (fast eager UNets, ``torch.compile`` with one
compilation for every micro-batch size, compiled artifacts cached under ``$ROMLIB_CACHE``)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Literal

import torch

from .. import hub
from .measure import _sync

log = logging.getLogger("romlib.perf")

CompileMode = Literal["off", "auto", "default", "reduce-overhead", "max-autotune"]
COMPILE_MODES = ("off", "auto", "default", "reduce-overhead", "max-autotune")
AUTO_COMPILE_COST_S = 60.0  # first compile of one GLIDE UNet on a GPU, before any cached measurement
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where compiled artifacts go: ``cache_dir``, else ``$ROMLIB_CACHE/torch-compile``
    (:func:`romlib.hub.cache_dir`). Points inductor's cache (FX graphs, AOT autograd, Triton
    kernels, autotuning) there through ``TORCHINDUCTOR_CACHE_DIR``, unless the user set that
    variable to somewhere of their own. Returns the directory in use."""
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

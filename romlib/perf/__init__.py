"""Speed: :func:`accelerate` / :func:`accelerate_backend` (fast eager path, ``torch.compile``) and the work
accounting; ``romlib bench`` (:mod:`romlib.bench`, above the pipeline) times :meth:`romlib.pipeline.ROMPipeline.edit`
itself.

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

from ..lazy import lazy_names

#: ``romlib.perf.<name>`` → its module, imported on first use: the accounting (``perf.work``, ``perf.measure``) and
#: the compiled path (``perf.fast``) sit below the pipeline; ``romlib bench``, which times whole edits, is
#: :mod:`romlib.bench`, above it
_NAMES = {**dict.fromkeys(("BenchRow", "forward_gflop"), "measure"),
          **dict.fromkeys(("AUTO_COMPILE_COST_S", "CompileMode", "CompiledCore", "accelerate", "accelerate_backend",
                           "compile_cache_dir", "recorded_compile_s"), "fast"),
          **dict.fromkeys(("import_reference", "run_reference"), "reference")}

__all__ = ["accelerate", "accelerate_backend", "CompileMode", "CompiledCore", "compile_cache_dir", "BenchRow",
           "forward_gflop",
           "AUTO_COMPILE_COST_S", "recorded_compile_s", "import_reference", "run_reference"]


__getattr__, __dir__ = lazy_names(__name__, _NAMES, globals())

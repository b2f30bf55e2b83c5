"""What the notebooks and the benchmarks ask of a pipeline besides an edit, kept out of :class:`ROMPipeline`:

* :func:`trace` — every base-sampling step of one sample, with the guidance branches (the notebooks' scrubber);
* :func:`compare` — the same image, mask and seeds under several guidance methods, one figure (Fig. 4 and 6);
* :func:`rerank` — the same samples ranked another way (Fig. 7);
* the work accounting of an edit: :func:`count_work` counts the forward passes of the networks an edit runs,
  :func:`work` turns them into ``EditResult.work`` (passes and TFLOP).

Each takes the pipeline as its first argument (``pipe.trace(...)``, ``pipe.compare(...)`` and ``pipe.rerank(...)``
call these).

>>> steps = rl.experiments.trace(pipe, image, "the red circle", "a blue square")
"""
from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import torch

from .checks import check_int
from .config import MAX_SAMPLES, EditConfig, Frame, RankMode
from .guidance.families import sampling_for
from .guidance.methods import METHODS, ClassifierFree, MethodName, get
from .perf.work import count_passes, work_report
from .plots import comparison_grid
from .rank import rank_samples
from .sampling.diffusion import sample_generators
from .sampling.inpaint import sample_base_progressive

if TYPE_CHECKING:
    from .result import EditResult

__all__ = ["trace", "compare", "rerank", "work_models", "count_work", "work"]

log = logging.getLogger(__name__)


def trace(pipe, image, ref: str, target: str, *, guidance: MethodName = "ccf", scale: float | None = None,
          dilation: int = 3, steps: int | str | None = None, seed: int = 0, sample: int = 0, mask=None,
          frame: Frame = "full") -> list[dict]:
    """Every base-sampling step of one sample, with the guidance branches (notebooks' scrubber):
    a list of ``{"t", "x_t", "pred_xstart", "eps_cond", "eps_base", "eps"}`` ([3, S, S] each;
    ``eps_cond`` = ε(x_t|c_target), ``eps_base`` = ε(x_t|∅) for CF or ε(x_t|c_ref) for CCF).
    ``t`` is the original timestep (of the model's 1000), ``index`` the respaced step."""
    method = get(guidance)
    family = sampling_for(pipe.backend)
    if not family.traces:
        raise ValueError(f"trace follows GLIDE's sampler on pixel backends; the {pipe.backend.name!r} backend is a "
                         f"{family.name} model (see romlib.sampling.latent.latent_loop's callback)")
    if not isinstance(method, ClassifierFree):
        cf_names = [n for n, m in METHODS.items() if isinstance(m, ClassifierFree)]
        raise ValueError(f"trace supports the classifier-free methods {cf_names}, not {guidance!r}")
    EditConfig(guidance=guidance, scale=scale, dilation=dilation, steps=steps, seed=seed, frame=frame).validate()
    sample = check_int("sample", sample, 0, MAX_SAMPLES - 1)
    p = pipe.prepare(image, ref, mask=mask, dilation=dilation, frame=frame)
    setup = method.base_setup(pipe, p, ref, target, method.scale(pipe.backend, scale), record=True)
    gen = sample_generators(seed, sample + 1)[sample:]
    diffusion = pipe.diffusion("base", steps)
    steps_out = []
    for out in sample_base_progressive(setup, diffusion, gen, device=pipe.device):
        rec = {k: out[k][0].cpu() for k in ("x_t", "pred_xstart", "eps_cond", "eps_base", "eps")}
        rec["index"], rec["t"] = out["t"], int(diffusion.timestep_map[out["t"]])
        steps_out.append(rec)
    return steps_out


def compare(pipe, image, ref: str, target: str, *, guidances=("cf", "ccf", "clip", "blended"), samples: int = 4,
            seed: int = 0, top: int = 4, **kwargs) -> tuple[dict, Any]:
    """The same image, mask and seeds under several guidance methods (paper Fig. 4 and 6): one
    call, one figure. The mask is computed once (or given) and shared by every method; methods
    whose models the backend lacks are skipped with a warning, and each method gets only the
    knobs it reads (e.g. no ``scale`` for Blended). Returns ``(results, figure)``."""
    guidances = (guidances,) if isinstance(guidances, str) else tuple(guidances)
    if not guidances:
        raise ValueError(f"guidances=() is empty; accepted: one or more of {', '.join(METHODS)}")
    for g in guidances:
        get(g)  # an unknown name is refused before any work
    EditConfig.from_kwargs(None, samples=samples, seed=seed, **kwargs).validate()
    top = check_int("top", top, 1)
    if kwargs.get("mask") is None:
        kwargs["mask"] = pipe.prepare(image, ref, dilation=1, threshold=kwargs.get("threshold", 0.5),
                                      min_score=kwargs.get("min_score"), best_anyway=kwargs.get("best_anyway", False),
                                      segmenter=kwargs.get("segmenter")).segmentation
    family = sampling_for(pipe.backend).name
    results = {}
    for g in guidances:
        method = get(g)
        if not method.available(pipe.backend):
            why = ("has not loaded its models" if family in method.families
                   else f"is a {family} model (guidance={g!r} runs on {'/'.join(sorted(method.families))} "
                   "backends only)")
            log.warning("skipping guidance=%r: the %r backend %s", g, pipe.backend.name, why)
            continue
        own = {k: v for k, v in kwargs.items() if k not in method.unused_knobs()}
        results[g] = pipe.edit(image, ref, target, guidance=g, samples=samples, seed=seed, **own)
    return results, comparison_grid(results, top=top)


def rerank(pipe, result: "EditResult", rank: RankMode) -> "EditResult":
    """The same samples ranked another way (Fig. 7: masked vs local ranking on the same B)."""
    if len(result.order) != len(result.samples):  # upsample_top: only the best samples have frames
        raise ValueError(f"rerank needs every sample's frame; this result has {len(result.order)} of "
                         f"{len(result.samples)} (upsample_top={result.settings.get('upsample_top')}): rerun with "
                         "upsample_top=None, or use rl.nb.explore, which re-ranks the base samples")
    unranked = torch.empty_like(result.images)
    unranked[torch.tensor(result.order)] = result.images
    edit_mask = result.edit_mask[None, None].to(pipe.device)
    ranking = rank_samples(pipe.backend.ranker, unranked.to(pipe.device), result.settings["target"], rank,
                           box=result.rank_box, edit_mask=edit_mask)
    position = {i: r for r, i in enumerate(result.order)}
    new = copy.copy(result)
    new.images, new.order, new.scores = unranked[ranking.order], ranking.order, ranking.ranked_scores
    fr = result.full_res  # lazy: nothing is made at full resolution here
    new.full_res = (fr.select if hasattr(fr, "select") else (lambda ps: [fr[p] for p in ps]))(
        [position[i] for i in ranking.order])
    new.settings = {**result.settings, "rank": rank}
    return new


# ---------------------------------------------------------------------------------------------- work accounting
def work_models(backend) -> dict:
    """The networks whose passes :func:`count_work` counts: GLIDE's base UNet and upsampler, or a latent
    model's UNet and VAE encoder and decoder (the family's adapter says which)."""
    return sampling_for(backend).work_models(backend)


def count_work(pipe):
    """A context counting the forward passes of :func:`work_models` (:func:`romlib.perf.work.count_passes`)."""
    return count_passes(work_models(pipe.backend))


def work(pipe, passes: dict, method) -> dict:
    """``EditResult.work`` from counted passes: passes per model and the TFLOP they add up to."""
    b = pipe.backend
    out = work_report({k: v for k, v in passes.items() if v or k == "base"}, work_models(b),
                      gflop=sampling_for(b).gflop(b))
    if method.needs:  # the baselines' own networks (noised CLIP, ADM) have no FLOP count
        out["uncounted"] = sorted(set(out["uncounted"]) | {method.needs})
    return out

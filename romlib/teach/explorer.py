"""The ablation explorer: an edit that recomputes only what a changed knob touches (notebooks 03–05).

``explorer = rl.nb.explore(pipe, image, ref, target)`` renders the first edit (the ``"preview"`` budget, said in
its label) and, in Jupyter/Colab, shows widgets; without widgets ``explorer.update(rank="masked")`` returns the
new :class:`~romlib.result.EditResult`. Each stage is cached under the knobs it reads:

=============  ====================================================================  ==========================
stage          key                                                                   recomputed by a change of
=============  ====================================================================  ==========================
segment        image, ref, threshold, min_score, best_anyway, mask, segmenter        the text, the threshold
masks          the segmentation, dilation k, frame, frame size                       k
sample         the masks, method, scale, seed, samples, steps, sampler, η, target    scale, method, seed, …
upsample       the samples, which ones (``upsample_top``), upsampler steps            (preview: the best of
               local and masked ranking, once per set of samples; 'none' shows those frames in sample order)
rank           the frames, the ranking mode                                          the ranking mode
=============  ====================================================================  ==========================

so a ranking change re-orders the same samples. The cache is an LRU bounded in entries and in tensor bytes;
:attr:`Explorer.last` says what the last update recomputed and how long each stage took.
"""
from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import Any

import torch

from ..config import SCORED_RANK_MODES, EditConfig
from ..contracts import Segmentation
from ..experiments import count_work, work as work_report
from ..guidance.families import sampling_for
from ..plots import show as _show

#: the ranking modes whose best base samples the preview upsamples up front (a click between them upsamples
#: nothing; with rank='none' the upsampled frames are shown in sample order)
RANK_MODES = SCORED_RANK_MODES

__all__ = ["Explorer", "StageCache"]


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if hasattr(value, "__dict__"):
        return sum(_nbytes(v) for v in vars(value).values() if isinstance(v, (torch.Tensor, list, tuple, dict)))
    return 0


class StageCache:
    """A least-recently-used cache of ``(stage, key) -> value`` holding at most ``max_entries`` entries and
    ``max_bytes`` bytes of tensors (the oldest go first; the newest always stays)."""

    def __init__(self, max_entries: int = 64, max_bytes: int = 1 << 30):
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"max_entries={max_entries}, max_bytes={max_bytes}; accepted: integers >= 1")
        self.max_entries, self.max_bytes = int(max_entries), int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._sizes: dict = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        return sum(self._sizes.values())

    def get(self, key):
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        self._sizes[key] = _nbytes(value)
        while len(self._items) > 1 and (len(self._items) > self.max_entries or self.nbytes > self.max_bytes):
            old, _ = self._items.popitem(last=False)
            del self._sizes[old]


def _key(x) -> Any:
    """A hashable stand-in for an input (an image or mask object: its identity; a path or a number: itself)."""
    try:
        hash(x)
        return x
    except TypeError:
        return ("id", id(x))


class Explorer:
    """One image, ref and target under changing knobs; see the module docstring. ``settings``: the starting knobs
    of :class:`~romlib.config.EditConfig` (default ``preset="preview"``); every update changes some of them."""

    def __init__(self, pipe, image, ref: str, target: str, *, cache: StageCache | None = None, **settings):
        self.pipe, self.image, self.ref, self.target = pipe, image, "" if ref is None else str(ref), \
            "" if target is None else str(target)
        settings.setdefault("preset", "preview")
        settings.setdefault("progress", False)
        EditConfig.from_kwargs(**settings)  # unknown names fail now
        self.settings = dict(settings)
        self.cache = cache if cache is not None else StageCache()
        self.last: dict = {}
        self.result = None

    # ------------------------------------------------------------------------------------------
    def _stage(self, name: str, key, compute, log: dict):
        full = (name, key)
        if full in self.cache:
            log["cached"].append(name)
            return self.cache.get(full)
        t0 = time.perf_counter()
        value = compute()
        log["recomputed"][name] = round(time.perf_counter() - t0, 4)
        self.cache.put(full, value)
        return value

    def update(self, **changes):
        """Change some knobs (``rank="masked"``, ``scale=5``, ``preset="paper"``, ...) and return the new
        :class:`~romlib.result.EditResult`, computing only the stages the change touches (:attr:`last` says which)."""
        settings = {**self.settings, **changes}
        pipe, b = self.pipe, self.pipe.backend
        cfg, method = pipe.resolve(**settings)
        t_start = time.perf_counter()
        log: dict = {"recomputed": {}, "cached": []}
        mask = cfg.mask
        seg_key = (_key(self.image), self.ref, cfg.threshold, cfg.min_score, cfg.best_anyway, _key(mask), cfg.segmenter)

        def segment():
            if isinstance(mask, Segmentation):
                return mask
            return pipe.prepare(self.image, self.ref, mask=mask, dilation=1, threshold=cfg.threshold,
                                min_score=cfg.min_score, best_anyway=cfg.best_anyway,
                                segmenter=cfg.segmenter).segmentation

        seg = self._stage("segment", seg_key, segment, log)
        frame_size = method.frame_size(b, cfg.upsample)
        p_key = (seg_key, cfg.dilation, cfg.frame, frame_size)
        p = self._stage("masks", p_key, lambda: pipe.prepare(self.image, self.ref, mask=seg, dilation=cfg.dilation,
                                                              frame=cfg.frame, frame_size=frame_size,
                                                              threshold=cfg.threshold), log)
        resolved = method.settings(cfg, b)
        s_key = (p_key, method.name, resolved.get("scale"), resolved.get("steps"), resolved.get("sampler"),
                 resolved.get("eta"), cfg.seed, cfg.samples, self.target, cfg.batch_size)
        rank = cfg.rank or method.default_rank
        timings: dict = {}
        # GLIDE's two stages; Blended Diffusion and a latent model's one run are one
        family = sampling_for(b)
        staged = family.staged and hasattr(method, "base_setup")

        def sample():
            with count_work(pipe) as passes:
                out = (family.sample_base(method, pipe, p, self.ref, self.target, cfg, timings) if staged
                       else method.sample(pipe, p, self.ref, self.target, cfg, timings))
            return out, dict(passes)

        base, base_passes = self._stage("sample", s_key, sample, log)
        work = dict(base_passes)
        if staged:
            index = None
            if cfg.upsample_top is not None and cfg.upsample and b.upsampler is not None:
                # the best of *every* ranking mode is upsampled once, so a ranking click re-orders frames that
                # exist (under a second) instead of upsampling a new best one
                def best_of_each_mode():
                    picks = [i for mode in RANK_MODES
                             for i in family.to_upsample(method, pipe, p, base, self.target,
                                                         dataclasses.replace(cfg, rank=mode))]
                    return sorted(set(picks))

                index = self._stage("rank-base", s_key, best_of_each_mode, log)
            u_key = (s_key, resolved.get("upsample"), resolved.get("upsample_steps"), resolved.get("upsample_temperature"),
                     None if index is None else tuple(index))

            def upsample():
                with count_work(pipe) as passes:
                    out = family.upsample(method, pipe, p, base, index, self.target, cfg, timings)
                return out, {"upsample": passes["upsample"]}

            if cfg.upsample and b.upsampler is not None:
                out, up_passes = self._stage("upsample", u_key, upsample, log)
                work["upsample"] = work.get("upsample", 0) + up_passes["upsample"]
            else:  # no upsampler: the base samples are the frames
                out = family.upsample(method, pipe, p, base, None, self.target, cfg, timings)
        else:
            out, u_key = base, s_key
        ranking = self._stage("rank", (u_key, rank), lambda: pipe.rank(out, self.target, rank, p), log)
        report = work_report(pipe, work, method)
        result = pipe.finish(self.image, p, out, self.ref, self.target, cfg, method, dict(log["recomputed"]), report,
                             ranking=ranking)
        log["seconds"] = round(time.perf_counter() - t_start, 4)
        self.settings, self.last, self.result = settings, log, result
        return result

    # ------------------------------------------------------------------------------------------
    def label(self, result=None) -> str:
        """One line: the knobs, the budget (preview or paper) with its work, and what this update recomputed."""
        r = result or self.result
        s = r.settings
        scale = f" s={s['scale']:g}" if s.get("scale") is not None else ""
        budget = (f"preview budget ({s['samples']} samples, {s.get('sampler', '-')} {s.get('steps', '')} steps"
                  + (f", best {s['upsample_top']} upsampled" if s.get("upsample_top") else "") + ")"
                  if s.get("preset") == "preview" else f"paper budget ({s['samples']} samples)")
        redo = ", ".join(f"{k} {v:.2f} s" for k, v in self.last.get("recomputed", {}).items()) or "nothing"
        hint = "; preset='paper' for the paper's budget" if s.get("preset") == "preview" else ""
        return (f"{s['guidance']}{scale} k={s['dilation']} rank={s['rank']} seed={s['seed']} — {budget}, "
                f"{r.work.get('tflop', 0):.4g} TFLOP{hint}\nrecomputed: {redo}; cached: "
                f"{', '.join(self.last.get('cached', [])) or 'nothing'} ({self.last.get('seconds', 0):.2f} s)")

    def show(self, top: int = 4):
        """Print the label and the scores, and display the result grid (what each click shows)."""
        r = self.result
        print(self.label())
        print(f"scores {[round(x, 4) for x in r.scores[:top]]}")
        _show(r.grid(top=top))
        return r

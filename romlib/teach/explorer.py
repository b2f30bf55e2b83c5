"""The ablation explorer: an edit that recomputes only what a changed knob touches (notebooks 03–05).

``explorer = rl.nb.explore(pipe, image, ref, target)`` renders the first edit (the ``"preview"`` budget, said in
its label) and, in Jupyter/Colab, shows widgets; without widgets ``explorer.update(rank="masked")`` returns the
new :class:`~romlib.result.EditResult`. Each stage is cached under the knobs it reads:

=============  ====================================================================  ==========================
stage          key                                                                   recomputed by a change of
=============  ====================================================================  ==========================
segment        image, ref, threshold, min_score, best_anyway, mask, segmenter        the case, the threshold
masks          the segmentation, erosion, dilation k, frame, frame size              erode, k
sample         the masks, model, method, scale, seed, samples, steps, sampler, η,    scale, method, seed, model,
               target                                                                budget
upsample       the samples, which ones (``upsample_top``), upsampler steps            (preview: the best of
               local and masked ranking, once per set of samples; 'none' shows those frames in sample order)
rank           the frames, the ranking mode, the crop factor                         rank, enlarge
=============  ====================================================================  ==========================

so a ranking change re-orders the same samples. Besides :class:`~romlib.config.EditConfig`'s knobs the explorer
reads its own (:data:`VIEW_KNOBS`): ``erode`` (a k×k erosion of the object's mask before dilation: notebook 03's
under-covering mask), ``model`` ("edit"; "removal": the empty target on the removal model; "default": the empty
target on the pipeline's own model), ``case`` (a key of ``cases=``: another image, ref and target) and ``enlarge``
(local ranking's crop factor, the paper's ×1.3). :data:`STAGE_OF` names the first stage each knob invalidates. The cache is an LRU bounded in entries and in tensor bytes;
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
from ..masks import erode as erode_mask
from ..plots import png, samples_grid, show as _show
from ..specs import backend_spec

#: the ranking modes whose best base samples the preview upsamples up front (a click between them upsamples
#: nothing; with rank='none' the upsampled frames are shown in sample order)
RANK_MODES = SCORED_RANK_MODES

__all__ = ["Explorer", "StageCache", "STAGES", "STAGE_OF", "VIEW_KNOBS"]

#: the stages in order; a change recomputes its knob's stage and the ones after it that read it
STAGES = ("segment", "masks", "sample", "upsample", "rank")
#: the explorer's own knobs (not EditConfig's): erosion, which model, which case, the ranking's crop factor
VIEW_KNOBS = {"erode": 1, "model": "edit", "case": None, "enlarge": 1.3}
#: the first stage each knob invalidates (its widget says so)
STAGE_OF = {"case": "segment", "erode": "masks", "dilation": "masks", "guidance": "sample", "scale": "sample",
            "seed": "sample", "preset": "sample", "model": "sample", "samples": "sample", "rank": "rank",
            "enlarge": "rank"}
MODELS = ("edit", "removal", "default")


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

    def __init__(self, pipe, image, ref: str, target: str, *, cache: StageCache | None = None,
                 cases: dict | None = None, **settings):
        self.pipe, self.image, self.ref, self.target = pipe, image, "" if ref is None else str(ref), \
            "" if target is None else str(target)
        self.cases = dict(cases or {})  # name -> (image, ref, target): the ``case`` knob
        settings.setdefault("preset", "preview")
        settings.setdefault("progress", False)
        EditConfig.from_kwargs(**{k: v for k, v in settings.items() if k not in VIEW_KNOBS})  # unknown names fail now
        self._check_view({k: v for k, v in settings.items() if k in VIEW_KNOBS})
        self.settings = dict(settings)
        self.cache = cache if cache is not None else StageCache()
        self.last: dict = {}
        self.result = None
        self._grid = None  # the figure png() draws into (romlib.plots.samples_grid(fig=))

    def _check_view(self, view: dict) -> None:
        if "model" in view and view["model"] not in MODELS:
            raise ValueError(f"model={view['model']!r}; accepted: {', '.join(map(repr, MODELS))}")
        if view.get("case") is not None and view["case"] not in self.cases:
            raise ValueError(f"case={view['case']!r}; accepted: {', '.join(map(repr, self.cases)) or 'none (no cases=)'}")
        if "erode" in view and (int(view["erode"]) < 1 or int(view["erode"]) % 2 == 0):
            raise ValueError(f"erode={view['erode']!r}; accepted: an odd window size >= 1 (1 = no erosion)")
        if "enlarge" in view and not float(view["enlarge"]) >= 1.0:
            raise ValueError(f"enlarge={view['enlarge']!r}; accepted: a crop factor >= 1.0 (the paper's 1.3)")

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
        view = {k: settings.get(k, v) for k, v in VIEW_KNOBS.items()}
        self._check_view(view)
        threads = backend_spec(self.pipe.backend.name).cpu_threads
        if threads is None or self.pipe.device.type != "cpu":
            return self._update(settings, view)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return self._update(settings, view)
        finally:
            torch.set_num_threads(before)

    def _update(self, settings: dict, view: dict):
        image, ref, target = self.cases[view["case"]] if view["case"] is not None else (self.image, self.ref, self.target)
        pipe = self.pipe.removal_pipeline() if view["model"] == "removal" else self.pipe
        if view["model"] != "edit":
            target = ""
        erode, enlarge = int(view["erode"]), float(view["enlarge"])
        b = pipe.backend
        cfg, method = pipe.resolve(**{k: v for k, v in settings.items() if k not in VIEW_KNOBS})
        t_start = time.perf_counter()
        log: dict = {"recomputed": {}, "cached": []}
        mask = cfg.mask
        seg_key = (_key(image), ref, cfg.threshold, cfg.min_score, cfg.best_anyway, _key(mask), cfg.segmenter)

        def segment():
            if isinstance(mask, Segmentation):
                return mask
            return self.pipe.prepare(image, ref, mask=mask, dilation=1, threshold=cfg.threshold,
                                     min_score=cfg.min_score, best_anyway=cfg.best_anyway,
                                     segmenter=cfg.segmenter).segmentation

        seg = self._stage("segment", seg_key, segment, log)
        frame_size = method.frame_size(b, cfg.upsample)
        p_key = (seg_key, erode, cfg.dilation, cfg.frame, frame_size)

        def masks():
            given = seg if erode <= 1 else erode_mask(seg.mask.float(), erode) > 0
            return pipe.prepare(image, ref, mask=given, dilation=cfg.dilation, frame=cfg.frame,
                                frame_size=frame_size, threshold=cfg.threshold)

        p = self._stage("masks", p_key, masks, log)
        resolved = method.settings(cfg, b)
        s_key = (p_key, id(b), method.name, resolved.get("scale"), resolved.get("steps"), resolved.get("sampler"),
                 resolved.get("eta"), cfg.seed, cfg.samples, target, cfg.batch_size)
        rank = cfg.rank or method.default_rank
        timings: dict = {}
        # GLIDE's two stages; Blended Diffusion and a latent model's one run are one
        family = sampling_for(b)
        staged = family.staged and hasattr(method, "base_setup")

        def sample():
            with count_work(pipe) as passes:
                out = (family.sample_base(method, pipe, p, ref, target, cfg, timings) if staged
                       else method.sample(pipe, p, ref, target, cfg, timings))
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
                             for i in family.to_upsample(method, pipe, p, base, target,
                                                         dataclasses.replace(cfg, rank=mode))]
                    return sorted(set(picks))

                index = self._stage("rank-base", s_key, best_of_each_mode, log)
            u_key = (s_key, resolved.get("upsample"), resolved.get("upsample_steps"), resolved.get("upsample_temperature"),
                     None if index is None else tuple(index))

            def upsample():
                with count_work(pipe) as passes:
                    out = family.upsample(method, pipe, p, base, index, target, cfg, timings)
                return out, {"upsample": passes["upsample"]}

            if cfg.upsample and b.upsampler is not None:
                out, up_passes = self._stage("upsample", u_key, upsample, log)
                work["upsample"] = work.get("upsample", 0) + up_passes["upsample"]
            else:  # no upsampler: the base samples are the frames
                out = family.upsample(method, pipe, p, base, None, target, cfg, timings)
        else:
            out, u_key = base, s_key
        ranking = self._stage("rank", (u_key, rank, enlarge), lambda: pipe.rank(out, target, rank, p, enlarge), log)
        report = work_report(pipe, work, method)
        result = pipe.finish(image, p, out, ref, target, cfg, method, dict(log["recomputed"]), report,
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
                  + (f", the best {s['upsample_top']} of each ranking mode upsampled" if s.get("upsample_top") else "")
                  + ")"
                  if s.get("preset") == "preview" else f"paper budget ({s['samples']} samples)")
        redo = ", ".join(f"{k} {v:.2f} s" for k, v in self.last.get("recomputed", {}).items()) or "nothing"
        hint = "; preset='paper' for the paper's budget" if s.get("preset") == "preview" else ""
        view = "".join(f" {k}={self.settings[k]!r}" for k, v in VIEW_KNOBS.items()
                       if k in self.settings and self.settings[k] != v)
        return (f"{s['guidance']}{scale} k={s['dilation']} rank={s['rank']} seed={s['seed']}{view} — {budget}, "
                f"{r.work.get('tflop', 0):.4g} TFLOP{hint}\nrecomputed: {redo}; cached: "
                f"{', '.join(self.last.get('cached', [])) or 'nothing'} ({self.last.get('seconds', 0):.2f} s)")

    def figure(self):
        """Every sample of the last update, ranked, at most an output area wide (:func:`romlib.plots.samples_grid`)."""
        return samples_grid(self.result)

    def png(self) -> bytes:
        """:meth:`figure` as PNG bytes (what the live widget shows). The figure's axes are kept from one call to the
        next while the number of samples stays (the same pixels as a new figure, ~0.1 s less per click)."""
        self._grid = samples_grid(self.result, fig=self._grid)
        return png(self._grid)

    def show(self):
        """Print the label and the scores of every sample, and display :meth:`figure` (the static rendering)."""
        r = self.result
        print(self.label())
        print(f"scores {[round(x, 4) for x in r.scores]}")
        _show(self.figure())
        return r

"""The ROM pipeline: prepare (segment → masks → frame) → method.sample → rank → paste back.

>>> import romlib as rl
>>> pipe = rl.ROMPipeline.from_pretrained("shapes")          # or "glide" (real weights, GPU)
>>> result = pipe.edit(image, "the red circle", "a blue square", guidance="ccf", samples=8)
>>> result.images[0], result.scores[0], result.full_res[0]   # best edit: frame, score, input size
>>> result.save("out/"); result.grid()

Every knob is an explicit keyword, defined once on :class:`romlib.config.EditConfig`
(``guidance``, ``scale``, ``dilation``, ``rank``, ``samples``, ``steps``, ``seed``, ``frame``, ...);
the guidance methods are the entries of :data:`romlib.guidance.methods.METHODS`.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from typing import Any, Literal

import torch

from . import backends, experiments, masks as M
from .backends import default_backend
from .config import WARN_SAMPLES, EditConfig, Frame, RankMode
from .contracts import Backend, Prepared, Segmentation
from .guidance.families import sampling_for
from .guidance.methods import get
from .io import load_image, load_mask, quote, to_tensor
from .perf.fast import accelerate_backend
from .rank import rank_samples
from .result import EditResult, paste_back
from .sampling.diffusion import create_diffusion

__all__ = ["ROMPipeline", "EditResult", "Prepared", "edit", "get_pipeline", "default_backend"]

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 32


def _mask_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _square_region(box, width: int, height: int, scale: float = 2.0, min_side: int = 64) -> tuple[int, int, int, int]:
    """A square (x0, y0, x1, y1) around ``box``, ``scale`` × its longer side, inside the image."""
    x0, y0, x1, y1 = box
    side = int(round(min(max(max(x1 - x0, y1 - y0) * scale, min_side), width, height)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side


SEGMENT_MAX_SIDE = 2048  # larger photos are segmented on a copy of this size (MDETR reads 800 px anyway)


def _segment_large(segmenter, img, ref: str, **kw) -> Segmentation:
    """Segment ``img``; a photo larger than :data:`SEGMENT_MAX_SIDE` is segmented on a reduced
    copy (box filter, O(pixels) once) and the mask and box are scaled back to the input."""
    W, H = img.size
    factor = -(-max(W, H) // SEGMENT_MAX_SIDE)
    if factor <= 1:
        return segmenter.segment(img, ref, **kw)
    small = img.reduce(factor)
    seg = segmenter.segment(small, ref, **kw)
    sw, sh = small.size
    ys = (torch.arange(H) * sh // H).clamp(max=sh - 1)
    xs = (torch.arange(W) * sw // W).clamp(max=sw - 1)
    mask = seg.mask[ys][:, xs]
    fx, fy = W / sw, H / sh
    x0, y0, x1, y1 = seg.box
    box = (x0 * fx, y0 * fy, min(W, x1 * fx), min(H, y1 * fy))
    boxes = seg.boxes * torch.tensor([fx, fy, fx, fy], dtype=seg.boxes.dtype) if seg.boxes is not None else None
    return dataclasses.replace(seg, mask=mask, box=box, boxes=boxes,
                               extra={**seg.extra, "segmented_at": [sw, sh]})


COVERAGE_WARN = 0.9  # a dilated mask covering more of the frame than this is logged


def _warn_coverage(keep_base: torch.Tensor, dilation: int) -> None:
    """Log when the dilated mask leaves (almost) nothing of the input to condition on."""
    edited = float(M.to_edit_mask(keep_base).mean())
    if edited >= 1.0:
        log.warning("nothing of the input survives: the mask, dilated by k=%d, covers the whole frame; the image is "
                    "generated from the text alone (give a smaller mask or a smaller --dilation)", dilation)
    elif edited > COVERAGE_WARN:
        log.warning("the mask, dilated by k=%d, covers %.0f %% of the frame (> %.0f %%): little of the input is kept",
                    dilation, 100 * edited, 100 * COVERAGE_WARN)


class ROMPipeline:
    """Loads a :class:`~romlib.contracts.Backend` once and runs :meth:`edit` on any number of images."""

    def __init__(self, backend: Backend, device=None, defaults: dict | None = None):
        self.backend = backend
        self.device = torch.device(device) if device is not None else next(backend.base_model.parameters()).device
        self._diffusions: dict = {}
        #: settings this pipeline uses where an edit names none (``EditConfig`` fields; the notebooks' pipeline,
        #: :func:`romlib.teach.nb.pipeline`, takes an ambiguous reference's best object with a warning)
        self.defaults: dict = dict(defaults or {})
        EditConfig.from_kwargs(None, **self.defaults)  # unknown names refused here

    def with_defaults(self, **defaults) -> "ROMPipeline":
        """A pipeline sharing this one's models whose edits use ``defaults`` where they name no value."""
        out = copy.copy(self)
        out.__dict__.pop("_removal", None)  # its removal pipeline follows its own defaults
        out.defaults = {**self.defaults, **defaults}
        EditConfig.from_kwargs(None, **out.defaults)
        return out

    @classmethod
    def from_pretrained(cls, name: str | None = None, *, device=None, dtype: torch.dtype | None = None,
                        progress: bool = True, baselines: bool = False, compile: str = "off",
                        variant: str | None = None, segmenter: str | None = None) -> "ROMPipeline":
        """``"glide"``: MDETR + GLIDE (filtered) + CLIP ViT-B/16, downloaded once (~5.5 GB), fp16 on a GPU;
        ``"shapes"``: the embedded ShapesWorld models (offline, CPU); ``"tiny"``: random tiny models
        (tests). ``None`` picks :func:`default_backend`. ``baselines=True`` also loads the models
        of the CLIP-guided and Blended Diffusion baselines (glide backend). ``compile``: ``"off"``,
        ``"auto"`` or a ``torch.compile`` mode for the UNets (:func:`romlib.perf.accelerate_backend`).
        ``variant``: which shipped ShapesWorld model (:data:`romlib.shapes.VARIANTS`, e.g. ``"removal"``).
        ``segmenter``: a segmenter the caller will ask for besides the backend's own (``"mdetr"``, ``"clipseg"``): its
        files are checked with the backend's, so one error lists every missing file (it loads on first use)."""
        name = name or default_backend()
        device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        backend = backends.load(name, device=device, dtype=dtype, progress=progress, baselines=baselines, variant=variant,
                                segmenter=segmenter)
        if compile != "off" and not sampling_for(backend).compiles:
            raise ValueError(f"compile={compile!r} applies to GLIDE-family UNets; the {name!r} backend is a "
                             f"{backend.family} model (diffusers' UNet): leave compile='off'")
        if compile != "off":
            accelerate_backend(backend, compile=compile)
        return cls(backend, device=device)

    # ------------------------------------------------------------------------------------------
    def diffusion(self, kind: Literal["base", "upsample"], steps: str | int | None = None):
        b = self.backend
        schedule, n = b.base_schedule if kind == "base" else b.upsample_schedule
        steps = str(steps if steps is not None else (b.base_steps if kind == "base" else b.upsample_steps))
        key = (kind, steps)
        if key not in self._diffusions:
            self._diffusions[key] = create_diffusion(n, schedule, steps)
        return self._diffusions[key]

    def segment(self, image, ref: str, *, threshold: float = 0.5, min_score: float | None = None,
                best_anyway: bool | None = None, segmenter: str | None = None) -> Segmentation:
        """Run a referring segmenter on an image: the backend's own, or ``segmenter="mdetr"`` / ``"clipseg"``
        (see :mod:`romlib.segment`, :mod:`romlib.clipseg`). ``best_anyway=None``: this pipeline's default.
        ``threshold``, ``min_score`` and ``segmenter`` are checked as :class:`romlib.config.EditConfig` checks them,
        whatever the segmenter reads."""
        if best_anyway is None:
            best_anyway = bool(self.defaults.get("best_anyway", False))
        if segmenter is not None and segmenter == getattr(self.backend, "segmenter_name", None):
            segmenter = None  # the backend's own by name (e.g. "shapes")
        EditConfig(threshold=threshold, min_score=min_score, best_anyway=best_anyway, segmenter=segmenter).validate()
        img = load_image(image, min_size=MIN_IMAGE_SIDE)
        return self.backend.segmenter_for(segmenter).segment(img, ref, threshold=threshold, min_score=min_score,
                                                             best_anyway=best_anyway)

    def prepare(self, image, ref: str, *, mask=None, dilation: int = 3, frame: Frame = "full", frame_size: int | None = None,
                threshold: float = 0.5, min_score: float | None = None, best_anyway: bool = False,
                segmenter: str | None = None, timings: dict | None = None) -> Prepared:
        """Segment (or take ``mask``), choose the frame, and build the masks as the authors do:
        mask logits resized to 64×64, thresholded, dilated by ``dilation``; the frame-size mask
        is its nearest upsampling."""
        b = self.backend
        dilation = M.check_dilation(dilation)
        EditConfig(dilation=dilation, frame=frame, threshold=threshold, min_score=min_score, best_anyway=best_anyway,
                   segmenter=segmenter).validate()
        img = load_image(image, min_size=MIN_IMAGE_SIDE)
        W, H = img.size
        t0 = time.perf_counter()
        if isinstance(mask, Segmentation):  # a segmentation computed earlier (e.g. by compare())
            seg = mask
            if seg.image_size != (W, H):
                raise ValueError(f"the segmentation is for a {seg.image_size} image, not {(W, H)}")
        elif mask is not None:
            m = load_mask(mask, (W, H))
            seg = Segmentation(mask=m, box=_mask_box(m), score=1.0, text=ref, extra={"source": "user mask"})
        else:
            if not (ref or "").strip():
                raise ValueError("ref is empty: give a referring text (e.g. 'the red car') or a mask")
            seg = _segment_large(b.segmenter_for(segmenter), img, ref, threshold=threshold, min_score=min_score,
                                 best_anyway=best_anyway)
        if timings is not None:
            timings["segment"] = time.perf_counter() - t0
        region = (0, 0, W, H) if frame == "full" else _square_region(seg.box, W, H)
        frame_img = img.crop(region) if frame == "crop" else img
        base_size = b.base_model.cfg.image_size
        frame_size = frame_size or base_size
        if seg.mask_logits is not None and frame == "full":
            edit_base = M.logits_to_edit_mask(seg.mask_logits, base_size, threshold)
        else:
            rx0, ry0, rx1, ry1 = region
            edit_base = M.resize_edit_mask(seg.mask[ry0:ry1, rx0:rx1], base_size)
        if edit_base.sum() == 0:
            raise ValueError(f"the mask of {quote(ref)} covers no pixel at {base_size}x{base_size}; "
                             "use frame='crop' for small objects, or give a larger mask")
        keep_base, keep_frame = M.prepare_masks(edit_base, dilation, frame_size)
        _warn_coverage(keep_base, dilation)
        dev = self.device
        rw, rh = region[2] - region[0], region[3] - region[1]
        bx0, by0, bx1, by1 = seg.box
        rank_box = ((bx0 - region[0]) * frame_size / rw, (by0 - region[1]) * frame_size / rh,
                    (bx1 - region[0]) * frame_size / rw, (by1 - region[1]) * frame_size / rh)
        return Prepared(image=img, segmentation=seg, region=region, frame_image=frame_img, base_size=base_size,
                        frame_size=frame_size, keep_base=keep_base.to(dev), keep_frame=keep_frame.to(dev),
                        image_base=to_tensor(frame_img, base_size).to(dev), image_frame=to_tensor(frame_img, frame_size).to(dev),
                        rank_box=rank_box)

    # the experiments of the notebooks and the paper's figures (romlib.experiments), on this pipeline
    def trace(self, image, ref: str, target: str, **kwargs) -> list[dict]:
        """Every base-sampling step of one sample with its guidance branches (:func:`romlib.experiments.trace`)."""
        return experiments.trace(self, image, ref, target, **kwargs)

    def compare(self, image, ref: str, target: str, **kwargs) -> tuple[dict, Any]:
        """One edit per guidance method on the same mask and seeds, and their figure
        (:func:`romlib.experiments.compare`)."""
        return experiments.compare(self, image, ref, target, **kwargs)

    def rerank(self, result: "EditResult", rank: RankMode) -> "EditResult":
        """The same samples ranked another way (:func:`romlib.experiments.rerank`)."""
        return experiments.rerank(self, result, rank)

    def edit(self, image, ref: str, target: str, config: EditConfig | None = None, **knobs) -> EditResult:
        """Edit the object ``ref`` refers to so that it matches ``target`` (empty target = inpaint).

        The settings are the knobs of :class:`romlib.config.EditConfig`, given as keywords
        (``guidance="cf", scale=5, samples=8, dilation=5, rank="masked", steps="50", seed=1, ...``)
        or as a ``config``. ``mask`` (path, image, array or tensor; white = edit; or a
        :class:`~romlib.contracts.Segmentation`) replaces segmentation. ``scale`` defaults to the
        method's (the paper's 15 for CCF, 5 for CF, 2 for CLIP guidance), or the backend's tuned
        one (ShapesWorld); ``rank`` to the method's (``"local"``; ``"masked"`` for Blended).
        ``frame="crop"`` edits a square crop around the object and pastes it back. Every knob is
        validated before any work.
        """
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        b = self.backend
        cfg, method = self.resolve(config, **knobs)
        ref = "" if ref is None else str(ref)
        if not isinstance(target, str):  # None would silently mean "remove the object"
            raise TypeError(f"target must be a text, got {type(target).__name__} {target!r}: what the object should "
                            "become, e.g. 'a blue truck', or '' to remove it (inpaint the hole)")
        if not target.strip():  # remove the object: plain inpainting of the hole with background
            remover = self.removal_pipeline()
            if remover is not self:
                return remover.edit(image, ref, target, config, **knobs)
        if cfg.samples > WARN_SAMPLES:
            log.warning("samples=%d: sampling takes about %.1fx the time of the paper's B = 24 (on a T4 with GLIDE, "
                        "roughly %.0f-%.0f minutes); lower samples for quick looks", cfg.samples, cfg.samples / 24,
                        1.5 * cfg.samples / 24, 3 * cfg.samples / 24)
        if cfg.upsample and b.upsampler is None:
            log.info("the %r backend has no upsampler: results stay at %d px", b.name, b.base_model.cfg.image_size)
        p = self.prepare(image, ref, mask=cfg.mask, dilation=cfg.dilation, frame=cfg.frame,
                         frame_size=method.frame_size(b, cfg.upsample), threshold=cfg.threshold,
                         min_score=cfg.min_score, best_anyway=cfg.best_anyway, segmenter=cfg.segmenter,
                         timings=timings)

        t0 = time.perf_counter()
        with experiments.count_work(self) as passes:
            out = method.sample(self, p, ref, target, cfg, timings)
        timings["sampling"] = time.perf_counter() - t0
        return self.finish(image, p, out, ref, target, cfg, method, timings, experiments.work(self, passes, method),
                           t_start)

    def removal_pipeline(self) -> "ROMPipeline":
        """The pipeline an *empty* target runs on, so that the hole is inpainted with background (the paper's
        Fig. 8), as ``Backend.extras["removal"]`` says: this one where the model fills an empty-caption hole with
        background (GLIDE, SD, ShapesWorld's ``removal`` model: no entry, or ``"self"``); ShapesWorld's default
        model, never taught that, hands over to the shipped variant named there (``"removal"``, loaded once and
        kept, with this pipeline's defaults); a model that can do neither (``None``: random tiny models, a
        ShapesWorld variant named on purpose, your own weights trained without ``--p-remove``) is used with a
        warning that says so."""
        removal = self.backend.extras.get("removal", "self")
        if removal == "self":
            return self
        if removal is None:
            log.warning("an empty target asks for the object's removal, but the %r backend's model was never taught "
                        "to fill a hole with background: it may draw something else there", self.backend.name)
            return self
        if self.__dict__.get("_removal") is None:  # made once per pipeline: the same object for every empty target
            log.info("an empty target: the %r backend's %r model inpaints the hole", self.backend.name, removal)
            self._removal = get_pipeline(self.backend.name, device=self.device, variant=removal).with_defaults(
                **self.defaults)
        return self._removal

    def rank(self, out, target: str, rank: RankMode, p: Prepared, enlarge: float = 1.3):
        """The :class:`~romlib.rank.Ranking` of a method's frames ``out.frames`` in mode ``rank`` (``enlarge``: the
        local ranking's crop factor, the paper's ×1.3)."""
        return rank_samples(self.backend.ranker, out.frames, target, rank, box=p.rank_box,
                            edit_mask=M.to_edit_mask(out.keep_frame), enlarge=enlarge)

    def resolve(self, config: EditConfig | None = None, **knobs) -> tuple[EditConfig, Any]:
        """The validated settings of one edit and its method: ``config`` updated with ``knobs``, checked against
        the method (knobs it does not read are refused), then the preset's values for the knobs left at their
        defaults (:meth:`EditConfig.with_preset`)."""
        cfg = EditConfig.from_kwargs(config, **knobs)
        unset = {k: v for k, v in self.defaults.items() if k not in cfg.given()}
        if unset:  # the pipeline's defaults where the edit named nothing (they stay overridable by a preset)
            given, cfg = cfg.given(), dataclasses.replace(cfg, **unset)
            cfg._given = given
        method = get(cfg.guidance)
        cfg.validate()
        method.check(cfg, self.backend)
        return cfg.with_preset(method.honours).validate(), method

    def finish(self, image, p: Prepared, out, ref: str, target: str, cfg: EditConfig, method, timings: dict,
               work: dict, t_start: float | None = None, ranking=None) -> EditResult:
        """Rank the frames of ``out`` (a method's :class:`~romlib.guidance.methods.Samples`), paste them back and
        build the :class:`EditResult` (the last stage of :meth:`edit`; the explorer calls it on cached samples with
        a cached ``ranking`` of ``out.frames``)."""
        b = self.backend
        rank = cfg.rank or method.default_rank
        if ranking is None:
            t0 = time.perf_counter()
            ranking = self.rank(out, target, rank, p)
            timings["rank"] = time.perf_counter() - t0
        ranked = out.frames[ranking.order]
        order = ranking.order if out.index is None else [out.index[i] for i in ranking.order]

        full = paste_back(p.image, ranked, out.keep_paste, p.region)  # lazy: made when read or saved
        if t_start is not None:
            timings["total"] = time.perf_counter() - t_start

        W, H = p.image.size
        user_mask = cfg.mask is not None and not isinstance(cfg.mask, Segmentation)
        settings = dict(ref=ref, target=target, preset=cfg.preset, **method.settings(cfg, b), samples=cfg.samples,
                        dilation=cfg.dilation, rank=rank, seed=cfg.seed, frame=cfg.frame, region=list(p.region),
                        threshold=None if user_mask else cfg.threshold,  # a mask of the user's: no segmenter ran
                        segmenter=None if user_mask else cfg.segmenter or b.segmenter_name, backend=b.name,
                        user_mask=user_mask, batch_size=cfg.batch_size, input_size=[W, H], frame_size=p.frame_size,
                        base_size=p.base_size)
        return EditResult(images=ranked.cpu(), scores=ranking.ranked_scores, order=order, samples=out.base.cpu(),
                          full_res=full, edit_mask=M.to_edit_mask(out.keep_frame)[0, 0].cpu(),
                          keep_mask_base=p.keep_base[0, 0].cpu(), box=tuple(p.segmentation.box), rank_box=p.rank_box,
                          segmentation=p.segmentation, frame_input=p.frame_image.resize((p.frame_size,) * 2),
                          input_image=p.image, settings=settings, timings=timings, work=work,
                          sources=tuple(x for x in (image, cfg.mask) if isinstance(x, (str, os.PathLike))))


_PIPELINES: dict = {}


def get_pipeline(backend: str | None = None, *, device=None, **kwargs) -> ROMPipeline:
    """The process's pipeline for ``backend`` (loaded once, kept: models stay in memory between
    calls and notebook cells; one per value of the environment variables its spec's loader reads, ``env``).
    ``kwargs`` go to :meth:`ROMPipeline.from_pretrained`."""
    name = backend or default_backend()
    env = tuple(os.environ.get(v) for v in backends.backend_spec(name).env)  # e.g. the world's weights folder
    key = (name, str(device), tuple(sorted(kwargs.items())), env)
    if key not in _PIPELINES:
        _PIPELINES[key] = ROMPipeline.from_pretrained(name, device=device, **kwargs)
    return _PIPELINES[key]


def edit(image, ref: str, target: str, *, backend: str | None = None, device=None, **knobs) -> EditResult:
    """One-call ROM: ``romlib.edit("photo.jpg", "the red car", "a blue truck")``.

    Loads the backend once per process (:func:`get_pipeline`) and calls :meth:`ROMPipeline.edit`
    with the knobs of :class:`~romlib.config.EditConfig`.
    """
    baselines = get(knobs.get("guidance", "ccf")).needs is not None
    return get_pipeline(backend, device=device, baselines=baselines).edit(image, ref, target, **knobs)

"""The ROM pipeline: segment → masks → guided inpainting → upsampling → ranking → full resolution.

>>> import romlib as rl
>>> pipe = rl.ROMPipeline.from_pretrained("shapes")          # or "glide" (real weights, GPU)
>>> result = pipe.edit(image, "the red circle", "a blue square", guidance="ccf", samples=8)
>>> result.images[0], result.scores[0], result.full_res[0]   # best edit: frame, score, input size
>>> result.save("out/"); result.grid()

Every knob of the paper's ablations is an explicit keyword: ``guidance`` (``"ccf"`` the paper,
``"cf"`` GLIDE, the ablations ``"ccf-direction"`` / ``"cf-original"``, and the baselines
``"clip"`` / ``"blended"`` where the backend has their models), ``scale``, ``dilation``, ``rank``,
``samples``, ``steps``, ``seed``, ``frame``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from . import masks as M
from .contracts import Backend, Segmentation
from .sampling.diffusion import create_diffusion
from .guidance.cfg import RULES
from .io import load_image, load_mask, to_pil, to_tensor
from .rank import RankMode, rank_samples

__all__ = ["ROMPipeline", "EditResult", "Prepared", "edit", "default_backend", "auto_batch_size", "GUIDANCE_CHOICES"]

log = logging.getLogger(__name__)

Guidance = Literal["ccf", "cf", "ccf-direction", "cf-original", "clip", "blended"]
Frame = Literal["full", "crop"]
GUIDANCE_CHOICES = ("ccf", "cf", "ccf-direction", "cf-original", "clip", "blended")
MIN_IMAGE_SIDE = 32


def default_backend() -> str:
    """``$ROMLIB_BACKEND`` if set; else ``"glide"`` on a GPU with network access, else ``"shapes"``."""
    env = os.environ.get("ROMLIB_BACKEND")
    if env:
        return env
    if not torch.cuda.is_available() or os.environ.get("ROMLIB_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return "shapes"
    import socket

    try:
        socket.create_connection(("openaipublic.blob.core.windows.net", 443), timeout=3).close()
        return "glide"
    except OSError:
        return "shapes"


def auto_batch_size(model, samples: int, *, branches: int = 1, device=None) -> int:
    """Largest micro-batch that should fit: on a GPU from free memory and an estimate of the
    UNet's activations per image (skip connections of every level, ×4 working space); on the
    CPU at most 8 images (speed is flat beyond that, memory is not)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if device.type != "cuda":
        return max(1, min(samples, 8))
    cfg = model.cfg
    size = cfg.image_size or 64
    elems = sum((cfg.num_res_blocks + 1) * cfg.model_channels * m * (size >> lvl) ** 2 for lvl, m in enumerate(cfg.channel_mult))
    per_image = elems * (2 if model.dtype == torch.float16 else 4) * 4 * branches
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(samples, int(0.8 * free / per_image)))


@dataclass
class EditResult:
    """What one :meth:`ROMPipeline.edit` call produced, best first.

    ``images``: ranked frames [B, 3, S, S] in [-1, 1] (S = 256 with the upsampler);
    ``scores``: their ranking distances (lower = closer to the target text);
    ``full_res``: ranked edits as PIL images at the input's resolution (only the mask changed);
    ``samples``: the base samples [B, 3, 64, 64] in sampling order; ``order``: ranked indices;
    ``edit_mask`` [S, S] (1 = edited) and ``keep_mask_base`` [64, 64] (GLIDE convention);
    ``box``: the object box in input pixels; ``rank_box`` the same in frame pixels.
    """

    images: torch.Tensor
    scores: list[float]
    order: list[int]
    samples: torch.Tensor
    full_res: list
    edit_mask: torch.Tensor
    keep_mask_base: torch.Tensor
    box: tuple
    rank_box: tuple | None
    segmentation: Segmentation
    frame_input: Any
    input_image: Any
    settings: dict
    timings: dict = field(default_factory=dict)

    @property
    def best(self):
        """The top-ranked edit at the input's resolution (PIL)."""
        return self.full_res[0]

    def save(self, out_dir: str | os.PathLike) -> dict:
        """Write ranked frames, full-resolution edits, the mask and ``result.json`` (settings,
        scores, box, timings). Returns {kind: [paths]}."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, list[str]] = {"frames": [], "full_res": [], "mask": [], "json": []}
        for r, (img, score) in enumerate(zip(self.images, self.scores)):
            p = out / f"rank{r:02d}_sample{self.order[r]:02d}.png"
            to_pil(img).save(p)
            written["frames"].append(str(p))
        for r, img in enumerate(self.full_res):
            p = out / f"rank{r:02d}_full.png"
            img.save(p)
            written["full_res"].append(str(p))
        from PIL import Image

        p = out / "mask.png"
        Image.fromarray((self.edit_mask.cpu().numpy() * 255).astype("uint8")).save(p)
        written["mask"].append(str(p))
        p = out / "result.json"
        payload = {"settings": self.settings, "order": self.order,
                   "scores": [None if s != s else s for s in self.scores],
                   "box": list(self.box), "rank_box": list(self.rank_box) if self.rank_box else None,
                   "segmentation_score": self.segmentation.score, "timings": self.timings, "files": written}
        p.write_text(json.dumps(payload, indent=2))
        written["json"].append(str(p))
        return written

    def grid(self, top: int = 4):
        """Input, mask overlay and the ``top`` edits (a matplotlib Figure)."""
        from .teach.viz import edit_grid

        return edit_grid(self, top=top)


def _check(name, value, ok: bool, accepted: str):
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; accepted: {accepted}")


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


@dataclass
class Prepared:
    """An input made ready for the diffusion models: the frame, its masks and the ranking box."""

    image: Any  # the input (PIL RGB)
    segmentation: Segmentation
    region: tuple[int, int, int, int]  # the frame's pixels in the input
    frame_image: Any  # PIL crop of the region (the whole image for frame="full")
    base_size: int
    frame_size: int
    keep_base: torch.Tensor  # [1, 1, base, base], 1 = keep (GLIDE's convention), dilated
    keep_frame: torch.Tensor  # [1, 1, frame, frame]
    image_base: torch.Tensor  # [1, 3, base, base] in [-1, 1]
    image_frame: torch.Tensor  # [1, 3, frame, frame]
    rank_box: tuple  # the object's box in frame pixels


class ROMPipeline:
    """Loads a :class:`~romlib.contracts.Backend` once and runs :meth:`edit` on any number of images."""

    def __init__(self, backend: Backend, device=None):
        self.backend = backend
        self.device = torch.device(device) if device is not None else next(backend.base_model.parameters()).device
        self._diffusions: dict = {}

    @classmethod
    def from_pretrained(cls, name: str | None = None, *, device=None, dtype: torch.dtype | None = None,
                        progress: bool = True, baselines: bool = False) -> "ROMPipeline":
        """``"glide"``: MDETR + GLIDE (filtered) + CLIP ViT-B/16, downloaded once (~5.5 GB), fp16 on a GPU;
        ``"shapes"``: the embedded ShapesWorld models (offline, CPU); ``"tiny"``: random tiny models
        (tests). ``None`` picks :func:`default_backend`. ``baselines=True`` also loads the models
        of the CLIP-guided and Blended Diffusion baselines (glide backend)."""
        from . import backends

        name = name or default_backend()
        device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        backend = backends.load(name, device=device, dtype=dtype, progress=progress, baselines=baselines)
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
                best_anyway: bool = False) -> Segmentation:
        """Run the backend's referring segmenter on an image (see :mod:`romlib.segment`)."""
        img = load_image(image, min_size=MIN_IMAGE_SIDE)
        return self.backend.segmenter.segment(img, ref, threshold=threshold, min_score=min_score, best_anyway=best_anyway)

    def prepare(self, image, ref: str, *, mask=None, dilation: int = 3, frame: Frame = "full", frame_size: int | None = None,
                threshold: float = 0.5, min_score: float | None = None, best_anyway: bool = False,
                timings: dict | None = None) -> Prepared:
        """Segment (or take ``mask``), choose the frame, and build the masks as the authors do:
        mask logits resized to 64×64, thresholded, dilated by ``dilation``; the frame-size mask
        is its nearest upsampling."""
        b = self.backend
        M.check_dilation(dilation)
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
            seg = b.segmenter.segment(img, ref, threshold=threshold, min_score=min_score, best_anyway=best_anyway)
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
            raise ValueError(f"the mask of {ref!r} covers no pixel at {base_size}x{base_size}; "
                             "use frame='crop' for small objects, or give a larger mask")
        keep_base, keep_frame = M.prepare_masks(edit_base, dilation, frame_size)
        dev = self.device
        rw, rh = region[2] - region[0], region[3] - region[1]
        bx0, by0, bx1, by1 = seg.box
        rank_box = ((bx0 - region[0]) * frame_size / rw, (by0 - region[1]) * frame_size / rh,
                    (bx1 - region[0]) * frame_size / rw, (by1 - region[1]) * frame_size / rh)
        return Prepared(image=img, segmentation=seg, region=region, frame_image=frame_img, base_size=base_size,
                        frame_size=frame_size, keep_base=keep_base.to(dev), keep_frame=keep_frame.to(dev),
                        image_base=to_tensor(frame_img, base_size).to(dev), image_frame=to_tensor(frame_img, frame_size).to(dev),
                        rank_box=rank_box)

    def trace(self, image, ref: str, target: str, *, guidance: Guidance = "ccf", scale: float | None = None,
              dilation: int = 3, steps: int | str | None = None, seed: int = 0, sample: int = 0, mask=None,
              frame: Frame = "full") -> list[dict]:
        """Every base-sampling step of one sample, with the guidance branches (notebooks' scrubber):
        a list of ``{"t", "x_t", "pred_xstart", "eps_cond", "eps_base", "eps"}`` ([3, S, S] each;
        ``eps_cond`` = ε(x_t|c_target), ``eps_base`` = ε(x_t|∅) for CF or ε(x_t|c_ref) for CCF)."""
        from .sampling.diffusion import sample_generators
        from .sampling.inpaint import prepare_base, sample_base_progressive

        if guidance not in RULES:
            raise ValueError(f"trace supports the classifier-free rules {sorted(RULES)}, not {guidance!r}")
        p = self.prepare(image, ref, mask=mask, dilation=dilation, frame=frame)
        setup = prepare_base(self.backend.base_model, self.backend.tokenizer, image=p.image_base, keep_mask=p.keep_base,
                             target=target, ref=ref, rule=guidance, scale=self.backend.scale(guidance, scale), record=True)
        gen = sample_generators(seed, sample + 1)[sample:]
        steps_out = []
        for out in sample_base_progressive(setup, self.diffusion("base", steps), gen, device=self.device):
            rec = {k: out[k][0].cpu() for k in ("x_t", "pred_xstart", "eps_cond", "eps_base", "eps")}
            rec["t"] = out["t"]
            steps_out.append(rec)
        return steps_out

    def compare(self, image, ref: str, target: str, *, guidances=("cf", "ccf", "clip", "blended"), samples: int = 4,
                seed: int = 0, top: int = 4, **kwargs) -> tuple[dict, Any]:
        """The same image, mask and seeds under several guidance rules (paper Fig. 4 and 6): one
        call, one figure. The mask is computed once (or given) and shared by every rule; rules
        whose models the backend lacks are skipped with a warning. Returns ``(results, figure)``."""
        from .teach.viz import comparison_grid

        if kwargs.get("mask") is None:
            kwargs["mask"] = self.prepare(image, ref, dilation=1, threshold=kwargs.get("threshold", 0.5),
                                          min_score=kwargs.get("min_score"),
                                          best_anyway=kwargs.get("best_anyway", False)).segmentation
        results = {}
        for g in guidances:
            if g in ("clip", "blended") and g not in self.backend.extras:
                log.warning("skipping guidance=%r: the %r backend has not loaded its models", g, self.backend.name)
                continue
            results[g] = self.edit(image, ref, target, guidance=g, samples=samples, seed=seed, **kwargs)
        return results, comparison_grid(results, top=top)

    def rerank(self, result: "EditResult", rank: RankMode) -> "EditResult":
        """The same samples ranked another way (Fig. 7: masked vs local ranking on the same B)."""
        import copy

        unranked = torch.empty_like(result.images)
        unranked[torch.tensor(result.order)] = result.images
        edit_mask = result.edit_mask[None, None].to(self.device)
        ranking = rank_samples(self.backend.ranker, unranked.to(self.device), result.settings["target"], rank,
                               box=result.rank_box, edit_mask=edit_mask)
        full_unranked = [None] * len(result.order)
        for r, i in enumerate(result.order):
            full_unranked[i] = result.full_res[r]
        new = copy.copy(result)
        new.images, new.order, new.scores = unranked[ranking.order], ranking.order, ranking.ranked_scores
        new.full_res = [full_unranked[i] for i in ranking.order]
        new.settings = {**result.settings, "rank": rank}
        return new

    def _check_knobs(self, guidance, scale, samples, dilation, rank, frame, upsample):
        _check("guidance", guidance, guidance in GUIDANCE_CHOICES, ", ".join(GUIDANCE_CHOICES))
        if guidance in ("clip", "blended") and guidance not in self.backend.extras:
            raise ValueError(f"guidance={guidance!r} needs the baseline models, which the {self.backend.name!r} "
                             "backend has not loaded (ROMPipeline.from_pretrained(..., baselines=True))")
        _check("scale", scale, scale is None or (isinstance(scale, (int, float)) and scale > 0), "a number > 0")
        _check("samples", samples, isinstance(samples, int) and samples >= 1, "an integer >= 1")
        _check("dilation", dilation, isinstance(dilation, int) and dilation >= 1 and dilation % 2 == 1,
               "an odd integer >= 1 (1 = no dilation)")
        _check("rank", rank, rank in (None, "local", "masked", "none"), "'local', 'masked', 'none'")
        _check("frame", frame, frame in ("full", "crop"), "'full', 'crop'")
        if upsample and self.backend.upsampler is None:
            log.info("the %r backend has no upsampler: results stay at %d px", self.backend.name,
                     self.backend.base_model.cfg.image_size)

    def edit(self, image, ref: str, target: str, *, guidance: Guidance = "ccf", scale: float | None = None,
             samples: int = 24, dilation: int = 3, rank: RankMode | None = None, steps: int | str | None = None,
             upsample: bool = True, seed: int = 0, mask=None, batch_size: int | None = None, progress: bool = True,
             frame: Frame = "full", threshold: float = 0.5, min_score: float | None = None,
             best_anyway: bool = False, upsample_temperature: float = 0.997) -> EditResult:
        """Edit the object ``ref`` refers to so that it matches ``target`` (empty target = inpaint).

        ``mask`` (path, image, array or tensor; white = edit; or a :class:`Segmentation`) replaces segmentation. ``scale``
        defaults to the backend's (:meth:`Backend.scale`): the paper's 15 for CCF, 5 for CF, 2 for CLIP
        guidance with GLIDE; ShapesWorld's best scales on its benchmark. ``rank`` defaults to ``"local"``
        (``"masked"`` for Blended Diffusion). ``steps``: base sampling steps (default 100, the
        backend's). ``frame="crop"`` edits a square crop around the object (more pixels for
        small objects) and pastes it back.
        """
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        b = self.backend
        ref = "" if ref is None else str(ref)
        target = "" if target is None else str(target)
        self._check_knobs(guidance, scale, samples, dilation, rank, frame, upsample)
        rank = rank or ("masked" if guidance == "blended" else "local")
        scale = b.scale(guidance, scale)
        use_up = bool(upsample and b.upsampler is not None and guidance != "blended")
        if guidance == "blended":
            frame_size = b.extras["blended"].image_size
        else:
            frame_size = b.upsampler.cfg.image_size if use_up else b.base_model.cfg.image_size
        p = self.prepare(image, ref, mask=mask, dilation=dilation, frame=frame, frame_size=frame_size,
                         threshold=threshold, min_score=min_score, best_anyway=best_anyway, timings=timings)
        img, seg, region, frame_img, base_size = p.image, p.segmentation, p.region, p.frame_image, p.base_size
        keep_base, keep_frame, image_base, image_frame, rank_box = p.keep_base, p.keep_frame, p.image_base, p.image_frame, p.rank_box
        W, H = img.size

        # 3. guided sampling
        t0 = time.perf_counter()
        base_samples, frames = self._sample(guidance, image_base, keep_base, image_frame, keep_frame, ref, target,
                                            scale, samples, steps, seed, batch_size, progress, use_up,
                                            upsample_temperature, timings)
        timings["sampling"] = time.perf_counter() - t0

        # 4. ranking
        t0 = time.perf_counter()
        ranking = rank_samples(b.ranker, frames, target, rank, box=rank_box, edit_mask=M.to_edit_mask(keep_frame))
        timings["rank"] = time.perf_counter() - t0
        order = ranking.order
        ranked = frames[order]

        # 5. back to the input's resolution: only the (dilated, feathered) mask region changes
        t0 = time.perf_counter()
        full = self._paste(img, ranked, keep_base, region)
        timings["full_res"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start

        settings = dict(ref=ref, target=target, guidance=guidance, scale=scale, samples=samples, dilation=dilation,
                        rank=rank, steps=str(steps if steps is not None else b.base_steps), upsample=use_up, seed=seed,
                        frame=frame, region=list(region), threshold=threshold, backend=b.name,
                        user_mask=mask is not None and not isinstance(mask, Segmentation), batch_size=batch_size, upsample_temperature=upsample_temperature,
                        input_size=[W, H], frame_size=frame_size, base_size=base_size)
        return EditResult(images=ranked.cpu(), scores=ranking.ranked_scores, order=order, samples=base_samples.cpu(),
                          full_res=full, edit_mask=M.to_edit_mask(keep_frame)[0, 0].cpu(), keep_mask_base=keep_base[0, 0].cpu(),
                          box=tuple(seg.box), rank_box=rank_box, segmentation=seg, frame_input=frame_img.resize((frame_size,) * 2),
                          input_image=img, settings=settings, timings=timings)

    def _sample(self, guidance, image_base, keep_base, image_frame, keep_frame, ref, target, scale, samples, steps, seed,
                batch_size, progress, use_up, temperature, timings):
        from .sampling.inpaint import prepare_base, sample_base, sample_upsample

        b = self.backend
        if guidance == "blended":
            blended = b.extras["blended"]
            frames = blended.sample(image=image_frame, keep_mask=keep_frame, target=target, samples=samples, seed=seed,
                                    batch_size=batch_size, progress=progress)
            small = torch.nn.functional.interpolate(frames, size=image_base.shape[-2:], mode="bilinear", antialias=True,
                                                    align_corners=False)
            return small, frames
        t0 = time.perf_counter()
        diffusion = self.diffusion("base", steps)
        if guidance == "clip":
            setup = b.extras["clip"].prepare(b.base_model, b.tokenizer, image=image_base, keep_mask=keep_base,
                                             target=target, ref=ref, scale=scale)
            branches = 2  # the CLIP gradient needs activations kept
        else:
            setup = prepare_base(b.base_model, b.tokenizer, image=image_base, keep_mask=keep_base, target=target, ref=ref,
                                 rule=guidance, scale=scale)
            branches = 2
        bs = batch_size or auto_batch_size(b.base_model, samples, branches=branches, device=self.device)
        base = sample_base(setup, diffusion, samples=samples, seed=seed, batch_size=bs, device=self.device, progress=progress)
        timings["base"] = time.perf_counter() - t0
        if not use_up:
            return base, base
        t0 = time.perf_counter()
        bs_up = batch_size or auto_batch_size(b.upsampler, samples, device=self.device)
        frames = sample_upsample(b.upsampler, self.diffusion("upsample"), b.tokenizer, low_res=base, image=image_frame,
                                 keep_mask=keep_frame, target=target, seed=seed, temperature=temperature, batch_size=bs_up,
                                 progress=progress)
        timings["upsample"] = time.perf_counter() - t0
        return base, frames

    @staticmethod
    def _paste(img, frames: torch.Tensor, keep_base: torch.Tensor, region) -> list:
        """Each frame resized to its region of the input and blended in under the dilated mask,
        feathered inwards, so every pixel outside the mask is exactly the input's."""
        import numpy as np
        from PIL import Image

        x0, y0, x1, y1 = region
        rw, rh = x1 - x0, y1 - y0
        edit = M.to_edit_mask(keep_base.cpu())[None, None] if keep_base.ndim == 2 else M.to_edit_mask(keep_base.cpu())
        edit = torch.nn.functional.interpolate(edit, size=(rh, rw), mode="nearest")[0, 0]
        radius = max(1, round(max(rw, rh) / keep_base.shape[-1] / 2))
        alpha = M.feather(edit, radius).numpy()[..., None]
        base = np.asarray(img, dtype=np.float32)
        out = []
        for f in frames:
            patch = np.asarray(to_pil(f).resize((rw, rh), Image.BICUBIC), dtype=np.float32)
            full = base.copy()
            full[y0:y1, x0:x1] = base[y0:y1, x0:x1] * (1 - alpha) + patch * alpha
            out.append(Image.fromarray(np.clip(full + 0.5, 0, 255).astype(np.uint8)))
        return out


_PIPELINES: dict = {}


def edit(image, ref: str, target: str, *, backend: str | None = None, device=None, **kwargs) -> EditResult:
    """One-call ROM: ``romlib.edit("photo.jpg", "the red car", "a blue truck")``.

    Loads the backend once per process (cached) and calls :meth:`ROMPipeline.edit` with ``kwargs``.
    """
    key = (backend or default_backend(), str(device))
    if key not in _PIPELINES:
        _PIPELINES[key] = ROMPipeline.from_pretrained(key[0], device=device)
    return _PIPELINES[key].edit(image, ref, target, **kwargs)

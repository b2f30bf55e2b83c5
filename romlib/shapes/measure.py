"""Measuring edits in ShapesWorld: the cases' edit masks, batched guided sampling of many cases at once,
and the oracle's scores (target success, preservation, PSNR outside the mask, seams, ranking)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..config import SCORED_RANK_MODES
from ..guidance.cfg import GuidedModel, known_region_fn
from ..io import to_uint8
from ..masks import dilate, to_keep_mask
from ..rank import rank_samples
from ..sampling.diffusion import randn, sample_generators
from ..sampling.inpaint import prepare_base
from ..sampling.samplers import get_sampler
from .cases import Case
from .oracle import colour_labels, describe_region, judge, object_region
from .scenes import erode_np
from .segmenter import ShapesSegmenter


__all__ = ["sample_cases", "score_samples", "segmenter_accuracy", "wilson", "rate"]


def _edit_mask(case: Case, erode: int, dilation: int) -> np.ndarray:
    """The true object mask, eroded by ``erode`` px, dilated by a k×k kernel (romlib.masks)."""
    m = case.original.mask
    if erode:
        m = erode_np(m, erode)
    return dilate(torch.from_numpy(m).float(), dilation).numpy() > 0.5


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1


def sample_cases(model, tokenizer, diffusion, cases: list[Case], edit_masks: list[np.ndarray], *, rule: str,
                 scale: float, samples: int, seed: int = 0, plain: bool = False, batch_rows: int = 96,
                 progress: bool = False, desc: str = "", sampler: str = "ancestral", eta: float = 0.0) -> torch.Tensor:
    """B samples per case [n_cases, B, 3, H, W] in [-1, 1]: :func:`romlib.sampling.inpaint.prepare_base`
    per case, with the cases stacked into one batch for speed (each row keeps its own prompts,
    images, masks and noise). ``plain``: an empty target (plain inpainting). ``sampler``, ``eta``: as
    :func:`romlib.sampling.inpaint.sample_base` (every sampler starts from the same x_T)."""
    from romlib.progress import tqdm


    device = next(model.parameters()).device
    per_chunk = max(1, batch_rows // samples)
    out = []
    chunks = range(0, len(cases), per_chunk)
    for c0 in tqdm(chunks, desc=desc or f"{rule} s={scale:g}", disable=not progress, leave=False, dynamic_ncols=True):
        setups, images, keeps, gens = [], [], [], []
        for case, em in zip(cases[c0:c0 + per_chunk], edit_masks[c0:c0 + per_chunk]):
            image = _to_tensor(case.scene.image).to(device)
            keep = to_keep_mask(torch.from_numpy(em))[None, None].to(device)
            setups.append(prepare_base(model, tokenizer, image=image, keep_mask=keep, target="" if plain else case.target,
                                       ref=case.ref, rule=rule, scale=scale).model_fn)
            images.append(image)
            keeps.append(keep)
            gens += sample_generators((seed * 100_003 + case.index) % 2**63, samples)

        def stack(branch: str, key: str):
            rows = [getattr(s, branch)[key] for s in setups]
            if key == "text_emb":
                return {k: torch.cat([r[k] for r in rows]).repeat_interleave(samples, 0) for k in rows[0]}
            return torch.cat(rows).repeat_interleave(samples, 0)

        cond = {k: stack("cond", k) for k in ("text_emb", "inpaint_image", "inpaint_mask")}
        base = {k: stack("base", k) for k in ("text_emb", "inpaint_image", "inpaint_mask")}
        model_fn = GuidedModel(model, scale, cond, base)
        img, keep = torch.cat(images).repeat_interleave(samples, 0), torch.cat(keeps).repeat_interleave(samples, 0)
        x_T = randn(tuple(img.shape), gens, device)
        x = get_sampler(sampler)(model_fn, x_T, diffusion, denoised_fn=known_region_fn(img, keep), clip_denoised=True,
                                 generator=gens, **({"eta": eta} if sampler == "ddim" else {}))
        out.append(x.reshape(-1, samples, *x.shape[1:]).cpu())
    return torch.cat(out)


def _uint8(x: torch.Tensor) -> np.ndarray:
    return to_uint8(x)


def _psnr(se: float, n: int) -> float:
    return float("inf") if n == 0 or se == 0 else 10 * math.log10(255.0 ** 2 / (se / n))


def score_samples(cases: list[Case], edit_masks: list[np.ndarray], samples: torch.Tensor, ranker=None) -> dict:
    """Oracle metrics of ``samples`` [n_cases, B, 3, H, W] (see the module docstring)."""
    succ, pres, top = [], [], {"local": [], "masked": []}
    se_out = n_out = se_bg = n_bg = 0
    seam_err, seam_n = 0.0, 0
    for case, em, xs in zip(cases, edit_masks, samples):
        region = object_region(em, case.original.mask, case.others)
        orig = case.scene.image.astype(np.float64)
        bg = case.scene.background.astype(np.float64)
        inner = em & ~erode_np(em, 1)
        ok = []
        for x in xs:
            a = _uint8(x)
            j = judge(describe_region(a, region), case.target, case.original)
            ok.append(j["success"])
            if j["preserved"] is not None:
                pres.append(j["preserved"])
            af = a.astype(np.float64)
            d = (af - orig)[~em]
            se_out, n_out = se_out + float((d ** 2).sum()), n_out + d.size
            bgpix = em & (colour_labels(a) < 0) & ~case.original.mask
            d = (af - bg)[bgpix]
            se_bg, n_bg = se_bg + float((d ** 2).sum()), n_bg + d.size
            ring = inner & bgpix
            seam_err, seam_n = seam_err + float(np.abs(af - bg)[ring].sum()), seam_n + int(ring.sum()) * 3
        succ += ok
        if ranker is not None and len(xs) > 1:
            box = tuple(float(v) for v in case.original.box)
            em_t = torch.from_numpy(em)[None, None].float()
            for mode in SCORED_RANK_MODES:
                r = rank_samples(ranker, xs, case.target, mode, box=box, edit_mask=em_t)
                top[mode].append(ok[r.order[0]])
    mean = lambda v: float(np.mean(v)) if len(v) else float("nan")  # noqa: E731
    return {"success": mean(succ), "top1_local": mean(top["local"]), "top1_masked": mean(top["masked"]),
            "preservation": mean(pres), "psnr_out": _psnr(se_out, n_out), "psnr_bg": _psnr(se_bg, n_bg),
            "seam": seam_err / seam_n if seam_n else float("nan"), "n_cases": len(cases), "n_samples": len(succ),
            "n_preservation": len(pres)}


def segmenter_accuracy(cases: list[Case]) -> dict:
    """How often the rule-based segmenter returns exactly the referred object's mask."""
    seg, exact, ious = ShapesSegmenter(), 0, []
    for case in cases:
        m = seg.segment(case.scene.image, case.ref, best_anyway=True).mask.numpy()
        t = case.original.mask
        ious.append((m & t).sum() / (m | t).sum())
        exact += bool((m == t).all())
    return {"exact": exact / len(cases), "mean_iou": float(np.mean(ious)), "n_cases": len(cases)}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95 % by default)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def rate(flags) -> dict:
    """A rate with its Wilson 95 % interval: ``{"k", "n", "pct", "low", "high"}`` (percentages)."""
    k, n = int(sum(bool(f) for f in flags)), len(flags)
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "pct": round(100 * k / n, 1) if n else float("nan"), "low": round(100 * lo, 1),
            "high": round(100 * hi, 1)}

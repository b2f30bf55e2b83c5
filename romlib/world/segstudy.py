"""Notebook 02 on the world: what the learned referring segmenter gets wrong, and why the mask is dilated.

Every number comes from the pipeline's own path on the world's edit cases (:func:`romlib.world.cases.make_cases`):
``pipe.segment(image, ref, best_anyway=True)`` (the best query, as the authors' code always takes), then
``pipe.prepare(..., mask=seg, dilation=k)`` (the mask logits resized to the base model's 32×32, thresholded,
dilated by a k×k window) against the case's true object mask at the same resolution (a 32 px pixel is the
object's when any of its 2×2 block is):

* **IoU** of the chosen query's mask with the referred object's at 64×64 (failure: IoU < 0.5), and
  **wrong object**: the mask overlaps another object of the scene more than the referred one (the look-alike
  mistake);
* for each k, **covered**: the share of the object's pixels inside the dilated mask (the edit can only change
  what the mask covers: a pixel left out stays as a remnant of the old object), **whole**: the object covered
  to 95 % or more (on cases where the right object was picked), and **extra**: pixels of the dilated mask outside
  the object, per object pixel (the background the model must redraw); and the same coverage for the object's
  *true* mask sent through the same path (``true_covered_k``: what the 32×32 resolution alone loses).

:func:`study` computes the records (seconds), :func:`table` and :func:`format_table` summarise them,
:data:`TABLE_FILE` keeps the shipped table (what notebook 02 prints: :func:`notebook_table`; ``rerun=True``
recomputes it), and :func:`queries_figure`, :func:`errors_figure` and :func:`dilation_figure` draw them.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..plots import _imshow, overlay_mask
from ..shapes.measure import rate
from .bench import _iou
from .cases import make_cases
from .data import _pool_max

__all__ = ["KS", "TABLE_FILE", "study", "table", "format_table", "notebook_table", "queries_figure", "errors_figure", "spotlight", "hatch",
           "dilation_figure"]

#: the dilations the study compares (k×k windows; 1 = none)
KS = (1, 3, 5, 7)
#: the object counts as covered whole above this share of its pixels
WHOLE = 0.95
#: the pipeline's default dilation (the "part missed" rate is read there)
DEFAULT_K = 3
#: the shipped table of notebook 02 (:func:`notebook_table`)
TABLE_FILE = Path(__file__).resolve().parent / "weights" / "segmenter_table.json"
#: the cases the shipped table uses
N_CASES, SEED = 200, 0


def study(pipe, n: int = N_CASES, seed: int = SEED, ks=KS, progress: bool = False) -> list[dict]:
    """One record per case (the first ``n`` of ``make_cases(n, seed)``): ``index``, ``ref``, ``objects``,
    ``context``, ``iou``, ``wrong``, ``score``, and per k ``covered_k``, ``extra_k``. (The segmenter's warnings
    about ambiguous phrases are silenced here: the records count them as ``wrong`` when they go wrong.)"""
    from ..progress import tqdm

    with _quiet():
        return [_record(pipe, case, ks) for case in tqdm(make_cases(n, seed), desc="segmenter study", disable=not progress)]


@contextmanager
def _quiet():
    log = logging.getLogger("romlib")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _record(pipe, case, ks) -> dict:
    image = case.pil()
    seg = pipe.segment(image, case.ref, best_anyway=True)
    pred = seg.mask.cpu().numpy().astype(bool)
    own = _iou(pred, case.mask)
    others = [_iou(pred, case.masks[j]) for j in range(len(case.scene.objects)) if j != case.i]
    rec = {"index": case.index, "ref": case.ref, "objects": len(case.scene.objects), "context": bool(case.context),
           "iou": round(own, 4), "wrong": bool(others and max(others) > own), "score": round(float(seg.score), 4)}
    for k in ks:
        edit = (1 - pipe.prepare(image, case.ref, mask=seg, dilation=k).keep_base[0, 0]).cpu().numpy() > 0.5
        true = _pool_max(case.mask, edit.shape[0])
        rec[f"covered_{k}"] = round(float((edit & true).sum() / max(true.sum(), 1)), 4)
        rec[f"extra_{k}"] = round(float((edit & ~true).sum() / max(true.sum(), 1)), 4)
        # the baseline: the object's true mask through the same path (what resolution alone loses)
        perfect = (1 - pipe.prepare(image, case.ref, mask=case.mask, dilation=k).keep_base[0, 0]).cpu().numpy() > 0.5
        rec[f"true_covered_{k}"] = round(float((perfect & true).sum() / max(true.sum(), 1)), 4)
    return rec


def table(records: list[dict], ks=KS) -> dict:
    """The summary notebook 02 prints: IoU (mean, quartiles), failure and wrong-object rates (Wilson 95 %) overall and
    by object count, and per k the coverage, the rate of whole objects and the extra pixels."""
    iou = np.array([r["iou"] for r in records])
    right = [r for r in records if not r["wrong"]]
    out = {"n": len(records), "mean_iou": round(float(iou.mean()), 3),
           "quartiles": [round(float(q), 3) for q in np.quantile(iou, [0.25, 0.5, 0.75])],
           "failure": rate([bool(x < 0.5) for x in iou]), "wrong": rate([r["wrong"] for r in records]),
           "wrong_by_objects": {str(n): rate([r["wrong"] for r in records if r["objects"] == n])
                                for n in sorted({r["objects"] for r in records})},
           "wrong_by_phrase": {name: rate([r["wrong"] for r in records if r["context"] == ctx])
                               for name, ctx in (("relation", True), ("attributes only", False))
                               if any(r["context"] == ctx for r in records)},
           "part_missed": rate([r[f"covered_{DEFAULT_K}"] < WHOLE for r in right]),
           "dilation": [{"k": k, "covered": round(float(np.mean([r[f"covered_{k}"] for r in right])), 3),
                         "whole": rate([r[f"covered_{k}"] >= WHOLE for r in right]),
                         "true_whole": rate([r[f"true_covered_{k}"] >= WHOLE for r in records]),
                         "extra": round(float(np.mean([r[f"extra_{k}"] for r in right])), 3)} for k in ks]}
    return out


def _pct(r: dict) -> str:
    return f"{r['pct']:5.1f} % [{r['low']:.0f}, {r['high']:.0f}] (n={r['n']})"


def format_table(t: dict) -> str:
    """:func:`table` as text."""
    lines = [f"cases: the first {t['n']} of make_cases(seed={t.get('seed', SEED)}); threshold 0.5, best query",
             f"IoU with the referred object (64x64): mean {t['mean_iou']:.3f}, quartiles "
             + " / ".join(f"{q:.2f}" for q in t["quartiles"]),
             f"failure (IoU < 0.5): {_pct(t['failure'])}",
             f"wrong object picked: {_pct(t['wrong'])}",
             "  by objects in the scene: " + "; ".join(f"{n}: {_pct(r)}" for n, r in t["wrong_by_objects"].items()),
             "  by phrase: " + "; ".join(f"{k}: {_pct(r)}" for k, r in t.get("wrong_by_phrase", {}).items()),
             f"right object, part missed at k = {DEFAULT_K} (< 95 % of it in the edit mask): {_pct(t['part_missed'])}",
             "dilation at the base model's 32x32 (an object pixel: any of its 2x2 block is the object's);",
             "right picks, and the true mask through the same path:",
             "  k  pixels covered  covered whole (>= 95 %)     true mask: covered whole    extra pixels per object pixel"]
    lines += [f"  {d['k']}  {d['covered']:14.3f}  {_pct(d['whole']):26s}  {_pct(d['true_whole']):26s}  {d['extra']:.2f}"
              for d in t["dilation"]]
    return "\n".join(lines)


def notebook_table(pipe=None, *, rerun: bool = False) -> dict:
    """Notebook 02's table: the shipped :data:`TABLE_FILE` (instant), or recomputed with ``rerun=True`` on ``pipe``
    (the same cases; about 10 s on one CPU core)."""
    if rerun:
        if pipe is None:
            raise ValueError("rerun=True needs the world pipeline: notebook_table(pipe, rerun=True)")
        return {**table(study(pipe)), "seed": SEED}
    if not TABLE_FILE.is_file():
        raise FileNotFoundError(f"{TABLE_FILE} is missing; recompute it: notebook_table(pipe, rerun=True)")
    return json.loads(TABLE_FILE.read_text())


# ----------------------------------------------------------------------------- figures
def queries_figure(image, seg, top: int = 8):
    """Every query's mask (``seg.extra["query_masks"]``, lit: the rest of the image darkened), best score first, with
    its score; the chosen one framed in yellow. Near-duplicate queries of one object show as repeated masks with one score. Returns (figure, rows of
    (query, score, object pixels))."""
    import matplotlib.pyplot as plt

    probs = seg.extra.get("query_masks")
    if probs is None:
        raise ValueError("this segmentation has no per-query masks (the world's segmenter gives them; MDETR's "
                         "wrapper keeps only the best); use romlib.viz.segmentation_figure for the boxes")
    order = torch.argsort(seg.scores, descending=True)[:top].tolist()
    fig, axes = plt.subplots(1, len(order), figsize=(1.7 * len(order), 2.1))
    rows = []
    for ax, q in zip(np.atleast_1d(axes), order):
        m = (probs[q] > 0.5).cpu()
        _imshow(ax, spotlight(image, m))
        chosen = q == seg.index
        ax.set_title(f"query {q}\nscore {float(seg.scores[q]):.2f}", fontsize=8, color="k")
        for side in ax.spines.values():
            side.set_edgecolor("gold" if chosen else "0.8")
            side.set_linewidth(4 if chosen else 1)
        ax.set_xticks([]), ax.set_yticks([])
        rows.append((q, round(float(seg.scores[q]), 3), int(m.sum())))
    fig.suptitle(f"every query's mask (lit) for {seg.text!r}, best score first (framed: the one kept)", fontsize=9)
    fig.tight_layout()
    return fig, rows


def spotlight(image, mask, dim: float = 0.3) -> np.ndarray:
    """``image`` (PIL / array) with every pixel outside ``mask`` (bool [H, W]) darkened to ``dim``: a mask that stays
    readable on an object of any colour (a red tint vanishes on a red object)."""
    a = np.asarray(image, dtype=np.float32)[..., :3].copy()
    m = np.asarray(mask.cpu() if torch.is_tensor(mask) else mask, dtype=bool)
    a[~m] *= dim
    return a.clip(0, 255).astype(np.uint8)


def hatch(image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``image`` (uint8 [H, W, 3], changed in place and returned) with ``pixels`` (bool [H, W]) hatched black and
    white: a pattern no object of the world has, so missed or left-over pixels read on any colour."""
    ys, xs = np.nonzero(pixels)
    image[ys, xs] = np.where(((ys + xs) % 2 == 0)[:, None], 255, 0).astype(np.uint8)
    return image


#: the error figure's panels: (title, rule over a record, how many)
PANELS = (("good mask (IoU >= 0.8)", lambda r: not r["wrong"] and r["iou"] >= 0.8, 2),
          ("right object, part missed", lambda r: not r["wrong"] and r["covered_3"] < WHOLE, 2),
          ("wrong object\n(phrase with a relation)", lambda r: r["wrong"] and r["context"], 1),
          ("wrong object\n(attributes only)", lambda r: r["wrong"] and not r["context"], 1))


def _examples(records: list[dict], panels=PANELS) -> list[tuple[str, dict]]:
    """The figure's cases, by rule (:data:`PANELS`): for each panel the first records that satisfy its rule and
    were not taken by an earlier panel (a good mask; a right pick whose k = 3 edit mask still leaves 5 % or more of
    the object out; a wrong object for a phrase that needs a relation, and for one that names attributes only)."""
    out, taken = [], set()
    for name, rule, count in panels:
        hits = [r for r in records if rule(r) and r["index"] not in taken][:count]
        taken.update(r["index"] for r in hits)
        out += [(name, r) for r in hits]
    return out


def errors_figure(pipe, records: list[dict], seed: int = SEED):
    """Cases chosen by :func:`_examples`' rule: each the scene with the referred object outlined (white) and the
    segmenter's mask lit (:func:`spotlight`), the object's pixels it missed hatched black and white, titled with its IoU and, under it, the share of the object the k = 1 and
    k = 3 edit masks cover at the base model's 32×32."""
    import matplotlib.pyplot as plt

    from .cases import make_case

    picks = _examples(records)
    fig, axes = plt.subplots(1, len(picks), figsize=(2.2 * len(picks), 3.6))
    for ax, (name, r) in zip(np.atleast_1d(axes), picks):
        case = make_case(seed, r["index"])
        with _quiet():
            seg = pipe.segment(case.pil(), case.ref, best_anyway=True)
        lit = spotlight(case.pil(), seg.mask)
        hatch(lit, case.mask & ~seg.mask.cpu().numpy().astype(bool))
        _imshow(ax, overlay_mask(lit, torch.from_numpy(case.mask), color=(255, 255, 255)))
        ax.set_title(f"{name}\nIoU {r['iou']:.3f}", fontsize=8)
        ax.set_xlabel(f"{case.ref}\nobject covered at 32x32:\nk=1 {r['covered_1']:.0%}, k=3 {r['covered_3']:.0%}", fontsize=6.5)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("the learned segmenter: lit = its mask (the rest darkened), white outline = the referred object, "
                 "hatched = the object's pixels the mask missed", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def dilation_figure(t: dict):
    """Notebook 02's dilation panel from :func:`table`: per k, the share of objects covered whole (with its 95 %
    interval; dashed: the true mask through the same path) and the extra pixels per object pixel."""
    import matplotlib.pyplot as plt

    ks = [d["k"] for d in t["dilation"]]
    whole = np.array([d["whole"]["pct"] for d in t["dilation"]])
    err = np.array([[d["whole"]["pct"] - d["whole"]["low"], d["whole"]["high"] - d["whole"]["pct"]] for d in t["dilation"]]).T
    fig, ax = plt.subplots(1, 2, figsize=(8.5, 3.0))
    n_right, n_all = t["dilation"][0]["whole"]["n"], t["dilation"][0]["true_whole"]["n"]
    ax[0].errorbar(ks, whole, yerr=err, marker="o", capsize=3, label=f"the segmenter's mask (right picks, n={n_right})")
    ax[0].plot(ks, [d["true_whole"]["pct"] for d in t["dilation"]], "k--", marker="s", ms=4,
               label=f"the true mask (every case, n={n_all})")
    ax[0].legend(fontsize=7, loc="lower right")
    ax[0].set(xlabel="dilation k", ylabel="% covered whole (>= 95 %)", ylim=(0, 105), xticks=ks,
              title="objects the edit mask reaches")
    ax[1].bar(ks, [d["extra"] for d in t["dilation"]], color="tab:orange")
    ax[1].set(xlabel="dilation k", ylabel="extra pixels per object pixel", xticks=ks,
              title="background to redraw")
    fig.tight_layout()
    return fig

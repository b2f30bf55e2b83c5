"""Notebook 03 on the world: what each mask dilation k leaves of the old object, and what it costs (paper Fig. 8).

The masks are the learned segmenter's (its best query, as the authors' code takes), dilated by a k×k window at the
base model's 32×32. Every edit is :func:`romlib.world.bench.edit_case` (the pipeline's own path, the rule and scale
below, the same seeds for every k) judged sample by sample by the oracle (:func:`romlib.world.bench.judge_edit`).
Each case is edited twice: to its target (a new colour *and* shape, the ``"both"`` cases) and to the empty target
(remove). Per k, :func:`table` gives:

* **rim left**: the object's pixels outside the edit mask at 64×64 — what the edit cannot change, so a remnant
  the model sees and continues — and the share of edits that leave none;
* **over**: background pixels inside the mask (what the model must redraw);
* with the target: **reached** (the oracle reads the named colour and shape) and **old back** (it reads the
  object's own colour *and* shape in the hole: the model completed the old object);
* with the empty target: **removed** (the oracle's call on the hole: nothing read there and its background within
  :data:`romlib.world.oracle.REMOVED_PSNR` dB of the clean room), **gone** (removed *and* at most :data:`REMNANT_PX`
  of the object's pixels left outside the hole: the whole image shows no remnant), **old back**, and **bg PSNR**:
  the repainted background against the clean room (dB; the cost of repainting more of it).

:func:`study` computes the records (minutes: ``len(KS) × 2 × N_CASES`` edits of ``SAMPLES`` samples; a journal
folder makes it resumable), :data:`TABLE_FILE` keeps the shipped table (what notebook 03 prints:
:func:`notebook_table`; ``rerun=True`` recomputes it), :func:`example_figure` draws the table's first case and
:func:`table_figure` its trade-off.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..shapes.measure import rate
from . import studies
from .bench import _mean_ci, edit_case, judge_edit, run_bench
from .cases import WorldCase, make_cases
from .oracle import FG_DIST, MIN_AREA, REMOVED_PSNR
from .studies import calls, check_journal, command, mark, num, pct, scale_option

__all__ = ["KS", "RULE", "SCALE", "SAMPLES", "N_CASES", "SEED", "RIGHT_IOU", "REMNANT_PX", "TABLE_FILE", "cases", "study", "old_back", "gone", "verdict", "table",
           "format_table", "notebook_table", "example_figure", "table_figure"]

#: the dilations compared (k×k windows at the base model's 32×32; 1 = the mask as predicted)
KS = (1, 3, 5, 7)
#: the guidance rule and scale of every edit (the world's defaults)
RULE, SCALE = "ccf", 3.0
#: samples per edit
SAMPLES = 4
#: the cases: the first N_CASES "both" cases of make_cases(seed=SEED) (tuning seed 0, not the held-out one)
N_CASES, SEED = 36, 0
#: the segmenter picked the referred object when its mask's IoU with it is at least this
RIGHT_IOU = 0.5
#: an edit leaves a remnant of the old object when more of its pixels than this lie outside the edit mask
REMNANT_PX = 3
#: the shipped table of notebook 03 (:func:`notebook_table`)
TABLE_FILE = Path(__file__).resolve().parent / "weights" / "dilation_table.json"


def cases(n: int = N_CASES, seed: int = SEED) -> dict[str, list[WorldCase]]:
    """``{"edit": the first n "both" cases, "remove": the same cases with the empty target}``."""
    edit = make_cases(n, seed, kinds=["both"])
    return {"edit": edit, "remove": [replace(c, target="", kind="remove") for c in edit]}


def _settings(seed: int, scale: float) -> dict:
    return dict(rules=(RULE,), scales=(scale,), samples=SAMPLES, seed=seed, dilation=KS, mask="segmenter")


def study(pipe, n: int = N_CASES, seed: int = SEED, *, scale: float = SCALE, journal: str | Path | None = None,
          progress: bool = False, **knobs) -> dict[str, list[dict]]:
    """The records (:func:`romlib.world.bench.run_bench`) of every case at every k, ``{"edit": ..., "remove": ...}``.
    ``journal``: a folder for the two runs' journals (``edit.jsonl``, ``remove.jsonl``): a killed study resumes.
    ``scale``: the guidance scale of every edit (the held-out run's is the pre-registration's best). ``knobs``: edit
    settings on top of the backend's (``steps="2"`` in the tests)."""
    out = {}
    for name, cs in cases(n, seed).items():
        path = None
        if journal is not None:
            Path(journal).mkdir(parents=True, exist_ok=True)
            path = Path(journal) / f"{name}.jsonl"
            check_journal(path, seed)
        out[name] = run_bench(pipe, cs, progress=progress, journal=path, **_settings(seed, scale), **knobs)
    return out


def old_back(r: dict) -> bool | None:
    """Whether the oracle read the object's own colour *and* shape in the hole (the old object came back): False when
    nothing was drawn there or either reading differs, None when it abstained on one and the other agrees."""
    if r["area"] < MIN_AREA or r["old_colour"] is False or r["old_shape"] is False:
        return False
    if r["old_colour"] is None or r["old_shape"] is None:
        return None
    return True


def gone(r: dict) -> bool | None:
    """Whether a removal left nothing of the object in the whole image: the oracle's ``removed`` in the hole and at
    most :data:`REMNANT_PX` of its pixels outside the hole."""
    return None if r["removed"] is None else bool(r["removed"]) and r["left_px"] <= REMNANT_PX


def table(records: dict[str, list[dict]], ks=KS) -> dict:
    """The summary notebook 03 prints, per k, over the cases where the segmenter picked the referred object (its
    mask's IoU with the object ≥ :data:`RIGHT_IOU`; the wrong picks are notebook 02's subject, counted apart):
    rates with their Wilson 95 % intervals (the oracle's abstentions apart), means with normal 95 % intervals."""
    right = {r["case"] for r in records["edit"] if r.get("sample") is not None and r["seg_iou"] >= RIGHT_IOU}
    cases = {r["case"] for r in records["edit"]}
    rows = []
    for k in ks:
        e = [r for r in records["edit"] if r.get("sample") is not None and r["dilation"] == k and r["case"] in right]
        m = [r for r in records["remove"] if r.get("sample") is not None and r["dilation"] == k and r["case"] in right]
        holes = list({r["case"]: r for r in e}.values())  # the hole is the edit's: one per case
        rows.append({"k": k, "cases": len(holes), "samples": len(e), "samples_remove": len(m),
                     "rim_px": _mean_ci(r["left_px"] for r in holes),
                     "rim_median": float(np.median([r["left_px"] for r in holes])) if holes else None,
                     "rim_max": max((r["left_px"] for r in holes), default=None),
                     "no_rim": rate([r["left_px"] <= REMNANT_PX for r in holes]),
                     "over_px": _mean_ci(r["over_px"] for r in holes),
                     "colour": calls([r.get("hit_colour") for r in e]),
                     "shape": calls([r.get("hit_shape") for r in e]),
                     "reached": calls([r["success"] for r in e]),
                     "old_shape": calls([r["old_shape"] for r in e]),
                     # over every sample: a shape the oracle cannot call is drawn recognisably as neither
                     "new_shape_drawn": rate([r.get("hit_shape") is True for r in e]),
                     "old_shape_drawn": rate([r["old_shape"] is True for r in e]),
                     "shape_unread": rate([r.get("hit_shape") is None for r in e]),
                     "psnr_bg_edit": _mean_ci(r["psnr_bg"] for r in e),
                     "bad_px_edit": _mean_ci(r.get("bg_bad_px") for r in e),
                     # the new shape where the hole leaves (almost) no rim: what a larger hole adds beyond the rim's removal
                     "new_shape_no_rim": rate([r.get("hit_shape") is True for r in e if r["left_px"] <= REMNANT_PX]),
                     "removed": calls([r["removed"] for r in m]),
                     "gone": calls([gone(r) for r in m]),
                     "gone_cases": len({r["case"] for r in m if gone(r)}),
                     "psnr_bg_remove": _mean_ci(r["psnr_bg"] for r in m),
                     "bad_px_remove": _mean_ci(r.get("bg_bad_px") for r in m)})
    drawn = {(r["case"], r["sample"], r["dilation"]): r.get("hit_shape") is True for r in records["edit"]
             if r.get("sample") is not None and r["case"] in right}
    lo, hi = min(ks), max(ks)
    pairs = [(drawn[(c, smp, lo)], drawn[(c, smp, hi)]) for (c, smp, k) in drawn if k == lo and (c, smp, hi) in drawn]
    paired = {"k_small": lo, "k_large": hi, "pairs": len(pairs), "only_large": sum(b and not a for a, b in pairs),
              "only_small": sum(a and not b for a, b in pairs),
              "cases_large": len({c for (c, smp, k) in drawn if k == lo and (c, smp, hi) in drawn
                                  and drawn[(c, smp, hi)] and not drawn[(c, smp, lo)]})}
    return {"rule": RULE, "scale": records["edit"][0].get("scale", SCALE) if records["edit"] else SCALE, "samples": SAMPLES,
            "paired_new_shape": paired,
            "seed": records["edit"][0].get("seed", SEED) if records["edit"] else SEED, "n_cases": len(cases),
            "right_picks": len(right), "wrong_picks": sorted(cases - right), "right_iou": RIGHT_IOU,
            "no_edit": sum(r.get("sample") is None for rs in records.values() for r in rs),
            "removed_psnr": REMOVED_PSNR, "rows": rows,
            "example": [verdict(r) for name in ("edit", "remove") for r in records[name]
                        if r.get("sample") is not None and r["case"] == min(cases, default=None)]}


def verdict(r: dict) -> dict:
    """A record's verdicts in short (what the shipped table keeps of its first case's samples, ``"example"``, and what
    :func:`example_figure` titles its panels with): case, k, sample, rank, target; colour / shape / reached / old shape for an edit, removed /
    gone for a removal; the rim and background pixels, the background's PSNR and the segmenter's IoU."""
    empty = r["target"] == ""
    out = {"case": r["case"], "k": r["dilation"], "sample": r["sample"], "rank": r["rank_local"], "target": r["target"],
           "left_px": r["left_px"], "over_px": r["over_px"],
           "psnr_bg": None if r["psnr_bg"] is None else round(r["psnr_bg"], 2), "bg_bad_px": r.get("bg_bad_px"),
           "seg_iou": round(r["seg_iou"], 3)}
    if empty:
        out.update(removed=r["removed"], gone=gone(r))
    else:
        out.update(colour=r.get("hit_colour"), shape=r.get("hit_shape"), reached=r["success"], old_shape=r["old_shape"])
    return out


def format_table(t: dict) -> str:
    """:func:`table` as text: three small tables (the mask, the edit to the target, the removal), one line per k."""
    rows = t["rows"]
    wrong = len(t["wrong_picks"])
    lines = [f"{t['n_cases']} cases of make_cases(seed={t['seed']}) whose target names a colour and a shape; the "
             f"segmenter's best query picked the referred object in {t['right_picks']} (IoU >= {t['right_iou']:g}; the "
             f"{wrong} wrong picks are left out); {t['rule']} s = {t['scale']:g}, {t['samples']} samples per edit",
             "",
             f"the mask (at 64x64; {rows[0]['cases']} holes per k)   k   rim px: mean  median  max   rim <= {REMNANT_PX} px"
             "        background px in the hole"]
    for r in rows:
        median = "–" if r["rim_median"] is None else f"{r['rim_median']:.1f}"
        top = "–" if r.get("rim_max") is None else f"{r['rim_max']}"
        lines.append(f"{'':36s}{r['k']:>2}   {num(r['rim_px']):>10s}  {median:>6s}  {top:>4s}   {pct(r['no_rim']):>15s}"
                     f"   {num(r['over_px'], '.0f'):>6s}")
    lines += ["", f"to the target ({rows[0]['samples']} samples per k)        k   colour hit           shape readable   "
                  "  of those: new shape   of those: old shape   bg px wrong"]
    for r in rows:
        readable = rate([True] * r["shape"]["n"] + [False] * r["shape"]["abstained"])
        new, old = ({**r[key], "abstained": 0} for key in ("shape", "old_shape"))  # of the readable: no abstention
        lines.append(f"{'':36s}{r['k']:>2}   {pct(r['colour']):19s}  {pct(readable):18s}  {pct(new):20s}  "
                     f"{pct(old):20s}  {num(r['bad_px_edit'], '.0f'):>6s}")
    p = t.get("paired_new_shape")
    if p:
        lines.append(f"{'':36s}new shape drawn over every sample: " + " / ".join(
            f"{r['new_shape_drawn']['pct']:.0f} %" for r in rows) + f" (k = {'/'.join(str(r['k']) for r in rows)}); "
            f"paired, same seeds: {p['only_large']} samples only at k = {p['k_large']}"
            + (f" (from {p['cases_large']} cases)" if "cases_large" in p else "")
            + f", {p['only_small']} only at k = {p['k_small']} (of {p['pairs']})")
        if "new_shape_no_rim" in rows[0]:
            lines.append(f"{'':36s}new shape drawn where the hole leaves <= {REMNANT_PX} rim px: " + " / ".join(
                f"{r['new_shape_no_rim']['k']}/{r['new_shape_no_rim']['n']}" for r in rows) + " samples")
    lines += ["", f"to '' (remove; {rows[0]['samples_remove']} samples per k)     k   removed (hole)       gone (rim <= "
                  f"{REMNANT_PX} px)     bg PSNR  hole px wrong"]
    for r in rows:
        cases = f" ({r['gone_cases']} cases)" if r.get("gone_cases") is not None else ""
        lines.append(f"{'':36s}{r['k']:>2}   {pct(r['removed']):19s}  {(pct(r['gone']) + cases):21s}  "
                     f"{num(r['psnr_bg_remove']):>5s} dB  {num(r['bad_px_remove'], '.0f'):>6s}")
    lines.append("shape readable: the oracle names a shape (else it abstains: a lumpy silhouette); new / old: the target's "
                 "/ the object's own shape, of the readable ones")
    lines.append(f"bg px wrong (edit): background pixels in the hole (off the drawn object and its shadow) more than "
                 f"{FG_DIST:g} RGB levels from the clean room, per sample; hole px wrong (removal): the same, the object's old area included")
    if t["no_edit"]:
        lines.append(f"edits the pipeline refused: {t['no_edit']}")
    return "\n".join(lines)


def notebook_table(pipe=None, *, rerun: bool = False, journal: str | Path | None = None, progress: bool = False) -> dict:
    """Notebook 03's table: the shipped :data:`TABLE_FILE` (instant), or recomputed with ``rerun=True`` on ``pipe``
    (the same cases and seeds; about 20 minutes on one CPU core; ``journal``: resumable)."""
    return studies.notebook_table(TABLE_FILE, lambda: table(study(pipe, journal=journal, progress=progress)), pipe,
                                  rerun)


# ----------------------------------------------------------------------------- the figure
def _rim_panel(image: np.ndarray, rim: np.ndarray, scale: int = 4) -> np.ndarray:
    """``image`` (uint8 [H, W, 3]) enlarged ``scale``× (nearest) with the ``rim`` pixels striped black and white
    (diagonal stripes 2 px wide: a pattern no world object has, readable at a figure's size)."""
    big = np.repeat(np.repeat(image, scale, 0), scale, 1).copy()
    where = np.repeat(np.repeat(rim, scale, 0), scale, 1)
    ys, xs = np.nonzero(where)
    big[ys, xs] = np.where((((ys + xs) // 2) % 2 == 0)[:, None], 255, 0).astype(np.uint8)
    return big


def _shape_word(r: dict) -> str:
    """What the oracle read of an edit's shape: the new (target's) one, the old (object's own), unreadable or another."""
    if r.get("hit_shape") is True:
        return "new shape"
    if r["old_shape"] is True:
        return "old shape"
    return "shape unreadable" if r.get("hit_shape") is None else "another shape"



def example_figure(pipe, index: int = 0, seed: int = SEED, ks=KS, **knobs):
    """The table's case ``index`` at every k, with the table's settings and seeds: top, the edit mask (the rest
    darkened) with the rim it leaves hatched; middle, the best-ranked edit to the target; bottom, the best-ranked
    removal; each titled with the oracle's verdicts for that sample and the count over the k's samples.
    Returns ``(figure, rows)``: one dict per k with the edits' :func:`verdict` s in sampling order (what the table
    counts for this case). ``knobs``: edit settings on top of the backend's (as :func:`study`)."""
    import matplotlib.pyplot as plt

    from ..io import to_pil
    from .segstudy import spotlight

    pair = {name: cs[index] for name, cs in cases(index + 1, seed).items()}
    fig, axes = plt.subplots(3, len(ks), figsize=(2.9 * len(ks), 9.2), squeeze=False)
    rows = []
    for col, k in enumerate(ks):
        results = {name: edit_case(pipe, c, rule=RULE, scale=SCALE, samples=SAMPLES, seed=seed, dilation=k,
                                   mask="segmenter", **knobs) for name, c in pair.items()}
        recs = {name: judge_edit(pipe, res, pair[name], mask="segmenter") for name, res in results.items()}
        hole = results["edit"].edit_mask.bool().numpy()
        rim = pair["edit"].mask & ~hole
        ax = axes[0, col]
        ax.imshow(_rim_panel(spotlight(pair["edit"].image, hole, dim=0.45), rim), interpolation="nearest")
        if rim.any():  # the rim's outline in red, so a few striped pixels read at a figure's size
            ax.contour(np.repeat(np.repeat(rim, 4, 0), 4, 1).astype(float), levels=[0.5], colors="red", linewidths=1.2)
        ax.set_title(f"k = {k}: mask\nrim left {int(rim.sum())} px, over {recs['edit'][0]['over_px']} px", fontsize=8)
        best = {name: res.order[0] for name, res in results.items()}
        e, m = recs["edit"][best["edit"]], recs["remove"][best["remove"]]
        n_colour = sum(bool(r.get("hit_colour")) for r in recs["edit"])
        n_shape = sum(bool(r.get("hit_shape")) for r in recs["edit"])
        n_gone = sum(bool(gone(r)) for r in recs["remove"])
        axes[1, col].imshow(to_pil(results["edit"].images[0]), interpolation="nearest")
        axes[1, col].set_title(f"{pair['edit'].target!r}\ncolour {mark(e.get('hit_colour'))}, {_shape_word(e)}"
                               f"\n(of {SAMPLES}: colour {n_colour}, new shape {n_shape})", fontsize=8)
        axes[2, col].imshow(to_pil(results["remove"].images[0]), interpolation="nearest")
        psnr = "–" if m["psnr_bg"] is None else f"{m['psnr_bg']:.1f} dB"
        axes[2, col].set_title(f"'' (remove): gone {mark(gone(m))}\nhole: removed {mark(m['removed'])}, bg {psnr}"
                               f"\n({n_gone}/{SAMPLES} samples gone)", fontsize=8)
        rows.append({"k": k, "rim_px": int(rim.sum()), "edit": [verdict(r) for r in recs["edit"]],
                     "remove": [verdict(r) for r in recs["remove"]]})
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    c = pair["edit"]
    fig.suptitle(f"{c.ref!r} (case {c.index} of the table): the segmenter's mask dilated by k at 32x32, shown at "
                 "64x64; striped: the object's pixels it leaves out (the rim)", fontsize=9)
    fig.tight_layout()
    return fig, rows


def table_figure(t: dict):
    """Notebook 03's trade-off from :func:`table`, per k: the rim left (object pixels outside the mask) against the
    background inside it (pixels per edit); what the oracle reads (colour hit, shape hit, the object gone with the
    empty target; % with 95 % intervals); and the background repainted wrong (pixels per sample)."""
    import matplotlib.pyplot as plt

    rows = t["rows"]
    ks = [r["k"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(11.5, 3.2))
    ax[0].plot(ks, [r["rim_px"]["mean"] for r in rows], "o-", color="black", label="rim left (object px outside)")
    ax[0].plot(ks, [r["over_px"]["mean"] for r in rows], "s-", color="tab:orange", label="background px inside")
    ax[0].set_yscale("symlog", linthresh=1)
    ax[0].set(xlabel="dilation k", ylabel="pixels per edit (64x64)", xticks=ks, ylim=(0, None),
              title=f"the mask ({rows[0]['cases']} cases per k)")
    ax[0].legend(fontsize=7)
    for key, label, style in (("new_shape_drawn", "new shape drawn", "^-"), ("old_shape_drawn", "old shape drawn", "v--"),
                              ("gone", "removal: object gone", "s-")):
        pct = [r[key]["pct"] if r[key]["n"] else np.nan for r in rows]
        err = [[r[key]["pct"] - r[key]["low"] if r[key]["n"] else 0 for r in rows],
               [r[key]["high"] - r[key]["pct"] if r[key]["n"] else 0 for r in rows]]
        n = "/".join(str(r[key]["n"]) for r in rows)
        ax[1].errorbar(ks, pct, yerr=err, fmt=style, capsize=3, label=f"{label} (n={n})")
    top = max([r[key]["high"] for r in rows for key in ("new_shape_drawn", "old_shape_drawn", "gone") if r[key]["n"]]
              + [10])
    colour = min((r["colour"]["pct"] for r in rows if r["colour"]["n"]), default=float("nan"))
    ax[1].set(xlabel="dilation k", ylabel="% of every sample", xticks=ks, ylim=(0, top * 1.15),
              title=f"what the oracle reads (colour hit >= {colour:.0f} % at every k)")
    ax[1].legend(fontsize=6.5)
    for key, label, style in (("bad_px_edit", "edit: background px off the object", "o-"),
                              ("bad_px_remove", "removal (''): old area included", "s-")):
        mean = [r[key]["mean"] if r[key]["mean"] is not None else np.nan for r in rows]
        err = [[r[key]["mean"] - r[key]["low"] if r[key]["low"] is not None else 0 for r in rows],
               [r[key]["high"] - r[key]["mean"] if r[key]["high"] is not None else 0 for r in rows]]
        ax[2].errorbar(ks, mean, yerr=err, fmt=style, capsize=3, label=label)
    ax[2].set(xlabel="dilation k", ylabel=f"px per sample off by > {FG_DIST:g} levels", xticks=ks, ylim=(0, None),
              title="pixels repainted wrong")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    """``python -m romlib.world.dilstudy``: the dilation study on the world backend's weights, resumable; writes
    the table (JSON) and prints it."""
    def run(pipe, args, out):
        return table(study(pipe, args.cases, args.seed, scale=args.scale, journal=out, progress=not args.quiet))

    return command(argv, prog="python -m romlib.world.dilstudy", doc=main.__doc__, n_cases=N_CASES, seed=SEED,
                   out="world_dilation", run=run, format_table=format_table, options=(scale_option(SCALE),))


if __name__ == "__main__":
    raise SystemExit(main())

"""Notebook 05 on the world: localized against masked ranking of the same samples (paper Fig. 7).

The cases are those where the context matters: the first :data:`N_CASES` cases of tuning seed 0 whose referring
expression needs a relation or a position because a look-alike shares its head ("the cube left of the red sphere";
``WorldCase.context``), of the four target kinds (colour, shape, material, both). Each case is edited once
(:func:`romlib.world.bench.edit_case`: CCF at the world's scale, the true mask dilated by 3, :data:`SAMPLES`
samples), and its samples are ranked both ways — local (CLIP on the object's box ×1.3) and masked (CLIP on the edit
mask only) — and judged one by one by the oracle. :func:`table` gives, over the cases:

* **top-1 reached**: the oracle reads what the target names in the sample each ranking puts first, against the
  first sample unranked and the average sample (what ranking can gain);
* **disagree**: the two rankings put different samples first; on those cases, which top-1 the oracle prefers
  (reached by one and not the other; paired, McNemar's discordant pairs);
* the same over the cases where the oracle can tell the samples apart at all (some reached, some not).

:func:`study` computes the records (resumable with a journal), :data:`TABLE_FILE` keeps the shipped table
(:func:`notebook_table`), :func:`example_figure` draws the table's first case where the two picks differ.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from ..shapes.measure import rate
from . import studies
from .bench import _mean_ci, edit_case, judge_edit, run_bench
from .cases import WorldCase, make_case
from .studies import calls, check_journal, command, mark, pct, scale_option

__all__ = ["RULE", "SCALE", "SAMPLES", "KINDS", "N_CASES", "SEED", "DILATION", "CONTINUOUS", "TABLE_FILE", "cases", "study", "table",
           "format_table", "notebook_table", "example_figure"]

#: the guidance rule and scale of every edit (the world's defaults)
RULE, SCALE = "ccf", 3.0
#: samples per edit (B; the paper ranks 24 on a GPU)
SAMPLES = 8
#: the target kinds
KINDS = ("colour", "shape", "material", "both")
#: the first N_CASES cases of seed SEED (tuning seed 0) of those kinds whose expression needs its context
N_CASES, SEED = 48, 0
#: the mask: the case's true object mask dilated by this k
DILATION = 3
#: what else is compared between the two picks (the oracle's continuous readings; ``size_err`` = |size_ratio − 1|)
CONTINUOUS = ("psnr_bg", "shift", "size_err")
#: the shipped table of notebook 05 (:func:`notebook_table`)
TABLE_FILE = Path(__file__).resolve().parent / "weights" / "ranking_table.json"


def _check_kinds(kinds, name: str = "kinds") -> tuple:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"{name}={','.join(kinds)!r}: {', '.join(bad) or 'none'} unknown; accepted: one or more of "
                         f"{', '.join(KINDS)}")
    return kinds


def cases(n: int = N_CASES, seed: int = SEED, kinds=KINDS) -> list[WorldCase]:
    """The first ``n`` cases of ``seed`` of ``kinds`` (some of :data:`KINDS`) whose referring expression needs its
    context."""
    kinds = _check_kinds(kinds)
    out, index = [], 0
    while len(out) < n:
        c = make_case(seed, index)
        if c.kind in kinds and c.context:
            out.append(c)
        index += 1
        if index > 100 * n + 1000:  # pragma: no cover - about a third of the cases need their context
            raise RuntimeError(f"only {len(out)} context cases in the first {index} of seed {seed}")
    return out


def study(pipe, n: int = N_CASES, seed: int = SEED, *, scale: float = SCALE, kinds=KINDS,
          journal: str | Path | None = None, progress: bool = False, **knobs) -> list[dict]:
    """The records (:func:`romlib.world.bench.run_bench`: each sample with its place in both rankings) of every case.
    ``journal``: a JSONL file (a killed study resumes; a journal of another seed is refused). ``knobs``: edit settings
    on top of the backend's (``steps="2"`` in the tests). ``scale``, ``kinds``: the guidance scale and the case kinds
    (the held-out run's P3: the pre-registration's best scale, ``both`` cases)."""
    if journal is not None:
        check_journal(journal, seed)
    return run_bench(pipe, cases(n, seed, kinds), rules=(RULE,), scales=(scale,), samples=SAMPLES, seed=seed,
                     dilation=DILATION, mask="true", progress=progress, journal=journal, **knobs)


def _per_case(records: list[dict]) -> list[dict]:
    """One summary per case: whether each pick reached the target (None: the oracle abstained on it), the mean over
    samples, whether the two rankings disagree and whether the samples differ at all."""
    by: dict = {}
    for r in records:
        if r.get("sample") is not None:
            by.setdefault(r["case"], []).append(r)
    out = []
    for case, recs in sorted(by.items()):
        pick = {mode: next(r for r in recs if r[f"rank_{mode}"] == 0) for mode in ("local", "masked")}
        calls = [r["success"] for r in recs if r["success"] is not None]
        out.append({"case": case, "kind": recs[0]["kind"], "target": recs[0]["target"],
                    "local": pick["local"]["success"], "masked": pick["masked"]["success"],
                    "first": next(r for r in recs if r["sample"] == 0)["success"],
                    "mean": float(np.mean(calls)) if calls else None,
                    "disagree": pick["local"]["sample"] != pick["masked"]["sample"],
                    "mixed": 0 < sum(calls) < len(calls),
                    **{f"{key}_{mode}": pick[mode].get(key) for key in CONTINUOUS for mode in ("local", "masked")}})
    return out


def _differences(rows: list[dict]) -> dict:
    """Over the cases whose picks differ: the mean (95 % interval) of local's pick minus masked's for each of
    :data:`CONTINUOUS` (cases where either is unmeasured left out)."""
    return {key: _mean_ci(r[f"{key}_local"] - r[f"{key}_masked"] for r in rows
                          if r["disagree"] and None not in (r[f"{key}_local"], r[f"{key}_masked"]))
            for key in CONTINUOUS}


def _block(rows: list[dict]) -> dict:
    both = [(r["local"], r["masked"]) for r in rows if r["disagree"] and None not in (r["local"], r["masked"])]
    means = [r["mean"] for r in rows if r["mean"] is not None]
    return {"cases": len(rows), "top1_local": calls(r["local"] for r in rows),
            "top1_masked": calls(r["masked"] for r in rows), "first": calls(r["first"] for r in rows),
            "mean_sample": round(100 * float(np.mean(means)), 1) if means else None,
            "disagree": rate([r["disagree"] for r in rows]),
            "local_only": sum(a and not b for a, b in both), "masked_only": sum(b and not a for a, b in both),
            "both_same": sum(a == b for a, b in both), "differences": _differences(rows),
            # where a difference could show at all: the picks differ *and* the case's samples differ in outcome
            "decidable": sum(r["disagree"] and r["mixed"] for r in rows)}


def table(records: list[dict]) -> dict:
    """The summary notebook 05 prints: over every case and over the cases whose samples the oracle tells apart
    (``mixed``), per kind too; and the first case where the two picks differ and the oracle prefers one
    (``example_case``; else the first where they differ among the cases the oracle tells apart, else the first where
    they differ; None if they never do)."""
    rows = _per_case([{**r, "size_err": None if r.get("size_ratio") is None else abs(r["size_ratio"] - 1)}
                      for r in records])
    mixed = [r for r in rows if r["mixed"]]
    told = [r for r in rows if r["disagree"] and None not in (r["local"], r["masked"]) and r["local"] != r["masked"]]
    differ = [r for r in rows if r["disagree"]]
    example = (told or [r for r in differ if r["mixed"]] or differ or [None])[0]
    return {"seed": records[0]["seed"] if records else SEED, "rule": RULE,
            "scale": records[0].get("scale", SCALE) if records else SCALE, "samples": SAMPLES,
            "dilation": DILATION, "n_cases": len(rows), "all": _block(rows), "mixed": _block(mixed),
            "by_kind": {k: _block([r for r in rows if r["kind"] == k]) for k in KINDS if any(r["kind"] == k for r in rows)},
            "example_case": None if example is None else example["case"], "example_told_apart": bool(told),
            "cases": rows,
            "no_edit": sum(r.get("sample") is None for r in records)}


def _diff(m: dict, unit: str) -> str:
    if m["mean"] is None:
        return "–"
    if m["low"] is None or m["n"] < 2:
        return f"{m['mean']:+.2f}{unit} (n = {m['n']})"
    return f"{m['mean']:+.2f}{unit} [{m['low']:+.2f}, {m['high']:+.2f}] (n = {m['n']})"


def format_table(t: dict) -> str:
    """:func:`table` as text: one line per set of cases (all, the mixed ones, each kind)."""
    lines = [f"{t['n_cases']} cases of seed {t['seed']} whose referring expression needs its context; {t['rule']} "
             f"s = {t['scale']:g}, B = {t['samples']} samples, true mask k = {t['dilation']}",
             "",
             "cases        n   top-1 reached: local       masked                     first sample               "
             "mean sample   picks differ     of those: local only / masked only / same (could differ)"]
    for name, b in [("all", t["all"]), ("mixed", t["mixed"]), *[(k, v) for k, v in t["by_kind"].items()]]:
        mean = "–" if b["mean_sample"] is None else f"{b['mean_sample']:.0f} %"
        lines.append(f"{name:9s} {b['cases']:>4}   {pct(b['top1_local']):25s}  {pct(b['top1_masked']):25s}  "
                     f"{pct(b['first']):25s}  {mean:>11s}   {pct(b['disagree']):15s}  "
                     f"{b['local_only']} / {b['masked_only']} / {b['both_same']} ({b['decidable']})")
    d = t["all"]["differences"]
    lines += ["", f"where the picks differ ({t['all']['disagree']['k']} cases), local's pick minus masked's, mean [95 %]: "
                  f"bg PSNR {_diff(d['psnr_bg'], ' dB')}, foot shift {_diff(d['shift'], ' px')}, "
                  f"size error {_diff(d['size_err'], '')}"]
    lines += ["mixed: cases whose samples the oracle tells apart (some reach the target, some do not): only there can a "
              "ranking matter",
              "local only / masked only: the picks differ and only that ranking's reaches the target (McNemar's "
              "discordant pairs); same: both or neither; could differ: the picks differ on a mixed case (elsewhere "
              "every sample has the same outcome, so any two picks agree)"]
    if t["no_edit"]:
        lines.append(f"edits the pipeline refused: {t['no_edit']}")
    return "\n".join(lines)


def notebook_table(pipe=None, *, rerun: bool = False, journal: str | Path | None = None, progress: bool = False) -> dict:
    """Notebook 05's table: the shipped :data:`TABLE_FILE` (instant), or recomputed with ``rerun=True`` on ``pipe``
    (the same cases and seeds; about 30 minutes on one CPU core; ``journal``: resumable)."""
    return studies.notebook_table(TABLE_FILE, lambda: table(study(pipe, journal=journal, progress=progress)), pipe,
                                  rerun)



def example_figure(pipe, case_index: int | None, seed: int = SEED, **knobs):
    """A case of the study (``case_index``: e.g. the table's ``example_case``) with the study's settings and seeds:
    its input with the mask and the local crop, then every sample in sampling order, titled with its place in each
    ranking and the oracle's verdict. Returns ``(figure, rows)``: each sample's ranks and verdict (what the table
    counts for this case). ``knobs``: edit settings on top of the backend's."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..io import to_pil
    from ..masks import rank_crop
    from .segstudy import spotlight

    if case_index is None:
        raise ValueError("no case where the two picks differ: nothing to show")
    case = make_case(seed, case_index)
    result = edit_case(pipe, case, rule=RULE, scale=SCALE, samples=SAMPLES, seed=seed, dilation=DILATION, **knobs)
    recs = judge_edit(pipe, result, case)
    frames = [None] * SAMPLES
    for j, i in enumerate(result.order):
        frames[int(i)] = result.images[j]
    cols = SAMPLES // 2 + 1
    fig, axes = plt.subplots(2, cols, figsize=(2.1 * cols, 5.7), squeeze=False)
    n = result.images.shape[-1]
    axes[0, 0].imshow(spotlight(case.image, result.edit_mask.bool().numpy(), dim=0.45), interpolation="nearest")
    x0, y0, x1, y1 = rank_crop(result.rank_box, n, n)
    axes[0, 0].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", ls="--", lw=1.2))
    axes[0, 0].set_title("input: mask lit,\nlocal crop dashed", fontsize=8)
    axes[1, 0].axis("off")
    words = "\n".join(textwrap.wrap(f"{case.ref!r} -> {case.target!r}", 24))
    axes[1, 0].text(0, 0.5, f"{words}\n\nL: place in the local\nranking, M: in the\nmasked one (1 = top)",
                    fontsize=8, va="center")
    for s, r in enumerate(recs):
        ax = axes[s // (cols - 1), 1 + s % (cols - 1)]
        ax.imshow(to_pil(frames[s]), interpolation="nearest")
        tops = [mode for mode in ("local", "masked") if r[f"rank_{mode}"] == 0]
        ax.set_title(f"sample {s}: L {r['rank_local'] + 1}, M {r['rank_masked'] + 1}\n"
                     + (f"top-1 {' and '.join(tops)}; " if tops else "") + f"reached {mark(r['success'])}",
                     fontsize=8, color="tab:blue" if tops else "black", fontweight="bold" if tops else "normal")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"case {case.index}: the same {SAMPLES} samples ranked two ways ({RULE} s = {SCALE:g})", fontsize=9)
    fig.tight_layout()
    rows = [{"sample": r["sample"], "rank_local": r["rank_local"], "rank_masked": r["rank_masked"],
             "reached": r["success"]} for r in recs]
    return fig, rows


def main(argv=None) -> int:
    """``python -m romlib.world.rankstudy``: the ranking study on the world backend's weights, resumable; writes the
    table (JSON) and prints it."""
    from ..arguments import parse_list

    def run(pipe, args, out):
        return table(study(pipe, args.cases, args.seed, scale=args.scale, kinds=args.kinds,
                           journal=out / "records.jsonl", progress=not args.quiet))

    options = (scale_option(SCALE), ("--kinds", {"default": ",".join(KINDS), "help": f"case kinds (default "
                                                 f"{','.join(KINDS)})"},
                                     lambda v: _check_kinds(parse_list("--kinds", v, str), "--kinds")))
    return command(argv, prog="python -m romlib.world.rankstudy", doc=main.__doc__, n_cases=N_CASES, seed=SEED,
                   out="world_ranking", run=run, format_table=format_table, options=options)


if __name__ == "__main__":
    raise SystemExit(main())

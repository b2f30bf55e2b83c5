"""Notebook 04 on the world: CF against CCF and each of CCF's two changes, swept over the scale and compared at
equal guidance strength (paper Fig. 4 and 6).

The cases are targets that leave something free: the first :data:`N_CASES` cases of kinds ``colour`` ('a blue one':
the shape and the material are free), ``shape`` ('a cube': the colour and the material) and ``material`` ('a
striped one': the colour and the shape) of tuning seed 0. Every edit is :func:`romlib.world.bench.edit_case` (the
pipeline's own path, the case's true mask dilated by 3, the same seeds under every rule and scale, ``--push``:
each sample's guidance push ``|ε̂ − ε_base|``), judged sample by sample by the oracle. Per rule and scale
:func:`table` gives:

* **reached**: the oracle reads what the target names (``success``; per kind too);
* **kept**: each attribute the target leaves free — colour, material, shape — read as the object's own value
  (an object not drawn at all keeps nothing; an unreadable attribute is an abstention, counted apart);
* the continuous free attributes: **angle error** (°, non-spheres), **size error** |fitted / original − 1|
  and **foot shift** (px);
* **push**: the mean over steps and hole pixels of |ε̂ − ε_base|, what the scale multiplies.

Then each rule's **best scale** (the highest target success; ties: the smaller s) and its **matched scale** (the
push nearest CCF's at CCF's best scale), and paired comparisons against CF over the same (case, sample) pairs at
both — the design of docs/world_preregistration.md (P2) on tuning cases.

:func:`study` computes the records (``len(RULES) × len(SCALES) × N_CASES`` edits; a journal makes it resumable),
:data:`TABLE_FILE` keeps the shipped table (:func:`notebook_table`), :func:`example_figure` draws the table's example
and :func:`table_figure` the sweep.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from . import studies
from ..guidance.cfg import RULES as GUIDANCE_RULES
from .bench import _mean_ci, edit_case, judge_edit, paired, run_bench
from .cases import WorldCase, make_case, make_cases
from .language import parse_text
from .oracle import MIN_AREA
from .studies import calls, check_journal, command, mark, num, pct

__all__ = ["RULES", "SCALES", "KINDS", "SAMPLES", "N_CASES", "SEED", "DILATION", "FREE", "EXAMPLES", "EXAMPLE_SCALE", "TABLE_FILE", "cases", "example_case",
           "study", "annotate", "table", "format_table", "notebook_table", "example_figure", "rows_figure", "table_figure"]

#: CF, CCF's two changes one at a time, CCF (the paper's Fig. 6 order)
RULES = ("cf", "ccf-direction", "cf-original", "ccf")
#: the scale sweep (the pre-registration's)
SCALES = (1.0, 2.0, 3.0, 5.0, 8.0)
#: target kinds that leave attributes free
KINDS = ("colour", "shape", "material")
#: samples per edit
SAMPLES = 4
#: the first N_CASES cases of make_cases(seed=SEED, kinds=KINDS): 12 per kind of tuning seed 0
N_CASES, SEED = 36, 0
#: the mask: the case's true object mask dilated by this k
DILATION = 3
#: the discrete attributes a target can leave free
FREE = ("colour", "material", "shape")
#: the table's two examples (shape targets, so the colour is free): the referring expression silent on the colour, and
#: naming it (CCF's base branch c_ref then holds the colour, and the direction c_target − c_ref points away from it)
EXAMPLES = {"ref_silent": False, "ref_names": True}
#: the examples' scale, the same for every rule: the world's default (the table's equal-scale comparison)
EXAMPLE_SCALE = 3.0
#: the shipped table of notebook 04 (:func:`notebook_table`)
TABLE_FILE = Path(__file__).resolve().parent / "weights" / "guidance_table.json"


def cases(n: int = N_CASES, seed: int = SEED) -> list[WorldCase]:
    """The study's cases: the first ``n`` of kinds :data:`KINDS` for ``seed``."""
    return make_cases(n, seed, kinds=KINDS)


def study(pipe, n: int = N_CASES, seed: int = SEED, *, rules=RULES, scales=SCALES, journal: str | Path | None = None,
          progress: bool = False, **knobs) -> list[dict]:
    """The records (:func:`romlib.world.bench.run_bench`, with the push) of every case under every rule and scale.
    ``journal``: a JSONL file the records are appended to as they come (a killed study resumes; a journal of another
    seed is refused). ``knobs``: edit settings on top of the backend's (``steps="2"`` in the tests)."""
    if journal is not None:
        check_journal(journal, seed)
    return run_bench(pipe, cases(n, seed), rules=rules, scales=scales, samples=SAMPLES, seed=seed, dilation=DILATION,
                     mask="true", push=True, progress=progress, journal=journal, **knobs)


@lru_cache(maxsize=512)
def _case(seed: int, index: int) -> WorldCase:
    return make_case(seed, index)


def _kept(r: dict, attr: str, original) -> bool | None:
    """Whether the sample shows the object's own ``attr``: False when nothing was drawn, None when unreadable."""
    if r["area"] < MIN_AREA:
        return False
    seen = r.get(attr)
    return None if seen is None else seen == getattr(original, attr)


def annotate(records: list[dict]) -> list[dict]:
    """The records with ``kept_<attr>`` for each attribute of :data:`FREE` the target leaves free (True/False/None;
    absent when the target names it), ``ref_names_<attr>`` (whether the referring expression names that attribute of
    the object: CCF's base branch then holds it, and its direction c_target − c_ref points away from it) and
    ``size_err`` = |size_ratio − 1| (new dicts; refused edits dropped)."""
    out = []
    for r in records:
        if r.get("sample") is None:
            continue
        case = _case(r["seed"], r["case"])
        o = case.scene.objects[case.i]
        named = parse_text(r["target"]).named if r["target"] else {}
        in_ref = parse_text(case.ref).named
        extra = {f"kept_{a}": _kept(r, a, o) for a in FREE if a not in named}
        extra.update({f"ref_names_{a}": a in in_ref for a in FREE if a not in named})
        extra["size_err"] = None if r.get("size_ratio") is None else abs(r["size_ratio"] - 1)
        if "kept_colour" in extra:  # an unchanged object keeps its colour too: the edit must also reach its target
            both = (r["success"], extra["kept_colour"])
            extra["reached_kept_colour"] = None if None in both else bool(all(both))
        out.append({**r, **extra})
    return out


def _verdict(r: dict) -> dict:
    """A sample's verdicts in short (what the table keeps of its example and :func:`example_figure` returns)."""
    return {"sample": r["sample"], "reached": r["success"], "colour": r["colour"], "shape": r["shape"],
            "material": r["material"], **{k: v for k, v in r.items() if k.startswith("kept_")}}


def _row(recs: list[dict]) -> dict:
    row = {"samples": len(recs), "cases": len({r["case"] for r in recs}),
           "reached": calls(r["success"] for r in recs),
           "reached_by_kind": {k: calls(r["success"] for r in recs if r["kind"] == k) for k in KINDS},
           "push": _mean_ci(r.get("push") for r in recs)}
    row["reached_kept_colour"] = calls(r["reached_kept_colour"] for r in recs if "reached_kept_colour" in r)
    for a in FREE:
        row[f"kept_{a}"] = calls(r[f"kept_{a}"] for r in recs if f"kept_{a}" in r)
        row[f"kept_{a}_split"] = {name: calls(r[f"kept_{a}"] for r in recs if f"kept_{a}" in r and r[f"ref_names_{a}"] == v)
                                  for name, v in (("ref_names", True), ("ref_silent", False))}
    for k in ("angle_err", "size_err", "shift", "psnr_bg"):
        row[k] = _mean_ci(r.get(k) for r in recs)
    return row


def _best(rows: list[dict], rule: str) -> float:
    """The rule's scale of the highest target success (ties: the smaller scale)."""
    mine = [r for r in rows if r["rule"] == rule and r["reached"]["n"]]
    return min(mine, key=lambda r: (-r["reached"]["pct"], r["scale"]))["scale"]


def _matched(rows: list[dict], reference: tuple[str, float]) -> dict:
    push = {(r["rule"], r["scale"]): r["push"]["mean"] for r in rows if r["push"]["mean"] is not None}
    target = push[reference]
    return {rule: min((s for (q, s) in push if q == rule), key=lambda s: (abs(push[(rule, s)] - target), s))
            for rule in dict.fromkeys(q for q, _ in push)}  # in the rows' order


def table(records: list[dict], rules=RULES, example_scale: float = None) -> dict:
    """The summary notebook 04 prints: one row per rule and scale (rates with Wilson 95 % intervals, abstentions
    apart; means with normal 95 % intervals), each rule's best and matched scale, and paired differences against CF
    (the same case and sample) at both."""
    recs = annotate(records)
    scales = sorted({r["scale"] for r in recs})
    rules = [g for g in rules if any(r["rule"] == g for r in recs)]
    rows = [{"rule": g, "scale": s, **_row([r for r in recs if r["rule"] == g and r["scale"] == s])}
            for g in rules for s in scales if any(r["rule"] == g and r["scale"] == s for r in recs)]
    best = {g: _best(rows, g) for g in rules}
    ref = ("ccf", best["ccf"]) if "ccf" in best else (rules[0], best[rules[0]])
    matched = _matched(rows, ref) if all(r["push"]["mean"] is not None for r in rows) else {}
    comparisons, sensitivity = {}, []
    if matched and "cf" in matched and ref[0] != "cf":  # the matched comparison with the reference at each of its scales
        for s in scales:
            cf = _matched(rows, (ref[0], s))["cf"]
            sensitivity.append({"scale": s, "cf_scale": cf, **{
                key: paired(recs, {"rule": ref[0], "scale": s}, {"rule": "cf", "scale": cf}, key)
                for key in ("success", "kept_colour", "reached_kept_colour", "angle_err", "shift")}})
    for name, chosen in (("best", best), ("matched", matched)):
        if "cf" not in chosen:
            continue
        base = {"rule": "cf", "scale": chosen["cf"]}
        comparisons[name] = {g: {key: paired(recs, {"rule": g, "scale": chosen[g]}, base, key)
                                 for key in ("success", "kept_colour", "reached_kept_colour", "kept_material",
                                             "angle_err", "size_err", "shift")}
                             for g in chosen if g != "cf"}
    seed = recs[0]["seed"] if recs else SEED
    example_scale = EXAMPLE_SCALE if example_scale is None else float(example_scale)
    examples = {}
    for name, names in EXAMPLES.items():
        shown = example_case("shape", seed, names).index
        examples[name] = {"case": shown, "samples": {
            g: [_verdict(r) for r in sorted(recs, key=lambda r: r["sample"])
                if r["case"] == shown and r["rule"] == g and r["scale"] == example_scale] for g in rules}}
    return {"seed": seed, "n_cases": len({r["case"] for r in recs}), "example_scale": example_scale,
            "examples": examples,
            "samples": SAMPLES, "dilation": DILATION, "kinds": list(KINDS), "scales": scales, "rules": rules,
            "rows": rows, "best": best, "reference": list(ref), "matched": matched, "paired": comparisons,
            "sensitivity": sensitivity, "no_edit": sum(r.get("sample") is None for r in records)}


def _diff(p: dict, scale: float = 100, fmt: str = "+.0f") -> str:
    if p["diff"] is None or p["low"] is None:
        return "–"
    return f"{p['diff'] * scale:{fmt}} [{p['low'] * scale:{fmt}}, {p['high'] * scale:{fmt}}]"


def _find(t: dict, rule: str, scale: float) -> dict:
    return next(r for r in t["rows"] if r["rule"] == rule and r["scale"] == scale)


def _kn(r: dict) -> str:
    """A rate as hits / calls (abstentions after a plus): compact for the per-kind columns."""
    return f"{r['k']}/{r['n']}" + (f" +{r['abstained']}?" if r.get("abstained") else "")


def format_table(t: dict) -> str:
    """:func:`table` as text: the sweep in two blocks (what is reached, what is kept), one line per rule and scale;
    then the rules at their best scale and at matched strength with the paired differences against CF, and the
    free attributes kept split by what the referring expression names."""
    lines = [f"{t['n_cases']} cases of make_cases(seed={t['seed']}) whose target leaves attributes free "
             f"({', '.join(t['kinds'])}: {t['n_cases'] // len(t['kinds'])} each), true mask k = {t['dilation']}, "
             f"{t['samples']} samples per edit, the same seeds under every rule and scale",
             "",
             "the target       s   push    reached                    by target kind: colour   shape      material"]
    for r in t["rows"]:
        k = r["reached_by_kind"]
        lines.append(f"  {r['rule']:13s} {r['scale']:>2g}  {num(r['push'], '.3f'):>6s}  {pct(r['reached']):25s}  "
                     f"{_kn(k['colour']):>22s}   {_kn(k['shape']):9s}  {_kn(k['material'])}")
    lines += ["", "what it leaves free  s   colour kept               reached & colour kept     material kept             "
                  "shape kept                angle err  size err  shift px"]
    for r in t["rows"]:
        lines.append(f"  {r['rule']:13s} {r['scale']:>5g}   {pct(r['kept_colour']):24s}  "
                     f"{pct(r['reached_kept_colour']):24s}  {pct(r['kept_material']):24s}  "
                     f"{pct(r['kept_shape']):24s}  {num(r['angle_err']) + ('°' if r['angle_err']['mean'] is not None else ''):>8s}  {num(r['size_err'], '.2f'):>8s}  "
                     f"{num(r['shift']):>8s}")
    for name, title in (("best", "each rule at its best scale (highest target success)"),
                        ("matched", f"at matched strength (push nearest {t['reference'][0]} s = {t['reference'][1]:g}'s)")):
        chosen = t["best"] if name == "best" else t["matched"]
        if not chosen or name not in t["paired"]:
            continue
        lines += ["", f"{title}: " + ", ".join(f"{g} s = {chosen[g]:g}" for g in t["rules"] if g in chosen),
                  "  paired against cf (same case and sample): rule − cf, 95 % interval",
                  "  rule           reached (points)   colour kept (points)   reached & kept (points)   "
                  "material kept (points)   angle err (°)       shift (px)"]
        for g, p in t["paired"][name].items():
            lines.append(f"  {g:13s}  {_diff(p['success']):17s}  {_diff(p['kept_colour']):21s}  "
                         f"{_diff(p['reached_kept_colour']):24s}  "
                         f"{_diff(p['kept_material']):23s}  {_diff(p['angle_err'], 1, '+.1f'):18s}  "
                         f"{_diff(p['shift'], 1, '+.2f')}")
    if t.get("sensitivity"):
        ref = t["reference"][0]
        lines += ["", f"how much the matched comparison rests on {ref}'s best scale: {ref} at each scale against cf at "
                      f"the scale of nearest push (paired, {ref} − cf)",
                  f"  {ref} s   cf s   reached (points)   colour kept (points)   reached & kept (points)   "
                  "angle err (°)       shift (px)"]
        for r in t["sensitivity"]:
            lines.append(f"  {r['scale']:>5g}  {r['cf_scale']:>5g}   {_diff(r['success']):17s}  "
                         f"{_diff(r['kept_colour']):21s}  {_diff(r['reached_kept_colour']):24s}  "
                         f"{_diff(r['angle_err'], 1, '+.1f'):18s}  {_diff(r['shift'], 1, '+.2f')}")
    if t["matched"]:
        lines += ["", "a free attribute kept, by whether the referring expression names it (at matched strength)",
                  "  rule           s   colour: ref names it   ref silent             material: ref names it  ref silent"]
        for g in t["rules"]:
            r = _find(t, g, t["matched"][g])
            c, m = r["kept_colour_split"], r["kept_material_split"]
            lines.append(f"  {g:13s} {r['scale']:>2g}   {pct(c['ref_names']):21s}  {pct(c['ref_silent']):21s}  "
                         f"{pct(m['ref_names']):22s}  {pct(m['ref_silent'])}")
    lines += ["", "reached: the oracle reads what the target names (k/n +a?: k of n calls, a abstentions); kept: an "
                  "attribute the target leaves free reads as the object's own (nothing drawn keeps nothing; abst. = "
                  "unreadable, left out); reached & colour kept: both (an unchanged object keeps its colour too)",
              "push: mean |eps_hat - eps_base| over steps and hole pixels (what s multiplies); angle err: non-spheres; "
              "size err: |fitted / original size - 1|; shift: the foot's move; –: no readable sample (or pair) to count"]
    if t["no_edit"]:
        lines.append(f"edits the pipeline refused: {t['no_edit']}")
    return "\n".join(lines)


def notebook_table(pipe=None, *, rerun: bool = False, journal: str | Path | None = None, progress: bool = False) -> dict:
    """Notebook 04's table: the shipped :data:`TABLE_FILE` (instant), or recomputed with ``rerun=True`` on ``pipe``
    (the same cases and seeds; about 2.5 hours on one CPU core; ``journal``: resumable)."""
    return studies.notebook_table(TABLE_FILE, lambda: table(study(pipe, journal=journal, progress=progress)), pipe,
                                  rerun)


# ----------------------------------------------------------------------------- the figures

def example_case(kind: str = "shape", seed: int = SEED, ref_names_colour: bool | None = None) -> WorldCase:
    """The example's rule: the study's first case of ``kind`` (default: a target naming only the shape, so the colour
    and the material are free) whose referring expression names the object's colour (``ref_names_colour=True``), does
    not (False), or either (None)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for c in cases(N_CASES, seed):
        if c.kind == kind and (ref_names_colour is None or ("colour" in parse_text(c.ref).named) == ref_names_colour):
            return c
    raise ValueError(f"no {kind} case of the first {N_CASES} of seed {seed} with ref_names_colour={ref_names_colour}")


def example_figure(pipe, scales: dict | float = 3.0, example: str = "ref_silent", seed: int = SEED, rules=RULES,
                   **knobs):
    """One of the table's :data:`EXAMPLES` (:func:`example_case`) under every rule, each at its scale in ``scales``
    (a number: one scale for all; a dict: e.g. the table's ``"matched"``), with the table's seeds: one row per rule,
    the image the rule's model is shown (the hole blanked for a masked-input rule; the rest dimmed) first, then every
    sample in sampling order, titled with the oracle's verdicts (target reached; each free attribute kept). Returns
    ``(figure, rows)``: per rule its scale and the samples' verdicts (what the table counts for this case).
    ``knobs``: edit settings on top of the backend's."""
    if example not in EXAMPLES:
        raise ValueError(f"example must be one of {sorted(EXAMPLES)}, got {example!r}")
    per = {g: float(scales[g] if isinstance(scales, dict) else scales) for g in rules}
    return rows_figure(example_case("shape", seed, EXAMPLES[example]), [(pipe, g, per[g], g) for g in rules], seed,
                       **knobs)


def rows_figure(case, rows, seed: int = SEED, **knobs):
    """``case`` edited once per row of ``rows`` — ``(pipe, rule, scale, label)`` — with the table's seeds and mask
    (:func:`~romlib.world.bench.edit_case`): per row the image the model is shown, then its samples in sampling order
    titled with the oracle's verdicts. Returns ``(figure, rows)`` (per row: label, rule, scale, seconds, verdicts)."""
    import time

    import matplotlib.pyplot as plt

    from ..io import to_pil
    from .segstudy import spotlight

    free = [a for a in FREE if a not in parse_text(case.target).named]
    fig, axes = plt.subplots(len(rows), SAMPLES + 1, figsize=(2.05 * (SAMPLES + 1), 2.6 * len(rows)), squeeze=False)
    out = []
    for row, (pipe, g, scale, label) in enumerate(rows):
        t0 = time.perf_counter()
        result = edit_case(pipe, case, rule=g, scale=scale, samples=SAMPLES, seed=seed, dilation=DILATION, **knobs)
        seconds = time.perf_counter() - t0
        recs = annotate(judge_edit(pipe, result, case))
        frames = [None] * SAMPLES
        for j, i in enumerate(result.order):
            frames[int(i)] = result.images[j]
        hole = result.edit_mask.bool().numpy()
        seen = case.image.copy()
        masked = GUIDANCE_RULES[g].inpaint_input == "masked"
        if masked:  # what this rule's model is shown: the hole blanked (0 in [-1, 1]: mid-grey)
            seen[hole] = 128
        axes[row, 0].imshow(spotlight(seen, hole, dim=0.45), interpolation="nearest")
        axes[row, 0].set_title(f"{label}, s = {scale:g}\nmodel input: {'masked' if masked else 'original'} image",
                               fontsize=8)
        for s, r in enumerate(recs):
            axes[row, s + 1].imshow(to_pil(frames[s]), interpolation="nearest")
            kept = ", ".join(f"{a} {mark(r[f'kept_{a}'])}" for a in free)
            axes[row, s + 1].set_title(f"sample {s}: reached {mark(r['success'])}\nkept: {kept}", fontsize=7.5)
        out.append({"label": label, "rule": g, "scale": scale, "seconds": round(seconds, 2),
                    "samples": [_verdict(r) for r in recs]})
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    o = case.scene.objects[case.i]
    fig.suptitle(f"{case.ref!r} ({o.colour} {o.material} {o.shape}) -> {case.target!r} (case {case.index}): "
                 f"free, so to be kept: {', '.join(free)}", fontsize=9)
    fig.tight_layout()
    return fig, out


def table_figure(t: dict):
    """The sweep of :func:`table`, per rule against the scale: target reached, the colour kept (targets that leave
    it free) and the push (% with 95 % intervals; the push's mean), the matched strength marked; then the trade:
    colour kept against target reached, one point per scale."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(15.5, 3.4))
    styles = {"cf": "o-", "ccf-direction": "v--", "cf-original": "^--", "ccf": "s-"}
    for g in t["rules"]:
        rows = [r for r in t["rows"] if r["rule"] == g]
        s = [r["scale"] for r in rows]
        for a, key in ((ax[0], "reached"), (ax[1], "kept_colour")):
            pct = [r[key]["pct"] if r[key]["n"] else np.nan for r in rows]
            err = [[r[key]["pct"] - r[key]["low"] if r[key]["n"] else 0 for r in rows],
                   [r[key]["high"] - r[key]["pct"] if r[key]["n"] else 0 for r in rows]]
            a.errorbar(s, pct, yerr=err, fmt=styles.get(g, "o-"), capsize=2, label=g)
        ax[2].plot(s, [r["push"]["mean"] for r in rows], styles.get(g, "o-"), label=g)
        pts = [(r["reached"]["pct"], r["kept_colour"]["pct"], r["scale"]) for r in rows
               if r["reached"]["n"] and r["kept_colour"]["n"]]
        if pts:
            line, = ax[3].plot([p[0] for p in pts], [p[1] for p in pts], styles.get(g, "o-"), label=g)
            for x, y, sc in pts:
                ax[3].annotate(f"{sc:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7,
                               color=line.get_color())
    ref_rule, ref_scale = t["reference"]
    level = _find(t, ref_rule, ref_scale)["push"]["mean"]
    if level is not None:
        ax[2].axhline(level, color="grey", lw=0.8, ls=":")
        ax[2].text(t["scales"][0], level, f" {ref_rule} s = {ref_scale:g}", fontsize=7, va="bottom", color="grey")
    ax[0].set(xlabel="scale s", ylabel="% of samples", ylim=(0, 100), title="target reached")
    ax[1].set(xlabel="scale s", ylabel="% of samples", ylim=(0, 100), title="colour kept (shape / material targets)")
    ax[2].set(xlabel="scale s", ylabel="mean |eps_hat - eps_base|", ylim=(0, None), title="guidance push")
    ax[3].set(xlabel="target reached, % of samples", ylabel="colour kept, %", xlim=(0, 100), ylim=(0, 100),
              title="the trade (numbers: s)")
    for a in ax[:3]:
        a.set_xticks(t["scales"])
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    """``python -m romlib.world.guidestudy``: the guidance study on the world backend's weights, resumable; writes
    the table (JSON) and prints it."""
    from ..arguments import parse_list

    def run(pipe, args, out):
        return table(study(pipe, args.cases, args.seed, scales=args.scales, journal=out / "records.jsonl",
                           progress=not args.quiet))

    scales = ("--scales", {"default": ",".join(f"{s:g}" for s in SCALES), "help": "guidance scales (default the sweep's)"},
              lambda v: parse_list("--scales", v, float))
    return command(argv, prog="python -m romlib.world.guidestudy", doc=main.__doc__, n_cases=N_CASES, seed=SEED,
                   out="world_guidance", run=run, format_table=format_table, options=(scales,))


if __name__ == "__main__":
    raise SystemExit(main())

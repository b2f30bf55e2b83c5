"""The measured tables of notebooks 02–05 (``# NBVAL_CHECK_OUTPUT`` cells): each over a fixed, documented
selection of cases, at equal settings, rates with Wilson 95 % intervals. The heavy ones are shipped in
:data:`TABLES_FILE` (``python -m romlib.shapes.bench [name ...]`` recomputes them);
``notebook_table(name, rerun=True)`` recomputes one in a notebook."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..config import SCORED_RANK_MODES
from ..rank import rank_samples
from ..sampling.diffusion import create_diffusion
from . import load_backend
from .backend import load_backend
from .cases import select_cases, table_cases
from .keeps import measure_keeps
from .measure import _edit_mask, _uint8, rate, sample_cases, wilson  # noqa: F401 (wilson re-exported)
from .oracle import describe_region, judge, object_region, removed, rim_left
from .segmenter import ShapesSegmenter

__all__ = ["NOTEBOOK_TABLES", "TABLES_FILE", "wilson", "table_cases", "notebook_table", "measure_table",
           "format_notebook_table", "write_notebook_tables", "segmenter_table", "format_segmenter_table",
           "dilation_verdicts", "dilation_samples", "ranking_picks"]

log = logging.getLogger(__name__)


#: The small measured tables of notebooks 02–05: each over a fixed, documented selection of cases
#: (``romlib.shapes.demo.select_cases``), at equal settings, numbers rounded so they cannot drift.
#: Heavy ones are shipped in :data:`TABLES_FILE` and recomputed with ``notebook_table(name, rerun=True)``.
NOTEBOOK_TABLES = {
    "dilation": dict(cases=("first", 24), rule="ccf", scale=3.0, samples=2, erode=1, dilations=(1, 3, 5, 7),
                     empty_variant="removal",
                     doc="the first 24 cases of make_cases(seed=0); true mask eroded by 1 px, dilated by k; an empty "
                         "target ('': remove) with the 'removal' model, the case's target with the default one, CCF s = 3"),
    "guidance": dict(cases=("colour", 12, "shape", 12), methods=("inpaint", "cf", "ccf-direction", "cf-original", "ccf"),
                     scale=3.0, samples=2, dilation=3,
                     doc="the first 12 colour-only and 12 shape-only targets of make_cases(seed=0); every rule at s = 3"),
    "ranking": dict(cases=("first", 24), rule="ccf", scale=1.0, samples=8, dilation=3,
                    doc="the first 24 cases of make_cases(seed=0); CCF s = 1 (imperfect samples to choose from), B = 8"),
    "keeps": dict(cases=("first", 400), methods=("cf", "ccf-direction", "cf-original", "ccf"), scale=3.0, samples=1,
                  dilation=3, doc="the first 400 cases of make_cases(seed=0), one sample each, every rule at s = 3 "
                                  "(romlib.shapes.keeps)"),
}
TABLES_FILE = Path(__file__).resolve().parent / "weights" / "notebook_tables.json"


def dilation_verdicts(case, edit_mask: np.ndarray, target_samples, empty_samples) -> dict:
    """The oracle's verdict on each sample of one case of the ``dilation`` table (and of its figure,
    :func:`romlib.shapes.figures.dilation_figure`): ``"target"``: per sample ``{"success", "old back"}``
    (the case's target); ``"empty"``: per sample ``{"removed", "rim", "old back"}`` (the empty target;
    ``rim`` = :func:`~romlib.shapes.oracle.rim_left`)."""
    region = object_region(edit_mask, case.original.mask, case.others)
    o = case.original
    out = {"target": [], "empty": []}
    for x in target_samples:
        seen = describe_region(_uint8(x), region)
        out["target"].append({"success": judge(seen, case.target, o)["success"],
                              "old back": seen.colour == o.colour and seen.shape == o.shape})
    for x in empty_samples:
        a = _uint8(x)
        seen = describe_region(a, region)
        rim = rim_left(a, o, case.scene.background)
        out["empty"].append({"removed": removed(seen, rim), "rim": round(rim, 3),
                             "old back": seen.colour == o.colour and seen.shape == o.shape})
    return out


def dilation_samples(b, diffusion, cfg, cases, k: int, removal_model=None):
    """The ``dilation`` table's masks and samples at kernel ``k``: ``(masks, target samples, empty-target samples)``."""
    masks = [_edit_mask(c, cfg["erode"], k) for c in cases]
    xs = sample_cases(b.base_model, b.tokenizer, diffusion, cases, masks, rule=cfg["rule"], scale=cfg["scale"],
                      samples=cfg["samples"])
    empty = sample_cases(removal_model or b.base_model, b.tokenizer, diffusion, cases, masks, rule=cfg["rule"],
                         scale=cfg["scale"], samples=cfg["samples"], plain=True)
    return masks, xs, empty


def _measure_dilation(b, diffusion, cfg) -> list[dict]:
    cases = table_cases(cfg["cases"])
    device = next(b.base_model.parameters()).device
    rm = load_backend(device, variant=cfg["empty_variant"]).base_model  # the model that learned removal
    rows = []
    for k in cfg["dilations"]:
        masks, xs, empty = dilation_samples(b, diffusion, cfg, cases, k, rm)
        left = [int((c.original.mask & ~m).sum()) for c, m in zip(cases, masks)]
        over = [int((m & ~c.original.mask).sum()) for c, m in zip(cases, masks)]
        v = [dilation_verdicts(c, m, ss, es) for c, m, ss, es in zip(cases, masks, xs, empty)]
        col = lambda kind, key: [s[key] for x in v for s in x[kind]]  # noqa: E731
        rows.append({"k": k, "leftover px": round(float(np.mean(left)), 1), "over px": round(float(np.mean(over)), 1),
                     "removed ('')": rate(col("empty", "removed")), "old back ('')": rate(col("empty", "old back")),
                     "target reached": rate(col("target", "success")), "old back (target)": rate(col("target", "old back"))})
    return rows


def _measure_guidance(b, diffusion, cfg) -> list[dict]:
    cases = table_cases(cfg["cases"])
    masks = [_edit_mask(c, 0, cfg["dilation"]) for c in cases]
    rows = []
    for method in cfg["methods"]:
        rule = "cf" if method == "inpaint" else method
        xs = sample_cases(b.base_model, b.tokenizer, diffusion, cases, masks, rule=rule, scale=cfg["scale"],
                          samples=cfg["samples"], plain=method == "inpaint")
        succ, pres = [], []
        for c, m, ss in zip(cases, masks, xs):
            region = object_region(m, c.original.mask, c.others)
            for x in ss:
                j = judge(describe_region(_uint8(x), region), c.target, c.original)
                succ.append(j["success"])
                pres.append(bool(j["preserved"]))
        rows.append({"rule": method, "scale": 1.0 if method == "inpaint" else cfg["scale"], "success": rate(succ),
                     "preservation": rate(pres)})
    return rows


def ranking_picks(ranker, case, edit_mask: np.ndarray, samples) -> dict:
    """One case of the ``ranking`` table: the oracle's verdict per sample (``"ok"``, sampling order) and
    the sample each ranking puts first (``"local"``, ``"masked"``: indices; the first sample is the unranked pick)."""
    region = object_region(edit_mask, case.original.mask, case.others)
    ok = [judge(describe_region(_uint8(x), region), case.target, case.original)["success"] for x in samples]
    box = tuple(float(v) for v in case.original.box)
    em = torch.from_numpy(edit_mask)[None, None].float()
    top = {mode: int(rank_samples(ranker, samples, case.target, mode, box=box, edit_mask=em).order[0])
           for mode in SCORED_RANK_MODES}
    return {"case": case.index, "ok": [bool(x) for x in ok], **top}


def _measure_ranking(b, diffusion, cfg) -> list[dict]:
    cases = table_cases(cfg["cases"])
    masks = [_edit_mask(c, 0, cfg["dilation"]) for c in cases]
    xs = sample_cases(b.base_model, b.tokenizer, diffusion, cases, masks, rule=cfg["rule"], scale=cfg["scale"],
                      samples=cfg["samples"])
    picks = [ranking_picks(b.ranker, c, m, ss) for c, m, ss in zip(cases, masks, xs)]
    top = {"local": [p["ok"][p["local"]] for p in picks], "masked": [p["ok"][p["masked"]] for p in picks],
           "first sample (no ranking)": [p["ok"][0] for p in picks]}
    rows = [{"pick": k, "top-1 success": rate(v)} for k, v in top.items()]
    rows.append({"pick": "any sample (mean)", "top-1 success": rate([x for p in picks for x in p["ok"]])})
    return rows, picks


def segmenter_table(n: int = 24, seed: int = 0) -> dict:
    """Notebook 02's table (instant, computed live): the rule-based segmenter on the first ``n``
    cases with distractors (:func:`romlib.shapes.demo.select_cases`): exact masks, IoU, and the
    margin between the chosen query's score and the best other one."""
    seg = ShapesSegmenter()
    exact, ious, margins = [], [], []
    for c in select_cases("distractors", n, seed):
        r = seg.segment(c.scene.image, c.ref, best_anyway=True)
        m, t = r.mask.numpy(), c.original.mask
        exact.append(bool((m == t).all()))
        ious.append(float((m & t).sum() / (m | t).sum()))
        sc = sorted(r.scores.tolist(), reverse=True)
        margins.append(sc[0] - sc[1] if len(sc) > 1 else float("nan"))
    return {"n": n, "exact": rate(exact), "mean IoU": round(float(np.mean(ious)), 3),
            "margin min": round(float(np.nanmin(margins)), 3), "margin mean": round(float(np.nanmean(margins)), 3),
            "doc": f"the first {n} cases of make_cases(seed={seed}) with three objects, one sharing the referred "
                   "object's colour or shape"}


def format_segmenter_table(t: dict) -> str:
    """:func:`segmenter_table` as text."""
    e = t["exact"]
    return (f"cases: {t['doc']}\nexact mask of the referred object: {e['pct']:.1f} % [{e['low']:.0f}, {e['high']:.0f}] "
            f"(n={e['n']}); mean IoU {t['mean IoU']:.3f}\nscore margin chosen - best distractor: min {t['margin min']:.3f}, "
            f"mean {t['margin mean']:.3f}")


def measure_table(name: str, backend=None) -> dict:
    """Compute one notebook table (see :data:`NOTEBOOK_TABLES`); about 1–2 minutes on 2 cores."""
    if name not in NOTEBOOK_TABLES:
        raise ValueError(f"unknown notebook table {name!r}; expected one of {sorted(NOTEBOOK_TABLES)}")
    cfg = NOTEBOOK_TABLES[name]
    b = backend or load_backend("cpu")
    schedule, n_steps = b.base_schedule
    diffusion = create_diffusion(n_steps, schedule, str(b.base_steps))
    t0 = time.perf_counter()

    measure = {"dilation": _measure_dilation, "guidance": _measure_guidance, "ranking": _measure_ranking, "keeps": measure_keeps}
    rows = measure[name](b, diffusion, cfg)
    extra = {}
    if isinstance(rows, tuple):  # (rows, per-case data behind them: the ranking table's picks)
        rows, extra = rows[0], {"cases": rows[1]}
    settings = {k: v for k, v in cfg.items()}
    settings.update(steps=str(b.base_steps), seed=0, seconds=round(time.perf_counter() - t0, 1))
    return {"name": name, "rows": rows, "settings": settings, **extra}


def notebook_table(name: str, *, rerun: bool = False) -> dict:
    """A notebook's measured table: from the shipped :data:`TABLES_FILE` (instant), or recomputed
    with ``rerun=True`` (the same selection and settings; compare it with the shipped one)."""
    if rerun:
        return measure_table(name)
    data = json.loads(TABLES_FILE.read_text())
    if name not in data:
        raise ValueError(f"{TABLES_FILE.name} has no table {name!r} (it has {sorted(data)}); "
                         "rerun it: notebook_table(name, rerun=True)")
    return data[name]


def format_notebook_table(table: dict) -> str:
    """A notebook table as aligned text: rates as 'pct % [low, high]' (Wilson 95 %, n samples)."""
    rows = table["rows"]
    cols = list(rows[0])

    def cell(v):
        if isinstance(v, dict):
            return f"{v['pct']:5.1f} % [{v['low']:.0f}, {v['high']:.0f}]"
        return f"{v:g}" if isinstance(v, float) else str(v)

    ns = {v["n"] for r in rows for v in r.values() if isinstance(v, dict)}
    body = [[cell(r[c]) + (f" n={r[c]['n']}" if isinstance(r[c], dict) and len(ns) > 1 and "n" not in cols else "")
             for c in cols] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(cols, *body)]
    fmt = lambda r: "  ".join(x.rjust(w) for x, w in zip(r, widths))  # noqa: E731
    s = table["settings"]
    n = f"n = {ns.pop()} samples per rate" if len(ns) == 1 and "n" not in cols else "n = samples"
    return "\n".join([fmt(cols)] + [fmt(r) for r in body] +
                     [f"rates: % [Wilson 95 % interval], {n}", f"cases: {s['doc']}; {s['steps']} steps"])


def write_notebook_tables(names=tuple(NOTEBOOK_TABLES), path: str | Path | None = None) -> dict:
    """Recompute the tables and write them to ``path`` (default: the shipped :data:`TABLES_FILE`;
    ``python -m romlib.shapes.bench``)."""
    path = Path(path) if path is not None else TABLES_FILE
    data = json.loads(path.read_text()) if path.is_file() else {}
    for name in names:
        data[name] = measure_table(name)
        log.info("%s: %s s", name, data[name]["settings"]["seconds"])
        path.write_text(json.dumps(data, indent=1, default=list) + "\n")
    return data

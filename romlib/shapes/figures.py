"""The ablation notebooks' figures on ShapesWorld, each chosen by the same rule as its table and
labelled with the table's metric for every sample shown (notebooks 03, 04, 05).

* :func:`dilation_figure` (03, Fig. 8): one case of the ``dilation`` table, its masks and samples for
  every k (the table's seeds, so the very samples the table counts), each titled with the oracle's verdict;
* :func:`guidance_figure` (04, Fig. 4/6): one case of the ``guidance`` table under every rule, each
  sample titled "target ✓/✗ · keeps <free attribute> ✓/✗";
* :func:`ranking_paired` and :func:`ranking_figure` (05, Fig. 7): the paired analysis of the two rankings
  over the ``ranking`` table's cases, and the first of its cases where they pick visibly different samples;
* :func:`keeps_figure` (04): the free attribute kept per rule, the default model beside run E (a model
  trained to read the source under the hole; not shipped, its measured counts are :data:`RUN_E_FREE_KEPT`).

Every function returns ``(figure, numbers)``.
"""
from __future__ import annotations

import numpy as np

from ..config import SCORED_RANK_MODES
from ..pipeline import get_pipeline
from ..plots import _imshow, overlay_mask
from ..rank import rank_samples, ranking_inputs
from .measure import _edit_mask, _uint8, sample_cases, wilson
from .oracle import describe_region, judge, object_region
from .scenes import parse_text
from .tables import dilation_samples, dilation_verdicts, notebook_table, NOTEBOOK_TABLES, ranking_picks, table_cases

__all__ = ["dilation_figure", "guidance_figure", "ranking_paired", "ranking_example_case", "ranking_figure",
           "keeps_figure", "RUN_E_FREE_KEPT", "verdict"]

#: Run E (``romlib shapes-train --what inpaint --p-source 0.9 --p-partial 0.4``, not shipped; docs/shapesworld.md):
#: the free attribute kept, counts of the 201 "leaves free" cases of the ``keeps`` table (same cases, s = 3, one sample)
RUN_E_FREE_KEPT = {"cf": (71, 201), "ccf-direction": (41, 201), "cf-original": (134, 201), "ccf": (103, 201)}


def verdict(ok: bool | None, what: str) -> str:
    """``"removed ✓"`` / ``"removed ✗"`` (``None``: ``"what –"``)."""
    return f"{what} –" if ok is None else f"{what} {'✓' if ok else '✗'}"


def _backend(variant: str | None = None):
    """The notebooks' cached ShapesWorld pipeline's backend (:func:`romlib.pipeline.get_pipeline`) and its diffusion."""
    pipe = get_pipeline("shapes", **({"variant": variant} if variant else {}))
    return pipe.backend, pipe.diffusion("base")


def _off(ax):
    ax.set_xticks([]), ax.set_yticks([])


def dilation_figure(case: int = 0, ks=None):
    """Notebook 03 (Fig. 8): case ``case`` of the ``dilation`` table (its first case by default; the
    table's mask — true mask eroded 1 px, dilated by k — settings and seeds, so these are samples the table
    counts). Columns: k; rows: the mask (outline; leftover / over-covered px), each empty-target sample
    (``removal`` model) titled "removed ✓/✗" with the old outline left (``rim``), each target sample
    titled "target ✓/✗". Returns ``(figure, rows)``: per k the pixels and every verdict."""
    import matplotlib.pyplot as plt


    cfg = NOTEBOOK_TABLES["dilation"]
    ks = tuple(ks or cfg["dilations"])
    cases = table_cases(cfg["cases"])
    if not 0 <= case < len(cases):
        raise ValueError(f"case={case} is outside the dilation table's {len(cases)} cases (0..{len(cases) - 1})")
    c = cases[case]
    b, diffusion = _backend()
    rm, _ = _backend(cfg["empty_variant"])
    n = cfg["samples"]
    fig, axes = plt.subplots(1 + 2 * n, len(ks), figsize=(2.4 * len(ks), 2.5 * (1 + 2 * n)), squeeze=False)
    rows = []
    for j, k in enumerate(ks):
        masks, xs, empty = dilation_samples(b, diffusion, cfg, [c], k, rm.base_model)
        m = masks[0]
        v = dilation_verdicts(c, m, xs[0], empty[0])
        left, over = int((c.original.mask & ~m).sum()), int((m & ~c.original.mask).sum())
        rows.append({"k": k, "leftover px": left, "over px": over, **v})
        _imshow(axes[0, j], overlay_mask(c.scene.image, m))
        axes[0, j].set_title(f"k = {k}: mask\nleftover {left} px, over {over} px", fontsize=8)
        for i, (x, e) in enumerate(zip(empty[0], v["empty"])):
            _imshow(axes[1 + i, j], x)
            axes[1 + i, j].set_title(f"'' #{i + 1}: {verdict(e['removed'], 'removed')}\nold outline left {e['rim']:.0%}",
                                     fontsize=8, color="k" if e["removed"] else "tab:red")
        for i, (x, t) in enumerate(zip(xs[0], v["target"])):
            _imshow(axes[1 + n + i, j], x)
            axes[1 + n + i, j].set_title(f"{c.target!r} #{i + 1}: {verdict(t['success'], 'target')}"
                                         + ("\nold object back" if t["old back"] else ""), fontsize=8,
                                         color="k" if t["success"] else "tab:red")
    for ax in axes.flat:
        _off(ax)
    fig.suptitle(f"dilation table, case {case}: {c.ref!r} → '' (removal model) and → {c.target!r} (CCF s = {cfg['scale']:g}); "
                 f"mask eroded {cfg['erode']} px, dilated by k", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig, rows


def guidance_figure(case: int = 0):
    """Notebook 04 (Fig. 4/6): case ``case`` of the ``guidance`` table (the first colour-only target by
    default, the notebook's example) under every rule of the table at its scale and seeds; each sample
    titled with the table's two metrics: "target ✓/✗" and "keeps <the attribute the target leaves free> ✓/✗".
    Returns ``(figure, rows)``: per rule the verdicts."""
    import matplotlib.pyplot as plt


    cfg = NOTEBOOK_TABLES["guidance"]
    cases = table_cases(cfg["cases"])
    if not 0 <= case < len(cases):
        raise ValueError(f"case={case} is outside the guidance table's {len(cases)} cases (0..{len(cases) - 1})")
    c = cases[case]
    free = [a for a in ("colour", "shape") if a not in parse_text(c.target).named]
    b, diffusion = _backend()
    m = _edit_mask(c, 0, cfg["dilation"])
    region = object_region(m, c.original.mask, c.others)
    n = cfg["samples"]
    fig, axes = plt.subplots(len(cfg["methods"]), n + 1, figsize=(2.4 * (n + 1), 2.4 * len(cfg["methods"])), squeeze=False)
    rows = []
    for ax, method in zip(axes, cfg["methods"]):
        rule = "cf" if method == "inpaint" else method
        xs = sample_cases(b.base_model, b.tokenizer, diffusion, [c], [m], rule=rule, scale=cfg["scale"], samples=n,
                          plain=method == "inpaint")[0]
        _imshow(ax[0], overlay_mask(c.scene.image, m))
        ax[0].set_ylabel(method if method == "inpaint" else f"{method}\ns = {cfg['scale']:g}", fontsize=9)
        got = []
        for i, x in enumerate(xs):
            j = judge(describe_region(_uint8(x), region), c.target, c.original)
            got.append({"success": j["success"], "preserved": j["preserved"], "colour": j["colour"], "shape": j["shape"]})
            _imshow(ax[i + 1], x)
            keeps = verdict(j["preserved"], f"keeps {' and '.join(free)}") if free else ""
            ax[i + 1].set_title(f"#{i + 1}: {verdict(j['success'], 'target')}\n{keeps}", fontsize=8,
                                color="k" if j["success"] and j["preserved"] is not False else "tab:red")
        rows.append({"rule": method, "samples": got})
    for a in axes.flat:
        _off(a)
    axes[0, 0].set_title("input + mask", fontsize=8)
    fig.suptitle(f"guidance table, case {case}: {c.ref!r} → {c.target!r} (free: {', '.join(free) or 'nothing'})", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig, rows


def ranking_paired(table: dict | None = None) -> dict:
    """Notebook 05 (Fig. 7), paired over the ``ranking`` table's cases (both rankings order the same B
    samples): in how many cases the two top-1 picks differ, and when they differ which one the oracle
    prefers (its pick is right and the other's wrong), with Wilson 95 % intervals (in %)."""
    table = table or notebook_table("ranking")
    picks = table.get("cases")
    if not picks:
        raise ValueError("this ranking table has no per-case picks ('cases'); recompute it: "
                         "python -m romlib.shapes.bench ranking")
    differ = [p for p in picks if p["local"] != p["masked"]]
    local_better = sum(p["ok"][p["local"]] and not p["ok"][p["masked"]] for p in differ)
    masked_better = sum(p["ok"][p["masked"]] and not p["ok"][p["local"]] for p in differ)
    both_ok = sum(p["ok"][p["local"]] and p["ok"][p["masked"]] for p in differ)
    both_wrong = len(differ) - local_better - masked_better - both_ok
    discordant = local_better + masked_better
    pct = lambda k, n: (round(100 * k / n, 1) if n else float("nan"), *(round(100 * x, 1) for x in wilson(k, n)))  # noqa: E731
    return {"cases": len(picks), "top-1 differ": len(differ), "differ %": pct(len(differ), len(picks)),
            "local right, masked wrong": local_better, "masked right, local wrong": masked_better,
            "both right": both_ok, "both wrong": both_wrong,
            "local preferred among discordant %": pct(local_better, discordant), "discordant": discordant}


def ranking_example_case(table: dict | None = None) -> int:
    """The position (in the ``ranking`` table's cases) of the first case where local and masked ranking
    put different samples first *and* the oracle tells them apart (one right, one wrong); else the first
    where the picks differ; else 0."""
    picks = (table or notebook_table("ranking")).get("cases") or []
    for rule in (lambda p: p["local"] != p["masked"] and p["ok"][p["local"]] != p["ok"][p["masked"]],
                 lambda p: p["local"] != p["masked"]):
        for i, p in enumerate(picks):
            if rule(p):
                return i
    return 0


def ranking_figure(case: int | None = None):
    """Notebook 05 (Fig. 7): one case of the ``ranking`` table (default :func:`ranking_example_case`), its
    B samples in sampling order, each titled with its rank under local and masked ranking and the oracle's
    "target ✓/✗"; the local top-1 framed cyan, the masked top-1 magenta; below, what CLIP sees of the two
    picks. Returns ``(figure, numbers)`` (the ranks, verdicts and :func:`ranking_paired`)."""
    import matplotlib.pyplot as plt
    import torch


    cfg = NOTEBOOK_TABLES["ranking"]
    table = notebook_table("ranking")
    case = ranking_example_case(table) if case is None else case
    cases = table_cases(cfg["cases"])
    if not 0 <= case < len(cases):
        raise ValueError(f"case={case} is outside the ranking table's {len(cases)} cases (0..{len(cases) - 1})")
    c = cases[case]
    b, diffusion = _backend()
    m = _edit_mask(c, 0, cfg["dilation"])
    xs = sample_cases(b.base_model, b.tokenizer, diffusion, [c], [m], rule=cfg["rule"], scale=cfg["scale"],
                      samples=cfg["samples"])[0]

    p = ranking_picks(b.ranker, c, m, xs)
    box = tuple(float(v) for v in c.original.box)
    em = torch.from_numpy(m)[None, None].float()
    orders = {mode: rank_samples(b.ranker, xs, c.target, mode, box=box, edit_mask=em) for mode in SCORED_RANK_MODES}
    rank_of = {mode: {int(i): r + 1 for r, i in enumerate(o.order)} for mode, o in orders.items()}
    B = len(xs)
    fig = plt.figure(figsize=(2.1 * B, 6.4))
    gs = fig.add_gridspec(2, B, height_ratios=[1, 1.15])
    for i in range(B):
        ax = fig.add_subplot(gs[0, i])
        _imshow(ax, xs[i])
        ax.set_title(f"sample {i}: local #{rank_of['local'][i]}, masked #{rank_of['masked'][i]}\n{verdict(p['ok'][i], 'target')}",
                     fontsize=7, color="k" if p["ok"][i] else "tab:red")
        for mode, colour in (("local", "cyan"), ("masked", "magenta")):
            if p[mode] == i:
                for s in ax.spines.values():
                    s.set_edgecolor(colour), s.set_linewidth(4)
        _off(ax)
    inputs = [(f"local top-1 (sample {p['local']}): CLIP sees the box ×1.3",
               ranking_inputs(xs[p["local"]:p["local"] + 1], "local", box=box)[0]),
              (f"masked top-1 (sample {p['masked']}): CLIP sees the masked frame",
               ranking_inputs(xs[p["masked"]:p["masked"] + 1], "masked", edit_mask=em)[0])]
    half = B // 2
    for j, (title, img) in enumerate(inputs):
        ax = fig.add_subplot(gs[1, j * half:(j + 1) * half])
        _imshow(ax, img * 2 - 1)
        ax.set_title(title, fontsize=8, pad=8)
        _off(ax)
    paired = ranking_paired(table)
    fig.suptitle(f"ranking table, case {case}: {c.ref!r} → {c.target!r}, CCF s = {cfg['scale']:g}, B = {B}; "
                 "frame: cyan = local top-1, magenta = masked top-1\n"
                 f"over the table's {paired['cases']} cases: top-1 differs in {paired['top-1 differ']}; when the oracle "
                 f"separates them, local wins {paired['local right, masked wrong']}, masked {paired['masked right, local wrong']}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9), h_pad=2.5)
    numbers = {"case": case, "target": c.target, "ok": p["ok"], "local top-1": p["local"], "masked top-1": p["masked"],
               "local order": [int(i) for i in orders["local"].order], "masked order": [int(i) for i in orders["masked"].order],
               "paired": paired}
    return fig, numbers


def keeps_figure():
    """Notebook 04: the attribute a target leaves free ("the red circle" → "a square": the colour), kept by
    each rule at s = 3 on the ``keeps`` table's 201 "leaves free" cases — the shipped default model (run B,
    from the shipped table) beside run E (a model trained to read the source under the hole, 90 % of
    examples; not shipped: :data:`RUN_E_FREE_KEPT`). Bars with Wilson 95 % intervals. With the default model
    CCF keeps it *less* often than CF; with run E *more* (the paper's claim, under that condition).
    Returns ``(figure, numbers)``: per model and rule (k, n, %, low, high)."""
    import matplotlib.pyplot as plt

    rows = [r for r in notebook_table("keeps")["rows"] if r["targets"] == "leaves free"]
    default = {r["rule"]: (r["attribute kept"]["k"], r["attribute kept"]["n"]) for r in rows}
    rules = [r for r in ("cf", "ccf-direction", "cf-original", "ccf") if r in default]
    models = {"default model (run B, shipped)": default,
              "run E: trained to read the source under the hole (not shipped)": RUN_E_FREE_KEPT}
    numbers = {}
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.38
    for j, (name, counts) in enumerate(models.items()):
        vals = []
        for r in rules:
            k, n = counts[r]
            lo, hi = wilson(k, n)
            vals.append((k, n, round(100 * k / n, 1), round(100 * lo, 1), round(100 * hi, 1)))
        numbers[name] = dict(zip(rules, vals))
        x = np.arange(len(rules)) + (j - 0.5) * width
        pct = np.array([v[2] for v in vals])
        err = np.array([[v[2] - v[3] for v in vals], [v[4] - v[2] for v in vals]])
        bars = ax.bar(x, pct, width, yerr=err, capsize=3, label=name, color=("tab:grey", "tab:green")[j])
        for bar, v in zip(bars, vals):
            ax.annotate(f"{v[2]:.1f}", (bar.get_x() + bar.get_width() / 2, v[4]), textcoords="offset points",
                        xytext=(0, 2), ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(rules)), rules)
    ax.set_ylabel("free attribute kept, % (Wilson 95 %)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left")
    n = default[rules[0]][1]
    ax.set_title(f"Does CCF keep what the target leaves free? {n} 'leaves free' cases, s = 3, one sample each", fontsize=9)
    fig.tight_layout()
    return fig, numbers

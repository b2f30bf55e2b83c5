"""``romlib shapes-bench``: CF vs CCF (and CCF's two changes) measured by the exact oracle.

A fixed set of edit cases (:func:`make_cases`, deterministic in ``seed``): a scene, one object,
an unambiguous referring expression, and a target text that changes at least one attribute —
"a blue square" (both named, half the cases), "a square" (shape only, a quarter) or "a blue
shape" (colour only, a quarter). Every method samples B edits per case through
:func:`romlib.sampling.inpaint.prepare_base` under its guidance rule, on the *true* object mask
dilated by ``k`` (the segmenter's accuracy on the same cases is reported apart), with the same
noise for every method (sample i of case c always starts from the same seed).

Methods: ``inpaint`` (empty target: plain inpainting), ``cf`` (eq. 6), ``ccf`` (eq. 8),
``ccf-direction`` (c_ref base, masked input) and ``cf-original`` (∅ base, original input),
each over ``scales``; then the dilation ablation (CCF at its best scale on a mask eroded by
1 px, dilated by k = 1, 3, 5).

Per method and scale (the oracle looks at the edit mask and the original object's pixels):

* **success** — every attribute the target names is right (mean over all samples);
* **top1 local / top1 masked** — success of the sample the ranker puts first, ranking the box
  ×1.3 crop (the paper) or the masked image (Blended Diffusion's), on the same samples;
* **preservation** — attributes the target does not name kept their original value (cases
  with a one-attribute target);
* **PSNR out** — outside the mask (exact by construction: the known region is forced);
* **PSNR bg** — the regenerated background inside the mask against the clean background;
* **seam** — mean absolute error (8-bit levels) of the background pixels on the mask's inner border.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch

from ..guidance.cfg import RULES
from ..guidance.methods import METHODS as REGISTRY, ClassifierFree
from ..interrupts import deferred
from ..runs import new_run_dir, refuse_broken_link, run_dir_name
from ..sampling.diffusion import create_diffusion
from . import load_backend
from .cases import Case, make_cases  # noqa: F401  (re-exported: the benchmark's cases)
from .measure import _edit_mask, sample_cases, score_samples, segmenter_accuracy  # noqa: F401
from .tables import (NOTEBOOK_TABLES, TABLES_FILE, format_notebook_table, format_segmenter_table,  # noqa: F401
                     measure_table, notebook_table, segmenter_table, wilson, write_notebook_tables)  # re-exported

__all__ = ["Case", "make_cases", "run_benchmark", "format_table", "plot_benchmark", "METHODS", "DEFAULT_SCALES",
           "bench_command", "sample_cases", "score_samples", "NOTEBOOK_TABLES", "notebook_table",
           "measure_table", "format_notebook_table", "write_notebook_tables", "segmenter_table", "format_segmenter_table",
           "wilson", "TABLES_FILE"]

log = logging.getLogger(__name__)

def _methods() -> tuple[str, ...]:
    return ("inpaint",) + tuple(n for n, m in REGISTRY.items() if isinstance(m, ClassifierFree))


METHODS = _methods()  # plain inpainting, then every classifier-free method of the registry
DEFAULT_SCALES = (1.0, 3.0, 5.0, 10.0, 15.0)
DILATIONS = (1, 3, 5)


def run_benchmark(n_cases: int = 200, methods=METHODS, scales=DEFAULT_SCALES, samples: int = 2, seed: int = 0, *,
                  steps: str | int | None = None, dilation: int = 3, dilations=DILATIONS, ablation_scale: float | None = None,
                  backend=None, batch_rows: int = 96, progress: bool = True) -> dict:
    """Run the benchmark; returns ``{"rows": [...], "segmenter": {...}, "settings": {...}}``.

    One row per (method, scale) with the metrics of :func:`score_samples`, then one per
    dilation k of the ablation (``"ablation": "eroded-mask"``). ``ablation_scale`` defaults to
    CCF's best scale in the grid (``dilations=()`` skips the ablation). Identical rules (CF and
    CCF-direction at s = 1, CCF and CF-original at s = 1) are sampled once.
    """
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; expected some of {METHODS}")
    b = backend or load_backend("cpu")
    model, tok, ranker = b.base_model, b.tokenizer, b.ranker
    schedule, n_steps = b.base_schedule
    steps = str(steps or b.base_steps)
    diffusion = create_diffusion(n_steps, schedule, steps)
    cases = make_cases(n_cases, seed)
    t_start = time.perf_counter()
    rows, cache = [], {}

    def run(method, scale, erode=0, k=dilation, ablation=""):
        masks = [_edit_mask(c, erode, k) for c in cases]
        rule = "cf" if method == "inpaint" else method
        spec = RULES[rule]  # what the rule feeds its two branches (the samples of equal inputs are shared)
        key = (spec.inpaint_input, spec.base_text if scale != 1 else "", scale, erode, k, method == "inpaint")
        t0 = time.perf_counter()
        if key not in cache:
            cache[key] = sample_cases(model, tok, diffusion, cases, masks, rule=rule, scale=scale, samples=samples, seed=seed,
                                      plain=method == "inpaint", batch_rows=batch_rows, progress=progress,
                                      desc=f"{method} s={scale:g} k={k}{' eroded' if erode else ''}")
        row = {"method": method, "scale": scale, "dilation": k, "erode": erode, "ablation": ablation,
               **score_samples(cases, masks, cache[key], ranker), "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        log.info("%s s=%g k=%d erode=%d: success %.3f top1 %.3f preservation %.3f (%.0f s)", method, scale, k, erode,
                 row["success"], row["top1_local"], row["preservation"], row["seconds"])
        return row

    for method in methods:
        for scale in ([1.0] if method == "inpaint" else scales):
            run(method, float(scale))
    if dilations:
        ccf = [r for r in rows if r["method"] == "ccf"]
        s = ablation_scale or (max(ccf, key=lambda r: r["success"])["scale"] if ccf else 15.0)
        for k in dilations:
            run("ccf", float(s), erode=1, k=k, ablation="eroded-mask")
    settings = {"n_cases": n_cases, "samples": samples, "seed": seed, "steps": steps, "dilation": dilation,
                "scales": list(scales), "methods": list(methods), "backend": b.name,
                "model": getattr(model, "meta", {}), "seconds": round(time.perf_counter() - t_start, 1),
                "threads": torch.get_num_threads()}
    return {"rows": rows, "segmenter": segmenter_accuracy(cases), "settings": settings}


# ----------------------------------------------------------------------------- reporting
def _fmt(v, pct=False):
    if isinstance(v, float) and math.isnan(v):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "exact"
    return f"{100 * v:.1f}" if pct else (f"{v:.1f}" if isinstance(v, float) else str(v))


def format_table(results: dict) -> str:
    """The results as a Markdown table (percentages for the rates)."""
    head = ("| method | scale | k | mask | success % | top-1 local % | top-1 masked % | preservation % | PSNR out | "
            "PSNR bg (dB) | seam (8-bit) |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in results["rows"]:
        lines.append(f"| {r['method']} | {r['scale']:g} | {r['dilation']} | {'eroded 1 px' if r['erode'] else 'true'} | "
                     f"{_fmt(r['success'], True)} | {_fmt(r['top1_local'], True)} | {_fmt(r['top1_masked'], True)} | "
                     f"{_fmt(r['preservation'], True)} | {_fmt(r['psnr_out'])} | {_fmt(r['psnr_bg'])} | {_fmt(r['seam'])} |")
    s, seg = results["settings"], results["segmenter"]
    lines.append("")
    lines.append(f"{s['n_cases']} cases × {s['samples']} samples, {s['steps']} steps, seed {s['seed']}, "
                 f"{s['seconds']:.0f} s on {s['threads']} threads. Segmenter on the same cases: "
                 f"{100 * seg['exact']:.1f} % exact masks, mean IoU {seg['mean_iou']:.3f}.")
    return "\n".join(lines)


def plot_benchmark(results: dict, path: str | Path | None = None):
    """Success and preservation against the guidance scale, one line per method (plus plain
    inpainting as a level), and the dilation ablation; returns the Figure."""
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if not r["ablation"]]
    abl = [r for r in results["rows"] if r["ablation"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    styles = {"cf": "C0-o", "ccf": "C3-s", "ccf-direction": "C1--^", "cf-original": "C2--v"}
    for ax, key, title in ((axes[0], "success", "target success (all samples)"), (axes[1], "preservation", "preservation")):
        for m, st in styles.items():
            rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["scale"])
            if rs:
                ax.plot([r["scale"] for r in rs], [100 * r[key] for r in rs], st, label=m)
        plain = [r for r in rows if r["method"] == "inpaint"]
        if plain:
            ax.axhline(100 * plain[0][key], color="grey", ls=":", label="plain inpainting")
        ax.set_xlabel("guidance scale s"), ax.set_ylabel("%"), ax.set_title(title, fontsize=9), ax.grid(alpha=0.3)
        ax.set_ylim(0, 100)
    axes[0].legend(fontsize=8)
    ax = axes[2]
    if abl:
        ks = [r["dilation"] for r in abl]
        ax.plot(ks, [100 * r["success"] for r in abl], "C3-s", label="success")
        ax.plot(ks, [100 * r["top1_local"] for r in abl], "C4-o", label="top-1 (local rank)")
        ax.set_xticks(ks)
        ax.set_title(f"CCF s={abl[0]['scale']:g} on a mask eroded by 1 px", fontsize=9)
        ax.set_xlabel("dilation k"), ax.set_ylabel("%"), ax.set_ylim(0, 100), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    else:
        ax.axis("off")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def bench_command(args) -> int:
    """``romlib shapes-bench``: run, then write ``results.json``, ``table.md``, ``benchmark.png`` into
    a new run folder inside ``--out`` (never over an earlier run's); print the table."""
    started = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    refuse_broken_link(out)  # else found only after the whole benchmark ran, as a bare [Errno 17]
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder; choose another --out")
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()] if args.scales is not None else DEFAULT_SCALES
        dilations = [int(k) for k in args.dilations.split(",") if k.strip()]
    except ValueError as e:
        raise ValueError(f"--scales / --dilations must be comma-separated numbers: {e}") from None
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None else METHODS
    results = run_benchmark(args.cases, methods=methods, scales=scales,
                            samples=args.samples, seed=args.seed, steps=args.steps, dilations=dilations,
                            backend=load_backend("cpu", args.weights), progress=not args.quiet)
    table = format_table(results)
    folder = None
    try:
        folder = new_run_dir(out, run_dir_name("bench", f"{args.cases} cases seed {args.seed}", started))
        _write_results(folder, results, table)
    except KeyboardInterrupt as e:
        if folder is not None and (folder / "benchmark.png").is_file():  # held until the three files were whole
            e.kept = f"the benchmark's results, saved whole in {folder}"
        elif folder is not None:
            folder.rmdir()  # made a moment ago, still empty
        raise
    print(table)
    print(f"\nwrote {folder / 'results.json'}, {folder / 'table.md'}, {folder / 'benchmark.png'}")
    return 0


def _write_results(folder: Path, results: dict, table: str) -> None:
    """The run's three files, each written to a temporary name and renamed, signals held meanwhile;
    a failure removes the (new) run folder."""
    import os
    import shutil

    import matplotlib.pyplot as plt


    fig = plot_benchmark(results)
    files = {"results.json": lambda p: p.write_text(json.dumps(results, indent=2, default=str)),
             "table.md": lambda p: p.write_text(table + "\n"),
             "benchmark.png": lambda p: fig.savefig(p, dpi=110, format="png")}
    try:
        with deferred():
            for name, write in files.items():
                write(folder / f".{name}.tmp")
                os.replace(folder / f".{name}.tmp", folder / name)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)  # made for this run a moment ago
        raise
    finally:
        plt.close(fig)


if __name__ == "__main__":  # python -m romlib.shapes.bench [table ...]: refresh the notebooks' shipped tables
    import sys

    logging.basicConfig(level=logging.INFO)
    write_notebook_tables(tuple(sys.argv[1:]) or tuple(NOTEBOOK_TABLES))

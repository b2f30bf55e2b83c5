"""What a faster sampler costs on ShapesWorld: the paper's ancestral sampler at the backend's steps against DDIM
and DPM-Solver++(2M) at a few step counts, under the same rule, scale, cases, masks and starting noise x_T.

Per setting: target success and preservation (rates with Wilson 95 % intervals over the samples), seam error,
PSNR of the regenerated background and the forward passes per sample (steps × 2 branches). docs/performance.md
quotes the table and the plot; ``python -m romlib.shapes.sampler_study --out docs`` reruns it (about 12 CPU-minutes
for 200 cases × 2 samples).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..sampling.diffusion import create_diffusion
from . import load_backend
from .cases import make_cases
from .measure import _edit_mask, rate, sample_cases, score_samples

__all__ = ["SETTINGS", "run_sampler_study", "format_sampler_table", "plot_sampler_study"]

#: (sampler, steps) measured; the first is the reference (the paper's sampler at the shapes backend's 25 steps)
SETTINGS = (("ancestral", "25"), ("ancestral", "10"), ("ddim", "10"), ("ddim", "20"), ("ddim", "50"), ("dpmpp-2m", "10"),
            ("dpmpp-2m", "20"), ("dpmpp-2m", "50"))


def run_sampler_study(n_cases: int = 200, samples: int = 2, seed: int = 0, settings=SETTINGS, rule: str = "ccf",
                      dilation: int = 3, progress: bool = False) -> dict:
    """Sample and score every ``(sampler, steps)`` of ``settings``; returns ``{"rows": [...], "settings": {...}}``."""
    import torch


    b = load_backend("cpu")
    scale = b.default_scales[rule]
    schedule, n_steps = b.base_schedule
    cases = make_cases(n_cases, seed)
    masks = [_edit_mask(c, 0, dilation) for c in cases]
    rows = []
    for sampler, steps in settings:
        t0 = time.perf_counter()
        x = sample_cases(b.base_model, b.tokenizer, create_diffusion(n_steps, schedule, steps), cases, masks, rule=rule,
                         scale=scale, samples=samples, seed=seed, sampler=sampler, progress=progress,
                         desc=f"{sampler} {steps}")
        m = score_samples(cases, masks, x)
        n = m["n_samples"]
        k_succ, k_pres = round(m["success"] * n), round(m["preservation"] * m["n_preservation"])
        rows.append({"sampler": sampler, "steps": int(steps), "passes": 2 * int(steps),
                     "success": rate([True] * k_succ + [False] * (n - k_succ)),
                     "preservation": rate([True] * k_pres + [False] * (m["n_preservation"] - k_pres)),
                     "seam": round(m["seam"], 2), "psnr_bg": round(m["psnr_bg"], 2), "psnr_out": round(m["psnr_out"], 2),
                     "seconds": round(time.perf_counter() - t0, 1)})
    return {"rows": rows, "settings": {"n_cases": n_cases, "samples": samples, "seed": seed, "rule": rule, "scale": scale,
                                       "dilation": dilation, "threads": torch.get_num_threads()}}


def format_sampler_table(study: dict) -> str:
    """The Markdown table of docs/performance.md."""
    lines = ["| sampler | steps | forward passes / sample | target success % [95 % CI] | preservation % [95 % CI] "
             "| seam error (0–255) | background PSNR dB | CPU s |", "|---|---|---|---|---|---|---|---|"]
    for r in study["rows"]:
        s, p = r["success"], r["preservation"]
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['passes']} | {s['pct']} [{s['low']}, {s['high']}] "
                     f"| {p['pct']} [{p['low']}, {p['high']}] | {r['seam']} | {r['psnr_bg']} | {r['seconds']} |")
    return "\n".join(lines)


def plot_sampler_study(study: dict, path: str | Path | None = None):
    """Target success (with its interval) and background PSNR against forward passes per sample, one line per sampler."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.8))
    for sampler in dict.fromkeys(r["sampler"] for r in study["rows"]):
        rows = sorted((r for r in study["rows"] if r["sampler"] == sampler), key=lambda r: r["passes"])
        x = [r["passes"] for r in rows]
        y = [r["success"]["pct"] for r in rows]
        err = [[r["success"]["pct"] - r["success"]["low"] for r in rows], [r["success"]["high"] - r["success"]["pct"] for r in rows]]
        axes[0].errorbar(x, y, yerr=err, marker="o", capsize=3, label=sampler)
        axes[1].plot(x, [r["psnr_bg"] for r in rows], marker="o", label=sampler)
    axes[0].set(xlabel="forward passes per sample", ylabel="target success %", title="success (95 % CI)")
    axes[1].set(xlabel="forward passes per sample", ylabel="dB", title="background PSNR")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=200)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--out", default=None, help="folder for sampler_study.json and img/sampler_study.png")
    a = p.parse_args(argv)
    study = run_sampler_study(a.cases, a.samples, progress=True)
    print(format_sampler_table(study))
    if a.out:
        out = Path(a.out)
        (out / "sampler_study.json").write_text(json.dumps(study, indent=1))
        (out / "img").mkdir(exist_ok=True)
        plot_sampler_study(study, out / "img" / "sampler_study.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

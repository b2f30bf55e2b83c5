"""The world's benchmark: guidance rules × scales on the world's cases, every sample judged by the oracle.

Each edit runs through :meth:`romlib.pipeline.ROMPipeline.edit` (GLIDE's path: the guided 32×32 base run, the
32→64 upsampler, the ranking), with the same seeds for every rule, so any two rules are compared sample by
sample. The mask is the case's true object mask (``mask="true"``) or the learned segmenter's
(``mask="segmenter"``, its best query even when ambiguous), dilated by ``dilation``; the oracle judges the
hole the edit really had (``EditResult.edit_mask``).

**One record per sample** (:func:`run_bench`): ``case``, ``seed``, ``kind``, ``context``, ``rule``, ``scale``,
``dilation``, ``mask``, ``sample``, ``rank_local`` / ``rank_masked`` (its place in each ranking, 0 = top-1),
``seg_iou`` (the mask used vs the true mask), ``left_px`` / ``over_px`` (the object's pixels outside the hole — the rim
a small k leaves — and the background pixels inside it, at 64×64; the same for every sample of an edit),
``old_colour`` / ``old_shape`` (the oracle read the object's original colour / shape: the old object came back), ``push`` (with ``push=True``: the guidance's mean |ε̂ − ε_base| in the
hole, :func:`guidance_push`; :func:`matched_scales` picks each rule's scale of equal push), then every scalar of :func:`romlib.world.oracle.judge`:
``hit_<attr>`` True/False/None (None = the oracle abstained), ``success``, ``n_abstain``, the continuous
errors (``angle_err``, ``size_ratio``, ``shift``, ``pattern_corr``), ``psnr_bg``, ``bg_bad_px``, ``seam``, ``removed``.
:func:`write_records` writes them as JSONL and CSV.

**Rates** (:func:`summarise`): per (rule, scale) every rate with its Wilson 95 % interval
(:func:`romlib.shapes.measure.rate`) over the samples the oracle did not abstain on, the abstentions counted
beside it; every continuous error as a mean with its 95 % interval (normal approximation); top-1 success of
each ranking. :func:`paired` compares two (rule, scale) settings on the same (case, sample) pairs.

**Dilations** (``dilations``, ``--dilation 1,3,5,7``): every edit is run at each k with the same seeds, so a k
sweep (paper Fig. 8) is paired sample by sample too; the summary then groups by k as well.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..checks import DILATION_ACCEPTED, check_dilation
from ..contracts import AmbiguousReference, NoObjectFound
from ..progress import tqdm
from ..masks import to_edit_mask
from ..pipeline import ROMPipeline
from ..sampling.diffusion import sample_generators
from ..sampling.inpaint import prepare_base, sample_base_progressive
from ..shapes.measure import rate
from . import backend as world_backend
from .cases import KINDS, WorldCase, make_cases
from .oracle import judge

__all__ = ["RULES", "DEFAULT_SCALES", "CONTINUOUS", "RATES", "PIXELS", "run_bench", "edit_case", "judge_edit", "read_journal", "case_records", "guidance_push",
           "matched_scales", "write_records", "summarise", "paired", "format_summary", "main"]

log = logging.getLogger(__name__)

RULES = ("cf", "ccf", "ccf-direction", "cf-original")
DEFAULT_SCALES = (1.0, 3.0, 5.0, 10.0)
#: the oracle's continuous measurements (mean and 95 % interval each)
CONTINUOUS = ("angle_err", "size_ratio", "shift", "pattern_corr", "psnr_bg", "bg_bad_px", "seam", "seg_iou", "push")
#: the oracle's calls (a rate each; None = abstained, counted apart)
RATES = ("success", "hit_colour", "hit_shape", "hit_material", "hit_size", "removed", "old_colour", "old_shape")
#: the pixel counts of each edit's hole (mean and 95 % interval each)
PIXELS = ("left_px", "over_px")


def _scalar(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v if v is None or isinstance(v, str) else None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


@torch.no_grad()
def guidance_push(pipe: ROMPipeline, case: WorldCase, *, rule: str, scale: float, samples: int, seed: int,
                  dilation: int = 3, steps: str | None = None) -> list[float]:
    """The guidance's push of each sample: the mean over the base run's steps and the hole's pixels of
    |ε̂ − ε_base| (= s·|ε(c) − ε_base|), on the case's true mask dilated by ``dilation`` (a base run of its own with
    the same seeds; the matched-strength comparison of docs/world_preregistration.md)."""
    p = pipe.prepare(case.pil(), case.ref, mask=torch.from_numpy(case.mask), dilation=dilation)
    setup = prepare_base(pipe.backend.base_model, pipe.backend.tokenizer, image=p.image_base, keep_mask=p.keep_base,
                         target=case.target, ref=case.ref, rule=rule, scale=scale, record=True)
    hole = to_edit_mask(p.keep_base)  # [1, 1, b, b], 1 = edited
    total, n = torch.zeros(samples), 0
    for out in sample_base_progressive(setup, pipe.diffusion("base", steps), sample_generators(seed, samples, stream=0)):
        push = ((out["eps"] - out["eps_base"]).abs() * hole).sum((1, 2, 3)) / (3 * hole.sum()).clamp(min=1)
        total, n = total + push.cpu(), n + 1
    return (total / max(n, 1)).tolist()


def matched_scales(rows: list[dict], reference: tuple[str, float] = ("ccf", 3.0)) -> dict:
    """For each rule of :func:`summarise`'s ``rows`` (with ``push``), the scale whose mean push is nearest that of
    ``reference`` (rule, scale): the rules compared at equal guidance strength."""
    push = {(r["rule"], r["scale"]): r["push"]["mean"] for r in rows if r["push"]["mean"] is not None}
    if reference not in push:
        raise ValueError(f"reference {reference} has no measured push; measured: {sorted(push)}")
    target = push[reference]
    out = {}
    for (rule, scale), v in push.items():
        if rule not in out or abs(v - target) < abs(push[(rule, out[rule])] - target):
            out[rule] = scale
    return out


def _case_seed(seed: int, case: WorldCase) -> int:
    """The noise seed of ``case``'s edits in a run seeded ``seed`` (the same for every rule, scale and k)."""
    return (seed * 100_003 + case.index) % 2**63


def _check_mask(mask: str) -> None:
    if mask not in ("true", "segmenter"):
        raise ValueError(f"mask={mask!r}; accepted: 'true' (the case's object mask) or 'segmenter' (the learned one)")


def edit_case(pipe: ROMPipeline, case: WorldCase, *, rule: str, scale: float, samples: int, seed: int = 0,
              dilation: int = 3, mask: str = "true", **knobs):
    """The bench's edit of ``case`` (an :class:`~romlib.result.EditResult`): ``samples`` samples, noise seeded by
    ``seed`` and the case, the case's true mask (``mask="true"``) or the segmenter's best query (``"segmenter"``)
    dilated by ``dilation``, ranked locally. Raises what :meth:`~romlib.pipeline.ROMPipeline.edit` raises."""
    _check_mask(mask)
    edit = dict(guidance=rule, scale=scale, samples=samples, seed=_case_seed(seed, case),
                dilation=dilation, rank="local", progress=False, **knobs)
    if mask == "true":
        edit["mask"] = torch.from_numpy(case.mask)
    else:
        edit.update(best_anyway=True, min_score=0.0)
    return pipe.edit(case.pil(), case.ref, case.target, **edit)


def judge_edit(pipe: ROMPipeline, result, case: WorldCase, *, mask: str = "true", pushes=None) -> list[dict]:
    """One record per sample of ``result`` (an edit of ``case``, :func:`edit_case`), in sampling order: the oracle's
    reading (:func:`romlib.world.oracle.judge`) and the keys the module docstring lists."""
    cfg = result.settings
    masked = pipe.rerank(result, "masked")
    frames = torch.empty_like(result.images)
    frames[torch.tensor(result.order)] = result.images
    rank_local = {int(i): j for j, i in enumerate(result.order)}
    rank_masked = {int(i): j for j, i in enumerate(masked.order)}
    hole = result.edit_mask.bool().numpy()
    pixels = {"left_px": int((case.mask & ~hole).sum()), "over_px": int((hole & ~case.mask).sum())}
    old = case.scene.objects[case.i]
    seg_iou = _iou(result.segmentation.mask.bool().numpy(), case.mask) if mask == "segmenter" else 1.0
    out = []
    for s, frame in enumerate(frames):
        j = judge(frame, case.scene, case.i, hole, case.target)
        out.append({"case": case.index, "seed": case.seed, "kind": case.kind, "context": case.context,
                    "rule": cfg["guidance"], "scale": float(cfg["scale"]), "dilation": int(cfg["dilation"]),
                    "mask": mask, "sample": s, "rank_local": rank_local[s], "rank_masked": rank_masked[s],
                    "seg_iou": seg_iou, "push": None if pushes is None else pushes[s], **pixels,
                    **{k: _scalar(v) for k, v in j.items() if _scalar(v) is not None or v is None},
                    "old_colour": None if j["colour"] is None else j["colour"] == old.colour,
                    "old_shape": None if j["shape"] is None else j["shape"] == old.shape})
    return out


def case_records(pipe: ROMPipeline, case: WorldCase, *, rule: str, scale: float, samples: int, seed: int = 0,
                 dilation: int = 3, mask: str = "true", push: bool = False, **knobs) -> list[dict]:
    """One edit of ``case`` (:func:`edit_case`) judged sample by sample (:func:`judge_edit`); ``push``: each
    sample's guidance push too (:func:`guidance_push`, one more base run). An edit the pipeline refuses gives one
    record with ``sample`` None and the ``error``'s name."""
    _check_mask(mask)  # a wrong setting raises; an edit the pipeline refuses is recorded
    try:
        result = edit_case(pipe, case, rule=rule, scale=scale, samples=samples, seed=seed, dilation=dilation,
                           mask=mask, **knobs)
    except (NoObjectFound, AmbiguousReference, ValueError) as e:  # e.g. a segmenter mask empty at the base size
        log.warning("case %d (%s, %s s=%g): no edit: %s", case.index, case.kind, rule, scale, e)
        return [{"case": case.index, "seed": case.seed, "kind": case.kind, "context": case.context, "rule": rule,
                 "scale": scale, "dilation": dilation, "mask": mask, "sample": None, "error": type(e).__name__}]
    pushes = guidance_push(pipe, case, rule=rule, scale=scale, samples=samples, seed=_case_seed(seed, case),
                           dilation=dilation, steps=knobs.get("steps")) if push else None
    return judge_edit(pipe, result, case, mask=mask, pushes=pushes)


def read_journal(path: str | Path) -> list[dict]:
    """The records a run's journal holds (one JSON record per line; a last line cut by a kill is dropped)."""
    out = []
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written when the run was killed
            break
    return out


def _key(r: dict) -> tuple:
    return r["case"], r["rule"], float(r["scale"]), int(r["dilation"])


def run_bench(pipe: ROMPipeline, cases: list[WorldCase], *, rules=RULES, scales=DEFAULT_SCALES, samples: int = 4,
              seed: int = 0, dilation: int | tuple = 3, mask: str = "true", push: bool = False, progress: bool = True,
              journal: str | Path | None = None, **knobs) -> list[dict]:
    """Every case under every rule, scale and dilation k (``dilation``: one k or several; :func:`case_records`); the
    records in one list. ``journal``: a JSONL file that each edit's records are appended to (flushed) as soon as it is
    judged; the edits it already holds are not run again (a killed run resumes where it stopped, with the same
    records)."""
    ks = [check_dilation(k) for k in ((dilation,) if isinstance(dilation, (int, np.integer)) else dilation)]
    if not ks:
        raise ValueError(f"dilation={dilation!r} is empty; accepted: one k or several, each {DILATION_ACCEPTED}")
    jobs = [(c, r, float(s), int(k)) for r in rules for s in scales for k in ks for c in cases]
    records = read_journal(journal) if journal is not None else []
    done = {_key(r) for r in records}
    todo = [j for j in jobs if (j[0].index, *j[1:]) not in done]
    if journal is not None and done:
        log.info("journal %s: %d of %d edits done, %d to run", journal, len(jobs) - len(todo), len(jobs), len(todo))
    if journal is not None and Path(journal).is_file():  # cut a last line a kill left unfinished, before appending
        raw = Path(journal).read_bytes()
        keep = raw.rfind(b"\n") + 1
        if keep < len(raw):
            with open(journal, "r+b") as f:
                f.truncate(keep)
    sink = open(journal, "a") if journal is not None else None
    try:
        for case, rule, scale, k in tqdm(todo, desc="world bench", disable=not progress, dynamic_ncols=True):
            new = case_records(pipe, case, rule=rule, scale=scale, samples=samples, seed=seed, dilation=k,
                               mask=mask, push=push, **knobs)
            records += new
            if sink is not None:
                sink.write("".join(json.dumps(r) + "\n" for r in new))
                sink.flush()
                os.fsync(sink.fileno())
    finally:
        if sink is not None:
            sink.close()
    wanted = {(c.index, r, s, k) for c, r, s, k in jobs}
    return [r for r in records if _key(r) in wanted]


def write_records(records: list[dict], folder: str | Path, stem: str = "records") -> dict:
    """``records.jsonl`` and ``records.csv`` (None as an empty cell) in ``folder``; returns their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"jsonl": out / f"{stem}.jsonl", "csv": out / f"{stem}.csv"}
    with open(paths["jsonl"], "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    columns = list(dict.fromkeys(k for r in records for k in r))
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        for r in records:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
    return paths


def _mean_ci(values) -> dict:
    v = np.asarray([x for x in values if x is not None], float)
    if len(v) == 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"n": int(len(v)), "mean": round(float(v.mean()), 4), "low": round(float(v.mean() - half), 4),
            "high": round(float(v.mean() + half), 4)}


def _rate(records, key) -> dict:
    calls = [r[key] for r in records if key in r]
    out = rate([c for c in calls if c is not None])
    out["abstained"] = sum(c is None for c in calls)
    return out


def summarise(records: list[dict], by=("rule", "scale")) -> list[dict]:
    """Per group of ``by``: each rate of :data:`RATES` (Wilson 95 %, abstentions apart; ``removed`` over the
    empty targets only), each mean of
    :data:`CONTINUOUS` (95 %), and the success of each ranking's top-1."""
    groups: dict = {}
    for r in records:
        if r.get("sample") is not None:
            groups.setdefault(tuple(r[k] for k in by), []).append(r)
    rows = []
    for key, recs in groups.items():
        row = {**dict(zip(by, key)), "n_samples": len(recs), "n_cases": len({r["case"] for r in recs})}
        for k in RATES:  # "removed" is the call of an empty target; for the others it is success's complement
            row[k] = _rate([r for r in recs if r["target"] == ""] if k == "removed" else recs, k)
        for mode in ("local", "masked"):
            row[f"top1_{mode}"] = _rate([r for r in recs if r[f"rank_{mode}"] == 0], "success")
        for k in CONTINUOUS:
            row[k] = _mean_ci(r.get(k) for r in recs)
        per_edit = {(r["case"], r.get("dilation")): r for r in recs}.values()  # the hole is the edit's, not a sample's
        for k in PIXELS:
            row[k] = _mean_ci(r.get(k) for r in per_edit)
        rows.append(row)
    return rows


def paired(records: list[dict], a: dict, b: dict, key: str = "success") -> dict:
    """Setting ``a`` vs ``b`` (e.g. ``{"rule": "ccf", "scale": 3.0}``) on the same (case, sample) pairs for a
    true/false measurement ``key``: pairs where both called it, ``a_only`` / ``b_only`` (the discordant pairs,
    McNemar's), and the difference in rate with its 95 % interval (paired normal approximation)."""
    def pick(setting):
        return {(r["case"], r["sample"]): r.get(key) for r in records
                if r.get("sample") is not None and all(r.get(k) == v for k, v in setting.items())}

    pa, pb = pick(a), pick(b)
    both = [(pa[k], pb[k]) for k in pa.keys() & pb.keys() if pa[k] is not None and pb[k] is not None]
    d = np.asarray([float(x) - float(y) for x, y in both])
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"a": a, "b": b, "key": key, "pairs": len(both), "a_only": int(sum(x and not y for x, y in both)),
            "b_only": int(sum(y and not x for x, y in both)),
            "diff": round(float(d.mean()), 4) if len(d) else None,
            "low": round(float(d.mean() - half), 4) if len(d) > 1 else None,
            "high": round(float(d.mean() + half), 4) if len(d) > 1 else None}


def _fmt_rate(r: dict) -> str:
    abst = f" ({r['abstained']} abst.)" if r.get("abstained") else ""
    if not r["n"]:
        return "–" + abst
    return f"{r['pct']:.1f} [{r['low']:.1f}, {r['high']:.1f}]{abst}"


def _fmt_mean(m: dict) -> str:
    return "–" if m["mean"] is None else f"{m['mean']:.3g} [{m['low']:.3g}, {m['high']:.3g}]"


def format_summary(rows: list[dict]) -> str:
    """The summary as a Markdown table (rates in % with their 95 % intervals)."""
    cols = ("success", "hit_colour", "hit_shape", "hit_material", "removed", "old_colour", "old_shape", "top1_local",
            "top1_masked")
    means = ("angle_err", "size_ratio", "shift", "psnr_bg", "seam", "left_px", "over_px")
    ks = any("dilation" in r for r in rows)
    head = ("| rule | scale | " + ("k | " if ks else "") + "n | " + " | ".join(cols + means) + " |\n|"
            + "---|" * (3 + ks + len(cols) + len(means)))
    lines = [head]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['scale']:g} | " + (f"{r['dilation']} | " if ks else "") + f"{r['n_samples']} | "
                     + " | ".join(_fmt_rate(r[c]) for c in cols) + " | " + " | ".join(_fmt_mean(r[m]) for m in means) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m romlib.world.bench``: the benchmark on the world backend's weights; writes records.jsonl,
    records.csv, summary.json and summary.md into ``--out``."""
    from ..arguments import parse_list

    p = argparse.ArgumentParser(prog="python -m romlib.world.bench", description=main.__doc__.split(";")[0])
    p.add_argument("--cases", type=int, default=50, help="number of cases (default 50)")
    p.add_argument("--seed", type=int, default=0, help="case and noise seed (default 0; the held-out seed is named "
                                                        "in docs/world_preregistration.md)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"case kinds (default {','.join(KINDS)})")
    p.add_argument("--rules", default=",".join(RULES), help=f"guidance rules (default {','.join(RULES)})")
    p.add_argument("--scales", default=",".join(f"{s:g}" for s in DEFAULT_SCALES), help="guidance scales")
    p.add_argument("--samples", type=int, default=4, help="samples per case, rule and scale (default 4)")
    p.add_argument("--dilation", default="3", help="mask dilation k, or several (1,3,5,7: a k sweep with the same seeds); "
                                                   "default 3")
    p.add_argument("--mask", choices=("true", "segmenter"), default="true", help="the true object mask or the learned "
                                                                                   "segmenter's (default true)")
    p.add_argument("--push", action="store_true", help="also record each sample's guidance push |eps_hat - eps_base| "
                                                        "(one more base run per edit; for matched strength)")
    p.add_argument("--steps", default=None, help="base sampling steps (default: the backend's)")
    p.add_argument("--upsample-steps", default=None, help="upsampler steps (default: the backend's)")
    p.add_argument("--weights", default=None, help=f"weights folder (default: ${world_backend.WEIGHTS_ENV}, else shipped)")
    p.add_argument("--out", default="world_bench", help="output folder (default world_bench)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's; 1 when other "
                                                             "jobs share the cores: docs/world_training.md)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its journal (journal.jsonl: "
                                                         "each edit's records as soon as judged); the settings must match")
    args = p.parse_args(argv)
    try:
        ks = [check_dilation(k, "--dilation") for k in parse_list("--dilation", args.dilation, int)]
    except ValueError as e:
        p.error(str(e))
    args.dilation = ks[0] if len(ks) == 1 else ks
    out = Path(args.out)
    journal, settings_file = out / "journal.jsonl", out / "journal_settings.json"
    settings = {k: v for k, v in vars(args).items() if k not in ("quiet", "resume", "out", "threads")}
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if journal.exists() and not args.resume:
        p.error(f"{out} holds an earlier run's journal ({journal}); pass --resume to continue it, or another --out")
    if args.resume and settings_file.is_file():
        before = json.loads(settings_file.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            p.error("--resume with other settings than the journal's: " + ", ".join(
                f"{k} {before.get(k)!r} -> {settings.get(k)!r}" for k in changed))
    out.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings, indent=1))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pipe = ROMPipeline(world_backend.load_backend("cpu", args.weights))
    knobs = {k: v for k, v in (("steps", args.steps), ("upsample_steps", args.upsample_steps)) if v is not None}
    cases = make_cases(args.cases, args.seed, kinds=parse_list("--kinds", args.kinds, str))
    records = run_bench(pipe, cases, rules=parse_list("--rules", args.rules, str),
                        scales=parse_list("--scales", args.scales, float), samples=args.samples, seed=args.seed,
                        dilation=args.dilation, mask=args.mask, push=args.push, progress=not args.quiet,
                        journal=journal, **knobs)
    paths = write_records(records, args.out)
    rows = summarise(records, by=("rule", "scale") if len(ks) == 1 else ("rule", "scale", "dilation"))
    (out / "summary.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))
    (out / "summary.md").write_text(format_summary(rows) + "\n")
    print(format_summary(rows))
    print(f"records: {paths['jsonl']} {paths['csv']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the notebook studies (:mod:`~romlib.world.dilstudy`, :mod:`~romlib.world.guidestudy`,
:mod:`~romlib.world.rankstudy`) share: rates with abstentions apart, their text form, the journal's seed check, the
shipped-or-recomputed table and the resumable command."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..shapes.measure import rate
from .bench import read_journal

__all__ = ["calls", "pct", "num", "mark", "check_journal", "notebook_table", "scale_option", "command"]


def calls(values) -> dict:
    """A rate over the oracle's calls (Wilson 95 %; :func:`romlib.shapes.measure.rate`), its abstentions (None)
    counted apart as ``"abstained"``."""
    values = list(values)
    out = rate([v for v in values if v is not None])
    out["abstained"] = sum(v is None for v in values)
    return out


def pct(r: dict) -> str:
    """A rate as the tables print it: "47 % [36, 57] (8 abst.)", or "–" without calls."""
    if not r["n"]:
        return "–"
    abst = f" ({r['abstained']} abst.)" if r.get("abstained") else ""
    return f"{r['pct']:.0f} % [{r['low']:.0f}, {r['high']:.0f}]{abst}"


def num(m: dict, fmt: str = ".1f") -> str:
    """A mean (``romlib.world.bench._mean_ci``'s dict) as the tables print it, or "–"."""
    return "–" if m["mean"] is None else f"{m['mean']:{fmt}}"


def mark(ok) -> str:
    """A verdict as the figures write it: yes, no, or '?' where the oracle could not read it."""
    return "?" if ok is None else ("yes" if ok else "no")


def check_journal(path: str | Path, seed: int) -> None:
    """Refuse a journal that holds records of another seed (its records would be mixed into this study's)."""
    seeds = {r.get("seed") for r in read_journal(path)} - {seed}
    if seeds:
        raise ValueError(f"{path} holds records of seed {sorted(seeds)}, not {seed}: use another journal")
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def notebook_table(table_file: Path, compute: Callable[[], dict], pipe, rerun: bool) -> dict:
    """A notebook's table: ``table_file`` as shipped, or ``compute()`` when ``rerun`` (which needs ``pipe``)."""
    if rerun:
        if pipe is None:
            raise ValueError("rerun=True needs the world pipeline: notebook_table(pipe, rerun=True)")
        return compute()
    if not table_file.is_file():
        raise FileNotFoundError(f"{table_file} is missing; recompute it: notebook_table(pipe, rerun=True)")
    return json.loads(table_file.read_text())


def scale_option(default: float):
    """The studies' ``--scale`` (one guidance scale for every edit; the held-out run uses the pre-registration's best
    scale), as a :func:`command` option: checked by :class:`romlib.config.EditConfig`'s range."""
    from ..config import EditConfig

    def convert(value) -> float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"--scale={value!r} is not a number; accepted: a finite number in (0, 10000)") from None
        try:
            return EditConfig(scale=value).validate().scale
        except ValueError as e:
            raise ValueError(f"--{e}") from None

    return ("--scale", {"default": f"{default:g}", "help": f"guidance scale of every edit (default {default:g})"},
            convert)


def command(argv, *, prog: str, doc: str, n_cases: int, seed: int, out: str, run: Callable,
            format_table: Callable[[dict], str], options=()) -> int:
    """The studies' command line: ``--cases``, ``--seed``, ``--weights``, ``--out``, ``--threads``, ``--quiet`` and
    the study's own ``options`` (``(flag, kwargs, convert)``: ``convert(value)`` may raise ValueError, named as a
    usage error). ``run(pipe, args, out_folder)`` returns the table, written to ``out/table.json`` and printed with
    ``format_table``."""
    import argparse

    import torch

    from ..pipeline import ROMPipeline
    from . import backend as world_backend

    p = argparse.ArgumentParser(prog=prog, description=doc.split(";")[0])
    p.add_argument("--cases", type=int, default=n_cases, help=f"number of cases (default {n_cases})")
    p.add_argument("--seed", type=int, default=seed, help=f"case and noise seed (default {seed})")
    p.add_argument("--weights", default=None, help=f"weights folder (default: ${world_backend.WEIGHTS_ENV}, else shipped)")
    p.add_argument("--out", default=out, help=f"folder for the journal(s) and table.json (default {out})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for flag, kwargs, _ in options:
        p.add_argument(flag, **kwargs)
    args = p.parse_args(argv)
    if args.cases < 1:
        p.error(f"--cases must be >= 1, got {args.cases}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    for flag, _, convert in options:
        name = flag.lstrip("-").replace("-", "_")
        try:
            setattr(args, name, convert(getattr(args, name)))
        except ValueError as e:
            p.error(str(e))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pipe = ROMPipeline(world_backend.load_backend("cpu", args.weights))
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    table = run(pipe, args, folder)
    (folder / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    print(format_table(table))
    return 0

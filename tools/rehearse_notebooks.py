"""Run every notebook on the real path (``ROMLIB_BACKEND=glide``) against a mirror, and print a table.

    python tools/rehearse_notebooks.py                      # build random-weight stand-ins, serve them, run all
    python tools/rehearse_notebooks.py --only 00 --reduced  # notebook 00 with 1 sample, 2 + 2 steps (CPU)
    python tools/rehearse_notebooks.py --mirror http://host:8000   # an existing mirror (real weights too)

Without ``--mirror``, the files are built by :func:`tests.support.rehearsal.build_mirror` (random weights in the
official formats: 4.4 GB, 7.2 GB with the baselines when a chosen notebook loads them, CLIPSeg's 0.6 GB when one uses it; in ``--work``, a
temporary folder by default; a kept ``--work`` reuses them) and served from 127.0.0.1. Each notebook runs in a fresh kernel with ``ROMLIB_MIRROR``, a fresh
``ROMLIB_CACHE`` shared by the notebooks, ``ROMLIB_BACKEND=glide`` and ``ROMLIB_PROGRESS=0``; the
table gives its seconds, the peak GPU memory its kernel allocated (``torch.cuda.max_memory_allocated``)
and its first error. ``--reduced`` caps every ``edit``/``compare``/``trace`` at 1 sample and 2 base and
2 upsampler steps, Blended at 2 of its own steps (for the CPU; each method gets only the knobs it reads:
:func:`tests.support.rehearsal.reduce_budget`); without it each notebook runs its own budget at full size.
``--markdown`` prints the table as Markdown (for docs/reproduce.md). Exit code 1 if a notebook failed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REDUCE = f"""# rehearsal: the reduced budget (tests.support.rehearsal.REDUCED; each method gets only the knobs it reads)
import sys
sys.path.insert(0, {str(ROOT)!r})
import tests.support.rehearsal
tests.support.rehearsal.reduce_budget()
"""
REPORT = '''import json as _json, torch as _torch
print("REHEARSAL_GPU_PEAK", _json.dumps(_torch.cuda.max_memory_allocated() if _torch.cuda.is_available() else None))
'''


def run_notebook(path: Path, env: dict, *, reduced: bool, timeout: int, save: Path | None = None) -> dict:
    """Execute one notebook in a fresh kernel; ``{"notebook", "seconds", "gpu_peak", "error"}``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    if reduced:
        nb.cells.insert(0, nbformat.v4.new_code_cell(REDUCE))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    error, t0 = None, time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1][:200]
    except (CellTimeoutError, DeadKernelError, RuntimeError) as e:
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - t0
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save / path.name)
    peak = None
    for cell in nb.cells[-1:]:
        for out in cell.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if line.startswith("REHEARSAL_GPU_PEAK"):
                    peak = json.loads(line.split(None, 1)[1])
    return {"notebook": path.name, "seconds": seconds, "gpu_peak": peak, "error": error}


def table(rows: list[dict], markdown: bool) -> str:
    head = ("notebook", "seconds", "peak GPU memory", "errors")
    body = [(r["notebook"], f"{r['seconds']:.0f}", "n/a (CPU)" if r["gpu_peak"] is None else f"{r['gpu_peak'] / 2**30:.1f} GiB",
             r["error"] or "none") for r in rows]
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [head, *body])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", default=None, help="an existing ROMLIB_MIRROR (http(s) address or folder); default: build one")
    ap.add_argument("--work", default=None, help="folder for the built files and the cache (default: a temporary folder)")
    ap.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 03 (default: all)")
    ap.add_argument("--reduced", action="store_true", help="1 sample, 2 base + 2 upsampler steps per edit (CPU)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--save", default=None, help="write the executed notebooks into this folder")
    args = ap.parse_args(argv)

    from romlib import hub
    from tests.support.mirror import MirrorServer
    from tests.support.rehearsal import BUILDABLE, build_mirror

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.only:
        notebooks = [p for p in notebooks if any(p.name.startswith(o) for o in args.only)]
    tmp = None
    work = Path(args.work) if args.work else Path(tmp := tempfile.mkdtemp(prefix="romlib-rehearsal-"))
    server = None
    try:
        mirror = args.mirror
        if mirror is None:
            t0 = time.perf_counter()
            baselines = any("baselines=True" in nb.read_text() for nb in notebooks)  # only if a notebook loads them
            wanted = hub.GLIDE_BACKEND + hub.EXAMPLES + (hub.BASELINES if baselines else ())
            names = [n for n in BUILDABLE if n in wanted]
            build_mirror(work / "mirror", names, reuse=True)
            if any("'clipseg'" in nb.read_text() for nb in notebooks):  # notebook 02's second segmenter
                from tests.support.rehearsal_sd import build_clipseg_mirror

                if not all((work / "mirror" / hub.REGISTRY[n].filename).is_file() for n in hub.CLIPSEG):
                    build_clipseg_mirror(work / "mirror", full_size=True)
            print(f"built the stand-in files in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            server = MirrorServer(work / "mirror", max_seconds=24 * 3600).start()
            mirror = server.url
        env = {"ROMLIB_MIRROR": mirror, "ROMLIB_CACHE": str(work / "cache"), "ROMLIB_BACKEND": "glide",
               "ROMLIB_PROGRESS": "0", "MPLBACKEND": "Agg", "ROMLIB_OFFLINE": "", "HF_HUB_OFFLINE": ""}
        rows = []
        for nb in notebooks:
            print(f"running {nb.name} ...", file=sys.stderr, flush=True)
            rows.append(run_notebook(nb, env, reduced=args.reduced, timeout=args.timeout,
                                     save=Path(args.save) if args.save else None))
            print(f"  {rows[-1]['seconds']:.0f} s, error: {rows[-1]['error']}", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.close()
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    budget = "reduced budget (1 sample, 2 + 2 steps)" if args.reduced else "each notebook's own budget"
    print(f"ROMLIB_BACKEND=glide, random-weight stand-ins at full size, {budget}:")
    print(table(rows, args.markdown))
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Execute the notebooks on the embedded backend and store their outputs, figures included.

    python tools/refresh_notebooks.py [notebooks/03_ablation_dilation.ipynb ...]

So that GitHub, nbviewer and Colab (before "Run all") show every figure, each code cell keeps its
outputs (text and PNG figures) and an execution count. What is removed: widget views (they need a
kernel; every widget helper draws a static figure first) and their saved state, progress bars
(``ROMLIB_PROGRESS=0``), execution timing and cell metadata; notebook metadata is reduced to the
kernel spec. nbval compares only the cells starting with ``# NBVAL_CHECK_OUTPUT`` (``--nbval-lax``).
Prints each notebook's run time and size; the whole folder must stay under :data:`MAX_BYTES`.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
MARK = "# NBVAL_CHECK_OUTPUT"
MAX_BYTES = 8_000_000
WIDGET = "application/vnd.jupyter.widget-view+json"
#: the environment the notebooks are executed in (the same as nbval's, see notebooks/conftest.py)
ENV = {"ROMLIB_BACKEND": "offline", "MPLBACKEND": "Agg", "ROMLIB_PROGRESS": "0", "ROMLIB_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def checked(cell) -> bool:
    return cell.cell_type == "code" and any(line.strip() == MARK for line in cell.source.splitlines())


def _keep(out) -> bool:
    """Drop widget views and stray progress-bar text (carriage-return redraws on stderr)."""
    if out.get("output_type") in ("display_data", "execute_result") and WIDGET in out.get("data", {}):
        return False
    return not (out.get("output_type") == "stream" and out.get("name") == "stderr" and "\r" in out.get("text", ""))


def strip(nb) -> None:
    """Keep outputs (figures included) with consecutive execution counts; drop metadata and widgets."""
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    n = 0
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type != "code":
            continue
        n += 1
        cell.execution_count = n
        cell.outputs = [o for o in cell.outputs if _keep(o)]
        for out in cell.outputs:
            if "execution_count" in out:
                out["execution_count"] = n
            if out.get("output_type") in ("display_data", "execute_result"):
                out["metadata"] = {}


def refresh(path: Path, timeout: int = 1200) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ.update(ENV)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - t0
    strip(nb)
    nbformat.write(nb, path)
    print(f"refreshed {path.relative_to(ROOT)}: {seconds:.0f} s, {path.stat().st_size / 1e3:.0f} kB")
    return seconds


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    failed = []
    for p in paths:
        try:
            refresh(p)
        except Exception as e:  # noqa: BLE001 - report every notebook, then fail
            failed.append(p.name)
            print(f"FAILED {p.name}: {type(e).__name__}: {str(e)[-2000:]}")
    total = sum(p.stat().st_size for p in (ROOT / "notebooks").iterdir() if p.is_file())
    print(f"notebooks/: {total / 1e6:.2f} MB (limit {MAX_BYTES / 1e6:.0f} MB)")
    if failed:
        sys.exit(f"not refreshed (left as they were): {failed}")
    if total > MAX_BYTES:
        sys.exit(f"notebooks/ is {total / 1e6:.2f} MB, over {MAX_BYTES / 1e6:.0f} MB: lower the figures' dpi in rl.nb.show")

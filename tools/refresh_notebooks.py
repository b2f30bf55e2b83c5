"""Execute the notebooks on the embedded backend and keep outputs only where nbval checks them.

    python tools/refresh_notebooks.py [notebooks/03_ablation_dilation.ipynb ...]

Checked cells (``# NBVAL_CHECK_OUTPUT`` as their first line) keep their outputs and an execution
count; every other cell is stripped of outputs and counts, and notebook metadata is reduced to the
kernel spec. Run it after changing a notebook or the code its checked cells print.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parent.parent
MARK = "# NBVAL_CHECK_OUTPUT"


def checked(cell) -> bool:
    return cell.cell_type == "code" and any(line.strip() == MARK for line in cell.source.splitlines())


def strip(nb, keep_outputs: bool) -> None:
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    n = 0
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type != "code":
            continue
        if keep_outputs and checked(cell):
            n += 1
            cell.execution_count = n
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = n
                out.pop("metadata", None) if out.get("output_type") == "stream" else None
        else:
            cell.outputs, cell.execution_count = [], None


def refresh(path: Path, timeout: int = 1200) -> None:
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ, ROMLIB_BACKEND=os.environ.get("ROMLIB_BACKEND", "shapes"), MPLBACKEND="Agg")
    os.environ.update(env)
    ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(path.parent)}})
    strip(nb, keep_outputs=True)
    nbformat.write(nb, path)
    print(f"refreshed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for p in paths:
        refresh(p.resolve())

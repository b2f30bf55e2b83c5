"""The committed notebooks: thin, stripped, and regression-checked for real.

nbval itself runs every notebook (``testpaths`` includes ``notebooks/``); these tests check the
files' shape and prove the output checking is live: a deliberately altered stored output fails.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MARK = "# NBVAL_CHECK_OUTPUT"
EXPECTED = ["00_quickstart", "01_diffusion_and_guidance", "02_referring_masks", "03_ablation_dilation",
            "04_ablation_guidance", "05_ablation_ranking", "06_user_study"]


def _checked(cell) -> bool:
    return cell.cell_type == "code" and any(line.strip() == MARK for line in cell.source.splitlines())


def test_all_seven_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_and_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, "execution metadata must be stripped"
    code = [c for c in nb.cells if c.cell_type == "code"]
    checked = [c for c in code if _checked(c)]
    assert checked, "every notebook has at least one checked cell"
    for c in code:
        assert not c.metadata, f"cell metadata left in {c.source[:40]!r}"
        if _checked(c):
            assert c.outputs and c.execution_count, f"checked cell without stored output: {c.source[:60]!r}"
        else:
            assert not c.outputs and c.execution_count is None, f"unchecked cell keeps output: {c.source[:60]!r}"
            assert MARK not in c.source, f"a trailing {MARK} is ignored by nbval: {c.source[:60]!r}"
        assert len(c.source.splitlines()) <= 12, f"code cell too long (romlib holds the logic): {c.source[:60]!r}"
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "colab.research.google.com" in md and "Expected time" in md


def _run_nbval(path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROMLIB_BACKEND="shapes", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "pytest", str(path), "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           "--nbval-sanitize-with", str(ROOT / "notebooks" / "sanitize.cfg")],
                          cwd=path.parent, env=env, capture_output=True, text=True, timeout=600)


def test_output_checking_is_live(tmp_path):
    """Notebook 06 up to its checked cell: passes as stored, fails once the stored output is altered."""
    nb = nbformat.read(ROOT / "notebooks" / "06_user_study.ipynb", as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if _checked(c))
    nb.cells = nb.cells[:last + 1]
    good = tmp_path / "as_stored.ipynb"
    nbformat.write(nb, good)
    out = nb.cells[last].outputs[0]
    text = out["text"]
    digit = next(ch for ch in text if ch.isdigit())
    out["text"] = text.replace(digit, str((int(digit) + 1) % 10), 1)
    bad = tmp_path / "altered.ipynb"
    nbformat.write(nb, bad)

    ok = _run_nbval(good)
    assert ok.returncode == 0, ok.stdout[-3000:]
    broken = _run_nbval(bad)
    assert broken.returncode != 0, "an altered stored output passed: nbval is not checking this cell"
    assert "failed" in broken.stdout, broken.stdout[-3000:]

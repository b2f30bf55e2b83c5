"""The committed notebooks: each its own source, executed, readable without running, and regression-checked for real.

nbval itself runs every notebook (``testpaths`` includes ``notebooks/``); these tests check the
stored files (outputs and figures present, nothing a reader cannot render, the blind study blind),
that figures survive the Agg backend, that the output checking is live (an altered stored output
fails), that the Colab install cell fails helpfully, and that a built wheel runs ``romlib demo``.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(1200)  # whole notebooks in a child pytest, a wheel built and installed: minutes each
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MARK = "# NBVAL_CHECK_OUTPUT"
EXPECTED = ["00_quickstart", "01_diffusion_and_guidance", "02_referring_masks", "03_ablation_dilation",
            "04_ablation_guidance", "05_ablation_ranking", "06_user_study", "07_latent_model",
            "08_write_the_loop"]
#: a cell meant to draw calls one of these; each must leave at least one PNG in the stored outputs
DRAWS = re.compile(r"rl\.nb\.(show|explore|scrubber)\(|session\.show\(")
#: a cell that makes a figure must display it explicitly (under Agg an implicit figure vanishes)
MAKES_FIGURE = re.compile(r"\.grid\(|plot_\w+\(|image_row\(|_figure\(|\.compare\(")
METHOD_NAMES = re.compile(r"\b(ccf-direction|cf-original|ccf|cf|clip|blended)\b", re.I)
WIDGET = "application/vnd.jupyter.widget-view+json"


def _checked(cell) -> bool:
    return cell.cell_type == "code" and any(line.strip() == MARK for line in cell.source.splitlines())


def _pngs(cell) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def _texts(cell) -> str:
    parts = []
    for o in cell.outputs:
        parts.append(o.get("text", ""))
        for mime, v in o.get("data", {}).items():
            if mime.startswith("text/"):
                parts.append(v if isinstance(v, str) else "".join(v))
    return "\n".join(parts)


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_all_nine_notebooks_are_there_with_their_shared_parts():
    """Each notebook is its own source; the checker keeps what a generator used to guarantee."""
    assert [p.stem for p in NOTEBOOKS] == EXPECTED
    builder = _load_builder()
    found = [msg for p in NOTEBOOKS for msg in builder.problems(p)]
    assert not found, "\n".join(found) + "\n(fix the notebook; install cells and badges: tools/build_notebooks.py --sync)"


def _mutated(tmp_path, change) -> list[str]:
    """The checker's findings on a copy of notebook 00 (and its Next target) after ``change(cells)``."""
    builder = _load_builder()
    for p in NOTEBOOKS[:2]:
        shutil.copy(p, tmp_path / p.name)
    path = tmp_path / NOTEBOOKS[0].name
    nb = nbformat.read(path, as_version=4)
    change(nb.cells)
    nbformat.write(nb, path)
    return builder.problems(path)


def _install(cells):
    return next(c for c in cells if "ROMLIB_SOURCE =" in c.source)


def _before(cells):
    return next(c for c in cells if c.source.startswith("## Before you start"))


def _first_checked(cells):
    return next(c for c in cells if _checked(c))


@pytest.mark.parametrize("change, says", [
    (lambda cells: _install(cells).__setitem__("source", _install(cells).source.replace("romlib/romlib", "someone/else")),
     "not the install cell"),
    (lambda cells: cells[0].__setitem__("source", cells[0].source.replace("colab-badge.svg", "badge.svg")), "Colab badge"),
    (lambda cells: cells[0].__setitem__("source", cells[0].source.replace("# ", "", 1)), "'# ' title"),
    (lambda cells: cells[1].__setitem__("source", cells[1].source.replace("Expected time", "Time")), "'Expected time'"),
    (lambda cells: cells[-1].__setitem__("source", cells[-1].source.replace("## Exercises", "## Things to try")),
     "lacks '## Exercises'"),
    (lambda cells: cells[-1].__setitem__("source", cells[-1].source.replace(".ipynb)", ".md)")), "**Next:**"),
    (lambda cells: _first_checked(cells).__setitem__(
        "source", _first_checked(cells).source.replace(MARK + "\n", "") + "  " + MARK), "not as its first line"),
    (lambda cells: setattr(_first_checked(cells), "execution_count", None), "execution_count"),
    (lambda cells: _before(cells).__setitem__("source", _before(cells).source.replace("**Learning objectives.**", "")),
     "'**Learning objectives.**'"),
    (lambda cells: _before(cells).__setitem__("source", _before(cells).source.replace("**Paper.**", "Paper")), "'**Paper.**'"),
    (lambda cells: _before(cells).__setitem__("source", _before(cells).source + " word" * 200), "words"),
    (lambda cells: cells[0].__setitem__("source", cells[0].source + "\n\n[a term](../docs/no_such_file.md#ccf)"),
     "no such file"),
], ids=["install", "badge", "title", "header", "footer", "next", "marker", "count", "objectives", "paper", "long", "link"])
def test_checker_catches_each_missing_part(tmp_path, change, says):
    found = _mutated(tmp_path, change)
    assert any(says in msg for msg in found), f"expected a finding with {says!r}, got {found}"


def test_sync_rewrites_install_cell_and_badge_and_keeps_outputs(tmp_path):
    builder = _load_builder()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "docs").symlink_to(ROOT / "docs")  # the notebooks' links into ../docs resolve
    for p in NOTEBOOKS[3:5]:  # 03 and the notebook its Next link names
        shutil.copy(p, tmp_path / "notebooks" / p.name)
    path = tmp_path / "notebooks" / NOTEBOOKS[3].name
    assert builder.sync(path) is False, "the committed notebook is already in sync"
    assert builder.sync(path, source="romlib==9.9", repo="class/fork") is True
    nb = nbformat.read(path, as_version=4)
    assert "ROMLIB_SOURCE = 'romlib==9.9'" in _install(nb.cells).source
    assert "github/class/fork/blob/main/notebooks/03_ablation_dilation.ipynb" in nb.cells[0].source
    assert sum(_pngs(c) for c in nb.cells) == sum(_pngs(c) for c in nbformat.read(NOTEBOOKS[3], as_version=4).cells)
    assert builder.problems(path, source="romlib==9.9", repo="class/fork") == []
    assert any("install cell" in m for m in builder.problems(path))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_executed_and_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, "execution and widget metadata must be stripped"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any(_checked(c) for c in code), "every notebook has at least one checked cell"
    for n, c in enumerate(code, 1):
        head = c.source[:60]
        assert not c.metadata, f"cell metadata left in {head!r}"
        assert c.execution_count == n, f"stored notebook not executed in order (refresh_notebooks.py): {head!r}"
        assert MARK not in c.source or _checked(c), f"a trailing {MARK} is ignored by nbval: {head!r}"
        # a cell where the student writes a function (it ends in rl.check) may hold the function: up to 18 lines
        limit = 18 if "rl.check(" in c.source and "def " in c.source else 12
        assert len(c.source.splitlines()) <= limit, f"code cell too long (romlib holds the logic): {head!r}"
        for o in c.outputs:
            assert WIDGET not in o.get("data", {}), f"widget view stored (needs a kernel to render): {head!r}"
            assert "\r" not in o.get("text", ""), f"progress bar stored: {head!r}"
        if _checked(c):
            assert c.outputs and not _pngs(c), f"a checked cell prints rounded numbers, never figures: {head!r}"
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for needed in ("colab.research.google.com", "Expected time", "What you should see", "## Exercises", "**Next:**"):
        assert needed in md, f"{path.stem}: markdown lacks {needed!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_exists_in_the_stored_outputs(path):
    """Each cell meant to draw carries a PNG (stored under Agg, as nbval runs); figures are displayed explicitly."""
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        if DRAWS.search(c.source):
            assert _pngs(c), f"{path.stem}: a cell meant to draw stored no image: {c.source[:80]!r}"
        if MAKES_FIGURE.search(c.source) and "rl.study.session.cases_from_pipeline" not in c.source:
            assert DRAWS.search(c.source), f"{path.stem}: figure made but not displayed with rl.nb.show: {c.source[:80]!r}"


def test_notebooks_folder_is_small():
    total = sum(p.stat().st_size for p in (ROOT / "notebooks").iterdir() if p.is_file())
    assert total <= 8_000_000, f"notebooks/ is {total / 1e6:.1f} MB (limit 8 MB)"
    assert sum(_pngs(c) for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells) >= 20


def test_blind_study_widget_shows_no_method_names():
    nb = nbformat.read(ROOT / "notebooks" / "06_user_study.ipynb", as_version=4)
    widget = [c for c in nb.cells if c.cell_type == "code" and "session.show(" in c.source]
    assert len(widget) == 1
    cell = widget[0]
    assert cell.outputs, "the widget cell was not executed"
    found = METHOD_NAMES.findall(_texts(cell))
    assert not found, f"the blind ranking cell shows method names {found}"
    assert _pngs(cell) == 1, "only the blinded figure (labels A–D) may render in the widget cell"
    assert "compare(" not in cell.source
    case_cell = next(c for c in nb.cells if "cases_from_pipeline" in c.source)
    assert not _pngs(case_cell), "the comparison figures (with method names) must not render"


def test_figures_survive_agg_and_undisplayed_ones_vanish(tmp_path):
    """Under MPLBACKEND=Agg, rl.nb.show gives a PNG output; a figure left to the backend gives none
    (which is why every notebook figure goes through rl.nb.show)."""
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import matplotlib.pyplot as plt, romlib as rl\nfig = plt.figure(); plt.plot([1, 2])"),
                nbformat.v4.new_code_cell("fig = plt.figure(); plt.plot([1, 2])\nrl.nb.show(fig)")]
    env = dict(os.environ, MPLBACKEND="Agg")
    old = os.environ.copy()
    os.environ.update(env)
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert _pngs(nb.cells[0]) == 0
    assert _pngs(nb.cells[1]) == 1


def _run_nbval(path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROMLIB_BACKEND="offline", MPLBACKEND="Agg", ROMLIB_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "pytest", str(path), "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           # one token: as two, pytest reads the path as an argument and takes the repository's
                           # pytest.ini (its plugins need the repository on sys.path); here no ini is wanted
                           "--nbval-sanitize-with=" + str(ROOT / "notebooks" / "sanitize.cfg")],
                          cwd=path.parent, env=env, capture_output=True, text=True, timeout=600)


def test_output_checking_is_live(tmp_path):
    """Notebook 06 up to its first checked cell: passes as stored, fails once the stored output is altered."""
    nb = nbformat.read(ROOT / "notebooks" / "06_user_study.ipynb", as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if _checked(c))
    nb.cells = [c for i, c in enumerate(nb.cells[:first + 1]) if i == first or "plot_" not in c.source]
    good = tmp_path / "as_stored.ipynb"
    nbformat.write(nb, good)
    out = nb.cells[-1].outputs[0]
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


def _install_cell() -> str:
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code" and "ROMLIB_SOURCE" in c.source)


def test_install_cell_uses_the_one_source_constant():
    builder = _load_builder()
    for p in NOTEBOOKS:
        cell = next(c.source for c in nbformat.read(p, as_version=4).cells if "ROMLIB_SOURCE =" in c.source)
        assert cell == builder.INSTALL and f"ROMLIB_SOURCE = {builder.PACKAGE_SOURCE!r}" in cell
    readme = (ROOT / "README.md").read_text()
    assert "## Publishing" in readme and "build_notebooks.py --sync" in readme


@pytest.mark.parametrize("with_wheel", [False, True], ids=["source", "wheel"])
def test_install_cell_failure_says_what_to_do(tmp_path, with_wheel):
    """Without romlib (``python -S``: no site-packages) and an unreachable source, the cell prints advice, no traceback."""
    src = re.sub(r"ROMLIB_SOURCE = .*?  #", f"ROMLIB_SOURCE = {str(tmp_path / 'nowhere')!r}  #", _install_cell())
    if with_wheel:
        (tmp_path / "romlib-0.0.0-py3-none-any.whl").write_bytes(b"not a wheel")
    r = subprocess.run([sys.executable, "-S", "-c", src], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "What to do" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert ("romlib-0.0.0-py3-none-any.whl" in r.stdout) == with_wheel


def test_wheel_installs_into_a_fresh_venv_and_runs_the_demo(tmp_path):
    """Build the wheel from a copy of the source, install it into a new venv that borrows this
    environment's packages (torch is not reinstalled), and run ``romlib demo`` from it: the
    ShapesWorld weights must be inside the wheel, and JupyterLab's default romlib ships (save widget state:
    docs/teaching.md, "Reopening a notebook") must land in the venv's share/jupyter/lab/settings/overrides.d."""
    src = tmp_path / "src"
    src.mkdir()
    for f in ("setup.py", "README.md"):
        shutil.copy(ROOT / f, src / f)
    shutil.copytree(ROOT / "romlib", src / "romlib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "jupyter-config", src / "jupyter-config")
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                        str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next(dist.glob("romlib-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # borrow this environment's packages (torch, ...) after the venv's own site-packages
    Path(site, "_borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lab_default = venv / "share" / "jupyter" / "lab" / "settings" / "overrides.d" / "romlib-widget-state.json"
    assert lab_default.is_file(), f"the wheel did not install {lab_default.relative_to(venv)}"
    assert json.loads(lab_default.read_text()) == {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(ROMLIB_OFFLINE="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    where = subprocess.run([str(py), "-c", "import romlib; print(romlib.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(site), f"romlib not imported from the venv: {where.stdout} {where.stderr[-500:]}"
    demo = subprocess.run([str(venv / "bin" / "romlib"), "demo", "--out", str(tmp_path / "demo"), "--samples", "2", "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert len(list((tmp_path / "demo").glob("*/result.json"))) == 1  # a new run folder inside --out


def test_study_cases_leave_no_figure_for_the_inline_backend():
    """Colab's inline backend displays every figure still open at the end of a cell: building the blind
    study's cases must close the comparison figures (they carry the method names)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from romlib.study.session import cases_from_pipeline

    class Result:
        best = Image.new("RGB", (8, 8))

    class FakePipe:
        def compare(self, image, ref, target, *, guidances, **kwargs):
            fig, ax = plt.subplots()
            ax.set_title(" vs ".join(guidances))
            return {g: Result() for g in guidances}, fig

    plt.close("all")
    cases = cases_from_pipeline(FakePipe(), [(Image.new("RGB", (8, 8)), "the red circle", "a blue circle")] * 2,
                                ("cf", "ccf"))
    assert [sorted(c.outputs) for c in cases] == [["ccf", "cf"]] * 2
    assert plt.get_fignums() == [], "an open comparison figure would render under the blind widget"


def _fake_pipe(segment):
    from types import SimpleNamespace

    return SimpleNamespace(segment=segment, backend=SimpleNamespace(base_model=SimpleNamespace(cfg=SimpleNamespace(image_size=64))))


def _seg(mask):
    from romlib.contracts import Segmentation

    return Segmentation(mask=mask, box=(0.0, 0.0, 1.0, 1.0), score=0.9)


def test_referred_mask_erodes_a_found_object():
    from PIL import Image

    from romlib.teach.nb import referred_mask

    mask = torch.zeros(90, 120, dtype=torch.bool)
    mask[30:60, 40:80] = True
    seg, got = referred_mask(_fake_pipe(lambda image, ref, **kw: _seg(mask)), Image.new("RGB", (120, 90)), "the cat", erode=3)
    assert seg.mask is mask and int(got.sum()) == 28 * 38  # one pixel off each side


def test_referred_mask_goes_on_with_a_named_fallback_when_nothing_is_found(capsys):
    """An empty (or, once eroded, empty) mask and a NoObjectFound each say so and go on; never a traceback."""
    from PIL import Image

    from romlib.contracts import AmbiguousReference, NoObjectFound
    from romlib.teach.nb import centred_box_mask, referred_mask

    image = Image.new("RGB", (120, 90))
    speckle = torch.zeros(90, 120, dtype=torch.bool)
    speckle[::4, ::4] = True  # a random-weight MDETR's mask: many pixels, none survives erosion
    seg, got = referred_mask(_fake_pipe(lambda image, ref, **kw: _seg(speckle)), image, "the cat", erode=3)
    out = capsys.readouterr().out
    assert "Nothing found" in out and "'the cat'" in out and "centred box" in out
    assert got.equal(centred_box_mask(image)) and int(got.sum()) == 30 * 40

    calls = []

    def segment(image, ref, best_anyway=False, **kw):
        calls.append(best_anyway)
        if not best_anyway:
            raise NoObjectFound(ref, 0.12, (1, 2, 3, 4), 0.5)
        return _seg(centred_box_mask(image))

    seg, got = referred_mask(_fake_pipe(segment), image, "a purple elephant")
    out = capsys.readouterr().out
    assert calls == [False, True] and "best score 0.120" in out and "best_anyway=True" in out
    assert got.equal(centred_box_mask(image))

    def ambiguous(image, ref, best_anyway=False, **kw):
        if not best_anyway:
            raise AmbiguousReference(ref, [("query 1", (0, 0, 9, 9), 0.9), ("query 2", (50, 50, 59, 59), 0.88)])
        return _seg(centred_box_mask(image))

    seg, got = referred_mask(_fake_pipe(ambiguous), image, "the cat")
    out = capsys.readouterr().out
    assert "No single object found" in out and "matches 2 objects" in out and "best_anyway=True" in out

"""Check what every notebook shares, and sync its install cell from the one package source.

Each ``notebooks/*.ipynb`` is its own source: edit it in Jupyter or Colab, then

    python tools/build_notebooks.py --check    # the shared parts are there (tests/test_notebooks.py runs the same)
    python tools/build_notebooks.py --sync     # rewrite every install cell and Colab badge from PACKAGE_SOURCE, REPO
    python tools/refresh_notebooks.py notebooks/03_ablation_dilation.ipynb   # re-execute what you changed

What every notebook has (``problems`` lists what is missing, by notebook and cell):

* a header before the first code cell: a ``# `` title, the Colab badge of :func:`badge`, the lines of
  :data:`HEADER_NEEDS` (learning objectives, prerequisites, the paper by section and equation);
* markdown cells of at most :data:`MAX_WORDS` words (collapsed ``<details>`` solutions aside);
* the install cell :data:`INSTALL` as its first code cell, identical everywhere, then the setup cell :func:`setup_cell` (:data:`SETUP`, or naming an offline backend of
  :data:`OFFLINE`);
* a footer: ``## Summary``, then ``## Exercises``, then a last markdown cell with ``**Next:**`` and a link to
  another notebook of the folder;
* every relative link resolving, to a file and, for ``#anchor`` links into ``.md`` files, to a heading or an
  ``<a id="anchor">`` there (the glossary's terms);
* each checked exercise of :mod:`romlib.teach.exercises` for the notebook (``rl.check("<id>", ...)`` in a code
  cell) followed by its solution in a collapsed ``<details>`` markdown cell;
* checked cells (nbval compares their output): ``# NBVAL_CHECK_OUTPUT`` as their *first* line (nbval 0.11
  ignores the marker anywhere else), stored outputs and an execution count.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NOTEBOOKS = ROOT / "notebooks"
REPO = "romlib/romlib"  # GitHub owner/name for the Colab badges
#: Where the install cell gets romlib when it is not importable and no ``romlib-*.whl`` lies in the
#: notebook's folder: any pip requirement source (a git URL, ``romlib==0.1.0`` on an index, an https
#: wheel). Set it once here before publishing, then ``--sync`` (README, "Publishing").
PACKAGE_SOURCE = f"git+https://github.com/{REPO}"
MARK = "# NBVAL_CHECK_OUTPUT"
#: what the header (the markdown before the first code cell) must say, besides its title and badge
HEADER_NEEDS = ("What you should see", "Expected time", "## Before you start", "**Learning objectives.**",
                "**Prerequisites.**", "**Paper.**", "§")
#: a student reads short cells: no markdown cell over this many words (``\w+``; collapsed ``<details>`` cells aside)
MAX_WORDS = 180
FOOTER_NEEDS = ("## Summary", "## Exercises", "**Next:**")


def badge(name: str, repo: str = REPO) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}.ipynb)")


BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)")


def install_cell(source: str = PACKAGE_SOURCE) -> str:
    """The first code cell of every notebook: installs romlib in Colab, does nothing where it is importable."""
    return (
        "# Install romlib when missing (Colab): a romlib-*.whl in this folder first, else ROMLIB_SOURCE. Elsewhere: nothing.\n"
        "import glob, importlib.util, os, subprocess, sys\n"
        f"ROMLIB_SOURCE = {source!r}  # set in tools/build_notebooks.py (README: Publishing)\n"
        "if importlib.util.find_spec('romlib') is None:\n"
        "    wheels = sorted(glob.glob('romlib-*.whl'))\n"
        "    spec = os.path.abspath(wheels[-1]) + '[notebooks]' if wheels else 'romlib[notebooks] @ ' + ROMLIB_SOURCE\n"
        "    pip = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', spec], capture_output=True, text=True)\n"
        "    print('installed', spec) if pip.returncode == 0 else print(\n"
        "        f'Could not install romlib from {spec!r}:\\n{pip.stderr.strip()[-800:]}\\n\\nWhat to do: put a wheel (romlib-*.whl; '\n"
        "        'build it with `pip wheel --no-deps .` in the romlib repository) into this folder (Colab: the folder icon, '\n"
        "        'Upload), or set ROMLIB_SOURCE above to a pip source you can reach; then run this cell again.')")


INSTALL = install_cell()
#: the embedded backends a notebook's setup cell may name as its offline one, and how the cell says it
OFFLINE = {None: "ShapesWorld", "world": "the embedded world"}


def setup_cell(offline: str | None = None) -> str:
    """The second code cell: ``rl.nb.setup()``, or ``rl.nb.setup(offline='world')`` for a notebook that runs on the
    64 px world where the real models are not at hand."""
    arg = "" if offline is None else f"offline={offline!r}"
    return ("import romlib as rl\n"
            f"env = rl.nb.setup({arg})  # GPU + internet: the real models; offline or CPU: {OFFLINE[offline]} "
            "(override: ROMLIB_BACKEND)")


SETUP = setup_cell()


def checked(cell) -> bool:
    """A cell nbval compares: the marker on a line of its own (first, see :func:`problems`)."""
    return cell.cell_type == "code" and any(line.strip() == MARK for line in cell.source.splitlines())


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(md: Path) -> set[str]:
    """GitHub's anchors of a Markdown file: its headings' slugs and every ``id="..."``."""
    text = md.read_text()
    slugs = {re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", h.strip().lower())) for h in re.findall(r"(?m)^#+ (.+)$", text)}
    return slugs | set(re.findall(r'id="([^"]+)"', text))


def _link_problems(name: str, folder: Path, cells) -> list[str]:
    out = []
    for i, c in enumerate(cells):
        if c.cell_type != "markdown":
            continue
        for target in LINK.findall(c.source):
            if "://" in target or target.startswith(("mailto:", "#")):
                continue
            file, _, anchor = target.partition("#")
            where = folder / file
            if not where.exists():
                out.append(f"{name}: cell {i} links to {target!r}: no such file")
            elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
                out.append(f"{name}: cell {i} links to {target!r}: {file} has no anchor #{anchor}")
    return out


def _exercise_problems(name: str, cells) -> list[str]:
    from romlib.teach.exercises import for_notebook

    out = []
    for e in for_notebook(name[:2]):
        at = next((i for i, c in enumerate(cells) if c.cell_type == "code"
                   and re.search(rf"rl\.check\(\s*['\"]{re.escape(e.id)}['\"]", c.source)), None)
        if at is None:
            out.append(f"{name}: lacks the checked exercise {e.id!r} (a code cell: its stub, then rl.check({e.id!r}, ...))")
        elif at + 1 >= len(cells) or cells[at + 1].cell_type != "markdown" or "<details" not in cells[at + 1].source:
            out.append(f"{name}: exercise {e.id!r} is not followed by its solution in a collapsed <details> markdown cell")
    return out


def problems(path: Path, *, source: str = PACKAGE_SOURCE, repo: str = REPO) -> list[str]:
    """What ``path`` lacks of the shared parts, one sentence each (empty: all there)."""
    name, nb = path.stem, nbformat.read(path, as_version=4)
    cells, out = nb.cells, []
    code_at = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    if not code_at:
        return [f"{name}: no code cell"]
    header = "\n\n".join(c.source for c in cells[:code_at[0]] if c.cell_type == "markdown")
    if not header.startswith("# "):
        out.append(f"{name}: the first cell must be markdown starting with a '# ' title, not {header[:40]!r}")
    if badge(name, repo) not in header:
        out.append(f"{name}: the header lacks its Colab badge {badge(name, repo)!r}")
    out += [f"{name}: the header (markdown before the first code cell) lacks {w!r}" for w in HEADER_NEEDS if w not in header]
    if cells[code_at[0]].source != install_cell(source):
        out.append(f"{name}: the first code cell is not the install cell of tools/build_notebooks.py (run it with --sync)")
    if len(code_at) < 2 or cells[code_at[1]].source not in {setup_cell(o) for o in OFFLINE}:
        out.append(f"{name}: the second code cell is not the setup cell {SETUP.splitlines()[0]!r}...")
    md = [(i, c.source) for i, c in enumerate(cells) if c.cell_type == "markdown"]
    for i, src in md:
        words = len(re.findall(r"\w+", src))
        if words > MAX_WORDS and "<details" not in src:
            out.append(f"{name}: markdown cell {i} has {words} words (at most {MAX_WORDS}; details belong in docs/): "
                       f"{src[:50]!r}")
    at = {w: next((i for i, s in md if w in s), None) for w in FOOTER_NEEDS}
    for w, i in at.items():
        if i is None:
            out.append(f"{name}: the footer lacks {w!r}")
    found = [at[w] for w in FOOTER_NEEDS if at[w] is not None]
    if len(found) == len(FOOTER_NEEDS) and found != sorted(found):
        out.append(f"{name}: the footer's order must be {' -> '.join(FOOTER_NEEDS)} (cells {found})")
    last = cells[-1]
    nxt = re.search(r"\*\*Next:\*\*\s*\[[^\]]*\]\(([^)]+\.ipynb)\)", last.source) if last.cell_type == "markdown" else None
    if nxt is None:
        out.append(f"{name}: the last cell must be markdown with '**Next:** [name](name.ipynb)'")
    elif not (path.parent / nxt.group(1)).is_file():
        out.append(f"{name}: **Next:** links to {nxt.group(1)!r}, which is not in {path.parent.name}/")
    out += _link_problems(name, path.parent, cells) + _exercise_problems(name, cells)
    for n, c in enumerate((cells[i] for i in code_at), 1):
        if MARK not in c.source:
            continue
        head = c.source[:60]
        if c.source.splitlines()[0].strip() != MARK:
            out.append(f"{name}: code cell {n} has {MARK} but not as its first line (nbval ignores it there): {head!r}")
        if c.execution_count is None or not c.outputs:
            out.append(f"{name}: checked code cell {n} has no stored output or execution_count "
                       f"(tools/refresh_notebooks.py): {head!r}")
    return out


def sync(path: Path, *, source: str = PACKAGE_SOURCE, repo: str = REPO) -> bool:
    """Rewrite the install cell (found by ``ROMLIB_SOURCE =``) and the header's Colab badge; True if changed.
    Outputs are kept: the install cell prints nothing where romlib is importable."""
    nb = nbformat.read(path, as_version=4)
    before = [c.source for c in nb.cells]
    cell = next((c for c in nb.cells if c.cell_type == "code" and "ROMLIB_SOURCE =" in c.source), None)
    if cell is None:
        raise ValueError(f"{path.name}: no install cell (a code cell with 'ROMLIB_SOURCE =') to sync; "
                         f"paste tools/build_notebooks.py's install_cell() as its first code cell")
    cell.source = install_cell(source)
    if nb.cells and nb.cells[0].cell_type == "markdown":
        nb.cells[0].source = BADGE.sub(lambda _: badge(path.stem, repo), nb.cells[0].source, count=1)
    if [c.source for c in nb.cells] == before:
        return False
    nbformat.write(nb, path)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", action="store_true", help="list what any notebook lacks; exit 1 if anything")
    what.add_argument("--sync", action="store_true", help="rewrite install cells and badges from PACKAGE_SOURCE and REPO")
    ap.add_argument("paths", nargs="*", help="notebooks (default: notebooks/*.ipynb)")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.paths] or sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.sync:
        for p in paths:
            print(f"{p.name}: {'synced' if sync(p) else 'already in sync'}")
    found = [msg for p in paths for msg in problems(p)]
    print("\n".join(found) or f"{len(paths)} notebooks: every shared part is there")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""An assignment an instructor can hand out and grade, with otter-grader: student notebooks and hidden tests.

``release`` turns each notebook with checked exercises (:mod:`romlib.teach.exercises`) into an *otter-assign master
notebook* and runs ``otter assign`` on it. Each exercise becomes one otter question (its exercise id, e.g.
``08.forward``, worth ``points``, all or nothing): the solution between ``# BEGIN SOLUTION`` / ``# END SOLUTION``
with the stub as its prompt, a public test on the notebook's fixed inputs (what ``rl.check`` shows the student) and
*hidden tests* on fresh inputs, one per hidden seed drawn at release (``Exercise.check(answer, seed=s)``), so an
answer that hard-codes the notebook's outputs passes the public test and fails the hidden ones. It writes

- ``master/<notebook>.ipynb``: the master notebook (solutions, every test and the hidden seeds: keep it);
- ``student/<notebook>.ipynb``: what students get, written by otter: each exercise cell back to its stub (its TODO
  and its ``rl.check`` line), the folded solution cells gone, outputs cleared; no otter cell, so it runs where
  romlib does (Colab too) without otter;
- ``autograder/<notebook>.zip``: otter's autograder (every test, the hidden ones too: keep it), and
  ``autograder/<notebook>.ipynb``, the notebook with its solutions.

``grade`` runs ``otter run -a autograder/<notebook>.zip`` on each submission (a notebook named as handed out):
otter executes it top to bottom in a fresh kernel, without Docker, then runs the question's tests on the functions
as they stand at its end; ``grade`` writes one CSV row per submission, one column per question and the total.

Like every notebook autograder, otter runs the student's code: a notebook written to tamper with the checker inside
its own kernel is not defended against.

    romlib assignment --out hand-out/                          # notebooks 01–08; --notebooks 08 for one
    romlib grade --key hand-out/autograder subs/*/08_write_the_loop.ipynb --csv scores.csv
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["release", "master_notebook", "grade", "verdict", "notebook_name", "Grade", "NOTEBOOKS", "HIDDEN_SEEDS"]

log = logging.getLogger(__name__)

#: where the course notebooks are (the repository's notebooks/ folder)
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
#: how many hidden seeds a release draws by default (each a fresh draw of every exercise's inputs)
HIDDEN_SEEDS = 2  # the default of `romlib assignment --hidden-seeds` (romlib.arguments)
_CHECK = re.compile(r"""rl\.check\(\s*["']([\w.\-]+)["']""")
#: where a handed-out notebook's links to the docs point (it travels alone: ../docs/ is not beside it)
DOCS_URL = "https://github.com/romlib/romlib/blob/main/docs/"
_TEST_MARKER = re.compile(r"^[ \t]*# NBVAL_\w+[ \t]*\n?", re.M)  # the suite's nbval markers: not for students
_SOLUTION = re.compile(r"^\s*<details>\s*<summary>\s*Solution", re.I)
_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def verdict(exercise_id: str, answer: Any, seed: int = 0):
    """What the autograder's tests assert: ``Exercise.check(answer, seed=seed)`` (``seed`` 0: the notebook's fixed
    inputs; others: fresh ones), except that a missing function and romlib's own solution are verdicts that fail."""
    from .exercises import EXERCISES, Verdict

    e = EXERCISES[exercise_id]
    if answer is None:
        return Verdict(False, f"`{e.function}` is not defined in the submission", exercise_id)
    code = getattr(answer, "__code__", None)
    if any(answer is f or (code is not None and code is getattr(f, "__code__", None)) for f in (e.solution, e.reference)):
        return Verdict(False, f"`{e.function}` is romlib's own solution (romlib.teach.exercises), not an answer "
                              "written here", exercise_id)
    # an exercise whose function calls an earlier one's (08.loop calls reverse_step): graded on its own, with
    # romlib's version of each earlier function that fails its exercise, so one mistake costs one question
    space = getattr(answer, "__globals__", None)
    swapped = {}
    if isinstance(space, dict):
        for need in e.needs:
            other = EXERCISES[need]
            if other.function in space and not verdict(need, space[other.function], seed).ok:
                swapped[other.function] = space[other.function]
                space[other.function] = other.solution
    try:
        v = e.check(answer, seed=seed)
    finally:
        if swapped:
            space.update(swapped)
    if swapped:
        names = ", ".join(f"`{f}`" for f in swapped)
        v = Verdict(v.ok, f"{v.message} (graded with romlib's {names}: yours did not pass its own exercise, which is "
                          "scored there)", exercise_id)
    return v


def _exercise_id(cell) -> str | None:
    """The exercise a code cell holds: the id of its ``rl.check("…")`` line, when romlib has that exercise."""
    from .exercises import EXERCISES

    if cell.cell_type != "code":
        return None
    found = _CHECK.search(cell.source)
    return found.group(1) if found and found.group(1) in EXERCISES else None


def _need_otter() -> None:
    """Raise a clear ImportError when otter-grader is not installed."""
    import importlib.util

    if importlib.util.find_spec("otter") is None:
        raise ImportError('romlib assignment and romlib grade run otter-grader: pip install -e ".[grade]" '
                          '(or pip install "otter-grader>=7,<8")')


def _yaml(config: dict) -> str:
    import yaml  # otter-grader's requirement (pyyaml)

    return yaml.safe_dump(config, sort_keys=False).rstrip()


def _test_cell(exercise_id: str, function: str, name: str, label: str, seed: int | None):
    """One otter test (exception-based format): a function of the student's ``function`` that asserts its verdict on
    the fixed inputs (``seed`` None: a public test) or on the fresh inputs of ``seed`` (a hidden test)."""
    import nbformat

    config = '""" # BEGIN TEST CONFIG\nhidden: true\n""" # END TEST CONFIG\n' if seed is not None else ""
    call = f"verdict({exercise_id!r}, {function})" if seed is None else f"verdict({exercise_id!r}, {function}, seed={seed})"
    return nbformat.v4.new_code_cell(
        f"{config}def {name}({function}):\n    from romlib.teach.assignment import verdict\n    v = {call}\n"
        f"    assert v.ok, {label + ': '!r} + v.message\n\n{name}({function})")


def _question(e, seeds: Sequence[int], points: float) -> list:
    """The cells of one otter question, exercise ``e``: its cell (the solution, and the stub as the students' prompt),
    then its public test and one hidden test per seed."""
    import nbformat

    v4 = nbformat.v4
    if "'''" in e.stub:
        raise ValueError(f"exercise {e.id}: its stub holds ''' (the master notebook quotes the stub with it)")
    cell = (f"# BEGIN SOLUTION NO PROMPT\n{e.solution_source.rstrip()}\n# END SOLUTION\n"
            f"r''' # BEGIN PROMPT\n{e.stub.rstrip()}\n''' # END PROMPT\n\n\n{e.check_call}")
    tests = [_test_cell(e.id, e.function, "test_fixed_inputs", "the notebook's inputs", None)]
    if e.has_fresh_inputs:
        tests += [_test_cell(e.id, e.function, f"test_hidden_{k}", f"hidden test {k} (fresh inputs)", s)
                  for k, s in enumerate(seeds, 1)]
    else:
        log.warning("exercise %s has no fresh inputs: graded on its fixed inputs only (no hidden test)", e.id)
    question = {"name": e.id, "points": points, "all_or_nothing": True, "check_cell": False}
    return [v4.new_raw_cell("# BEGIN QUESTION\n" + _yaml(question)), v4.new_raw_cell("# BEGIN SOLUTION"),
            v4.new_code_cell(cell), v4.new_raw_cell("# END SOLUTION"), v4.new_raw_cell("# BEGIN TESTS"), *tests,
            v4.new_raw_cell("# END TESTS"), v4.new_raw_cell("# END QUESTION")]


def master_notebook(nb, name: str, seeds: Sequence[int], points: float = 1.0):
    """The otter-assign master notebook of course notebook ``nb`` (nbformat): an ``# ASSIGNMENT CONFIG`` cell, each
    exercise cell (one with ``rl.check("<id>", …)``) made a question (:func:`_question`), the folded solution cells
    removed, outputs cleared. Returns ``(notebook, [exercise ids in order])``."""
    import nbformat

    from .exercises import EXERCISES

    config = {"name": name, "init_cell": False, "check_all_cell": False, "export_cell": False,
              "generate": {"pdf": False}, "tests": {"files": False, "ok_format": False}}
    cells, ids = [nbformat.v4.new_raw_cell("# ASSIGNMENT CONFIG\n" + _yaml(config))], []
    for cell in copy.deepcopy(nb).cells:
        if cell.cell_type == "markdown" and _SOLUTION.match(cell.source):
            continue
        exercise = _exercise_id(cell)
        if exercise is not None:
            cells += _question(EXERCISES[exercise], seeds, points)
            ids.append(exercise)
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.source = _TEST_MARKER.sub("", cell.source)
        elif cell.cell_type == "markdown":
            cell.source = cell.source.replace("](../docs/", f"]({DOCS_URL}")
        cells.append(cell)
    out = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": _KERNELSPEC, "language_info": {"name": "python"}})
    return out, ids


def _notebook_paths(notebooks: Sequence[str] | None) -> list[Path]:
    """The notebooks with exercises, all of them or those whose number or name is in ``notebooks``."""
    from .exercises import for_notebook

    have = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if for_notebook(p.name[:2]))
    if not notebooks:
        return have
    picked = []
    for want in notebooks:
        match = [p for p in have if p.name[:2] == str(want)[:2] and (len(str(want)) <= 2 or p.stem == Path(want).stem)]
        if not match:
            raise ValueError(f"notebook {want!r}: expected the number or the name of one of "
                             f"{', '.join(p.stem for p in have)}")
        picked += match
    return picked


def release(out: str | Path, notebooks: Sequence[str] | None = None, *, points: float = 1.0,
            hidden_seeds: int = HIDDEN_SEEDS, seed: int | None = None, source: Iterable[Path] | None = None,
            run_tests: bool = True) -> Path:
    """Write ``out/master``, ``out/student`` and ``out/autograder`` (see the module's text) with ``otter assign``;
    returns ``out/autograder``. ``seed`` fixes the hidden seeds (default: drawn at random); ``source`` gives notebook
    files other than the course's (e.g. a shorter assignment of your own); ``run_tests``: otter runs the solutions
    notebook against every test before writing the autograder (the slow part: the notebook runs once)."""
    _need_otter()
    import nbformat
    from otter.assign import main as otter_assign
    from tqdm.auto import tqdm

    if not (isinstance(hidden_seeds, int) and 1 <= hidden_seeds <= 20):
        raise ValueError(f"hidden_seeds={hidden_seeds!r}: expected an int from 1 to 20")
    if not (isinstance(points, (int, float)) and points > 0):
        raise ValueError(f"points={points!r}: expected a number > 0")
    out = Path(out)
    paths = [Path(p) for p in source] if source is not None else _notebook_paths(notebooks)
    draw = random.Random(seed) if seed is not None else random.SystemRandom()
    seeds = [draw.randrange(1, 2**31) for _ in range(hidden_seeds)]
    for folder in ("master", "student", "autograder"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    bar = tqdm(paths, desc="otter assign", unit="notebook")
    for path in bar:
        master, ids = master_notebook(nbformat.read(path, as_version=4), path.stem, seeds, points)
        if not ids:
            raise ValueError(f"{path}: no exercise cell (a code cell with rl.check(\"<id>\", …)) to grade")
        bar.set_postfix_str(f"{path.name}: {len(ids)} questions, {len(ids) * (1 + hidden_seeds)} tests")
        master_path = out / "master" / path.name
        nbformat.write(master, master_path)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            otter_assign(str(master_path), tmp, no_pdfs=True, no_run_tests=not run_tests)
            made = Path(tmp)
            shutil.move(made / "student" / path.name, out / "student" / path.name)
            shutil.move(made / "autograder" / path.name, out / "autograder" / path.name)
            zips = list((made / "autograder").glob("*.zip"))
            if len(zips) != 1:
                raise RuntimeError(f"otter assign wrote {len(zips)} autograder zips for {path.name}; expected 1")
            shutil.move(zips[0], out / "autograder" / f"{path.stem}.zip")
        log.info("%s: %d questions (%s) -> %s", path.name, len(ids), ", ".join(ids), out / "student" / path.name)
    return out / "autograder"


@dataclass(frozen=True)
class Grade:
    """One graded submission: the points of each question (exercise id) of its notebook, and why one scored 0."""

    submission: str
    notebook: str
    points: dict[str, float]
    max_points: dict[str, float]
    messages: dict[str, str] = field(default_factory=dict)  # question -> its first failing test's message
    error: str = ""  # why the grader could not grade it (every question then scores 0)

    @property
    def total(self) -> float:
        return sum(self.points.values())

    @property
    def possible(self) -> float:
        return sum(self.max_points.values())


def notebook_name(submission: str | Path) -> str:
    """The handed-out notebook a submission's file name stands for: Colab's "Copy of 08_….ipynb" and a browser's
    "08_… (1).ipynb" are 08_….ipynb."""
    name = Path(submission).name
    name = re.sub(r"^(?:Copy of )+", "", name)
    return re.sub(r"\s*\(\d+\)(?=\.ipynb$)", "", name)


def _autograders(autograder: str | Path) -> dict[str, Path]:
    """The autograder zips of a release, by notebook name: the folder ``out/autograder`` or one ``<notebook>.zip``."""
    autograder = Path(autograder)
    zips = sorted(autograder.glob("*.zip")) if autograder.is_dir() else [autograder]
    if not zips or not all(z.suffix == ".zip" and z.is_file() for z in zips):
        raise ValueError(f"{autograder}: expected the autograder/ folder written by `romlib assignment` or one of "
                         "its <notebook>.zip files")
    return {f"{z.stem}.ipynb": z for z in zips}


def _questions(zip_path: Path) -> dict[str, float]:
    """The questions of an autograder zip (its ``tests/<question>.py`` files) and their points, in the order of the
    exercises in the notebooks."""
    import zipfile

    from .exercises import EXERCISES

    found = {}
    with zipfile.ZipFile(zip_path) as z:
        for name in z.namelist():
            if name.startswith("tests/") and name.endswith(".py"):
                points = re.search(r"^points = ([\d.]+)$", z.read(name).decode(), re.M)
                found[name[len("tests/"):-len(".py")]] = float(points.group(1)) if points else 1.0
    order = list(EXERCISES)
    return dict(sorted(found.items(), key=lambda q: order.index(q[0]) if q[0] in order else len(order)))


def _first_failure(output: str) -> str:
    """The message of the first failing test in otter's output of one question (our tests assert with one)."""
    found = re.search(r"AssertionError: (.+)", output)
    if found:
        return found.group(1).strip()
    error = re.search(r"^\s*(\w+(?:Error|Exception): .+)$", output, re.M)
    return error.group(1).strip() if error else output.strip().splitlines()[-1][:300] if output.strip() else "failed"


def _otter_run(submission: Path, zip_path: Path, timeout: float) -> Grade:
    """``otter run -a zip_path submission``, read back from otter's results.json. Past ``timeout`` seconds otter's
    process group is killed; the kernel (in a session of its own) exits within a second when it sees its parent gone
    (ipykernel's parent poller), and ``communicate`` waits for it: it shares otter's output pipe."""
    questions = _questions(zip_path)

    def failed(why: str) -> Grade:
        return Grade(str(submission), submission.name, {q: 0.0 for q in questions}, questions, error=why)

    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "otter", "run", "--no-logo", "-a", str(zip_path.resolve()), "-o", tmp,
                   str(submission.resolve())]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            text, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return failed(f"not graded: it ran past {timeout:g} s")
        results = Path(tmp) / "results.json"
        if not results.is_file():
            last = re.sub(r"^(?:\w+\.)+(\w+(?:Error|Exception):)", r"\1",  # otter.….OtterRuntimeError: -> OtterRuntimeError:
                          text.strip().splitlines()[-1] if text.strip() else "no output")
            return failed(f"otter run failed (exit {proc.returncode}): {last}")
        tests = json.loads(results.read_text())["tests"]
    points, messages = {q: 0.0 for q in questions}, {}
    for t in tests:
        if t.get("name") in questions:
            points[t["name"]] = float(t.get("score") or 0.0)
            if points[t["name"]] < questions[t["name"]]:
                messages[t["name"]] = _first_failure(t.get("output", ""))
    return Grade(str(submission), submission.name, points, questions, messages)


def grade(autograder: str | Path, submissions: Sequence[str | Path], csv_path: str | Path | None = None, *,
          timeout: float = 1800, jobs: int = 1) -> list[Grade]:
    """Grade each submitted notebook with ``otter run`` and its notebook's autograder zip (``autograder``: the
    release's autograder/ folder, a zip found by each submission's name; or one zip, for every submission), ``jobs``
    submissions at a time, each stopped after ``timeout`` seconds. Writes ``csv_path``: one row per submission, one
    column per question, the total and the points possible, and the grader's error if it could not grade one."""
    from tqdm.auto import tqdm

    _need_otter()
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs={jobs!r}: expected an int >= 1")
    zips = _autograders(autograder)
    subs = [Path(s) for s in submissions]
    if not subs:
        raise ValueError("no submission given: name the submitted notebooks (e.g. subs/*/08_write_the_loop.ipynb)")
    one = next(iter(zips.values())) if Path(autograder).is_file() else None  # one zip given: it grades them all

    def run(s: Path) -> Grade:  # a submission that cannot be graded is a row with its reason, the others go on
        zip_path = one or zips.get(notebook_name(s))
        if zip_path is None:
            why = f"no notebook named {s.name!r} in this assignment; expected one of {', '.join(zips)}"
        elif not s.is_file():
            why = "no such file"
        else:
            return _otter_run(s, zip_path, timeout)
        log.warning("%s: not graded: %s", s, why)
        known = zip_path or (next(iter(zips.values())) if len(zips) == 1 else None)  # its questions, where known
        questions = _questions(known) if known else {}
        return Grade(str(s), s.name, {q: 0.0 for q in questions}, questions, error=f"not graded: {why}")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        grades = list(tqdm(pool.map(run, subs), total=len(subs), desc="otter run", unit="submission"))
    if csv_path is not None:
        columns = list(dict.fromkeys(q for g in grades for q in g.max_points))
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["submission", "notebook", *columns, "total", "possible", "error", "messages"])
            for g in grades:
                w.writerow([g.submission, g.notebook, *(g.points.get(q, "") for q in columns), g.total, g.possible,
                            g.error, "\n".join(f"{q}: {m}" for q, m in g.messages.items())])
    return grades


def run_release(args) -> int:
    folder = release(args.out, args.notebooks, points=args.points, hidden_seeds=args.hidden_seeds, seed=args.seed,
                     run_tests=not args.no_run_tests)
    out = folder.parent
    print(f"hand out {out / 'student'}; keep {folder} (the autograders, hidden tests inside) and {out / 'master'}")
    return 0


def run_grade(args) -> int:
    for g in grade(args.key, args.submissions, args.csv, timeout=args.timeout, jobs=args.jobs):
        print(f"{g.submission}: {g.total:g} / {g.possible:g}" + (f"  ({g.error})" if g.error else ""))
        for q, message in g.messages.items():  # whole: its last sentence is the one that names the mistake
            print(textwrap.fill(message, width=110, initial_indent=f"    {q:<18} 0/{g.max_points[q]:g}  ",
                                subsequent_indent=" " * 28))
    return 0

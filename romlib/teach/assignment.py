"""An assignment an instructor can hand out and grade: the student notebooks and an autograder with hidden tests.

``release`` writes, from the notebooks with checked exercises (:mod:`romlib.teach.exercises`):

- ``student/<notebook>.ipynb``: every exercise cell back to its stub (its TODO and its ``rl.check`` line), the
  folded solution cells (``<details><summary>Solution …``) removed, every output cleared; each exercise cell is
  tagged with its id and points (cell metadata ``romlib``);
- ``autograder/key.json``: the exercises of each notebook, their points, and the *hidden seeds* (drawn at release,
  never in the student version): each exercise is graded on its fixed inputs **and** on fresh inputs drawn from
  each hidden seed (``Exercise.check(answer, seed=s)``), so an answer that hard-codes the notebook's outputs fails.

``grade`` runs each submitted notebook top to bottom in a fresh kernel (nbclient; a cell that raises does not stop
it), takes each exercise's function as it stands right after its cell, checks it on the fixed and the hidden
inputs, and writes one CSV row per submission and exercise: the points (all of them when every check passes,
else 0) and the first failing check's message. The library's own solution (``romlib.teach.exercises``) passed
as an answer scores 0.

Like nbgrader's and otter-grader's autograders, the grader runs the student's code: a notebook written to tamper
with the checker inside its own kernel is not defended against.

    romlib assignment --out hand-out/                          # notebooks 01–08; --notebooks 08 for one
    romlib grade --key hand-out/autograder/key.json subs/*.ipynb --csv scores.csv
"""
from __future__ import annotations

import copy
import csv
import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .exercises import EXERCISES, Exercise, for_notebook

__all__ = ["release", "student_version", "grade", "grade_notebook", "score_answer", "Score", "NOTEBOOKS", "MARK"]

log = logging.getLogger(__name__)

#: where the course notebooks are (the repository's notebooks/ folder)
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
#: the line prefix under which the grading cell prints its JSON result
MARK = "ROMLIB-GRADE "
_CHECK = re.compile(r"""rl\.check\(\s*["']([\w.\-]+)["']""")
_SOLUTION = re.compile(r"^\s*<details>\s*<summary>\s*Solution", re.I)
#: how many hidden seeds a release draws by default (each a fresh draw of every exercise's inputs)
HIDDEN_SEEDS = 2  # the default of `romlib assignment --hidden-seeds` (romlib.arguments)


@dataclass(frozen=True)
class Score:
    """One exercise of one submission: ``points`` of ``max_points``, and why."""

    submission: str
    notebook: str
    exercise: str
    points: float
    max_points: float
    fixed: bool  # passed on the notebook's fixed inputs
    hidden: str  # "k/n": hidden (fresh-input) checks passed
    message: str


def _exercise_id(cell) -> str | None:
    """The exercise a code cell holds: its ``romlib`` metadata, else the id of its ``rl.check("…")`` line."""
    if cell.cell_type != "code":
        return None
    tagged = cell.get("metadata", {}).get("romlib", {}).get("exercise")
    if tagged in EXERCISES:
        return tagged
    found = _CHECK.search(cell.source)
    return found.group(1) if found and found.group(1) in EXERCISES else None


def student_version(nb, points: float = 1.0):
    """A copy of notebook ``nb`` (nbformat) for students: exercise cells reset to their stub and tagged, the
    solution cells removed, outputs cleared. Returns ``(notebook, [exercise ids in order])``."""
    out = copy.deepcopy(nb)
    cells, ids = [], []
    for cell in out.cells:
        if cell.cell_type == "markdown" and _SOLUTION.match(cell.source):
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            exercise = _exercise_id(cell)
            if exercise is not None:
                cell.source = EXERCISES[exercise].cell.rstrip()
                cell.metadata["romlib"] = {"exercise": exercise, "points": points}
                ids.append(exercise)
        cells.append(cell)
    out.cells = cells
    return out, ids


def _notebook_paths(notebooks: Sequence[str] | None) -> list[Path]:
    """The notebooks with exercises, all of them or those whose number or name is in ``notebooks``."""
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
            hidden_seeds: int = HIDDEN_SEEDS, seed: int | None = None, source: Iterable[Path] | None = None) -> Path:
    """Write ``out/student/*.ipynb`` and ``out/autograder/key.json`` (see the module's text); returns the key's
    path. ``seed`` fixes the hidden seeds (default: drawn at random); ``source`` gives notebook files other than
    the course's (e.g. a shorter assignment of your own)."""
    import nbformat

    if not (isinstance(hidden_seeds, int) and 1 <= hidden_seeds <= 20):
        raise ValueError(f"hidden_seeds={hidden_seeds!r}: expected an int from 1 to 20")
    if not (isinstance(points, (int, float)) and points > 0):
        raise ValueError(f"points={points!r}: expected a number > 0")
    out = Path(out)
    paths = [Path(p) for p in source] if source is not None else _notebook_paths(notebooks)
    draw = random.Random(seed) if seed is not None else random.SystemRandom()
    key: dict[str, Any] = {"hidden_seeds": [draw.randrange(1, 2**31) for _ in range(hidden_seeds)], "notebooks": {}}
    (out / "student").mkdir(parents=True, exist_ok=True)
    (out / "autograder").mkdir(parents=True, exist_ok=True)
    for path in paths:
        student, ids = student_version(nbformat.read(path, as_version=4), points)
        if not ids:
            raise ValueError(f"{path}: no exercise cell (a code cell with rl.check(\"<id>\", …)) to grade")
        nbformat.write(student, out / "student" / path.name)
        key["notebooks"][path.name] = [{"id": i, "function": EXERCISES[i].function, "points": points,
                                        "hidden": EXERCISES[i].has_fresh_inputs} for i in ids]
        log.info("%s: %d exercises", path.name, len(ids))
    key_path = out / "autograder" / "key.json"
    key_path.write_text(json.dumps(key, indent=1))
    return key_path


def _is_library_answer(answer: Any, exercise: Exercise) -> bool:
    code = getattr(answer, "__code__", None)
    return any(answer is f or (code is not None and code is getattr(f, "__code__", None))
               for f in (exercise.solution, exercise.reference))


def score_answer(answer: Any, exercise_id: str, hidden_seeds: Sequence[int], points: float = 1.0) -> dict:
    """Grade one answer: ``points`` when it passes on the fixed inputs and on the fresh inputs of every hidden seed
    (exercises without fresh inputs: the fixed ones only), else 0; with the first failing check's message."""
    e = EXERCISES[exercise_id]
    seeds = list(hidden_seeds) if e.has_fresh_inputs else []
    result = {"exercise": exercise_id, "max_points": points, "points": 0.0, "fixed": False,
              "hidden": f"0/{len(seeds)}", "message": ""}
    if answer is None:
        result["message"] = f"`{e.function}` is not defined in the submission"
        return result
    if _is_library_answer(answer, e):
        result["message"] = f"`{e.function}` is romlib's own solution (romlib.teach.exercises), not an answer written here"
        return result
    fixed = e.check(answer)
    result["fixed"] = fixed.ok
    passed, message = 0, "" if fixed.ok else fixed.message
    for k, s in enumerate(seeds, 1):
        v = e.check(answer, seed=s)
        passed += v.ok
        if not v.ok and not message:
            message = f"hidden test {k} (fresh inputs): {v.message}"
    result["hidden"] = f"{passed}/{len(seeds)}"
    if fixed.ok and passed == len(seeds):
        result["points"], message = float(points), "passed" + ("" if seeds else " (fixed inputs only)")
    result["message"] = message
    return result


def _capture_cell(exercise_id: str, function: str):
    import nbformat

    return nbformat.v4.new_code_cell(
        f'globals().setdefault("_romlib_answers", {{}})[{exercise_id!r}] = globals().get({function!r})')


def _grading_cell(entries: list[dict], hidden_seeds: list[int]):
    import nbformat

    return nbformat.v4.new_code_cell(
        "import json as _json\nfrom romlib.teach.assignment import MARK as _MARK, score_answer as _score\n"
        "_romlib_answers = globals().get('_romlib_answers', {})\n"
        f"_entries, _seeds = {entries!r}, {hidden_seeds!r}\n"
        "print(_MARK + _json.dumps([_score(_romlib_answers.get(e['id']) or globals().get(e['function']), e['id'], "
        "_seeds, e['points']) for e in _entries]))")


def grade_notebook(path: str | Path, key: dict, *, timeout: int = 600) -> list[Score]:
    """Run the submitted notebook ``path`` and grade its exercises against ``key`` (a release's key.json)."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    name = path.name
    if name not in key["notebooks"]:
        raise ValueError(f"{path}: no notebook named {name!r} in this assignment; expected one of "
                         f"{', '.join(key['notebooks'])}")
    entries = key["notebooks"][name]
    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        cells.append(cell)
        exercise = _exercise_id(cell)
        if exercise is not None:
            cells.append(_capture_cell(exercise, EXERCISES[exercise].function))
    cells.append(_grading_cell(entries, key["hidden_seeds"]))
    nb.cells = cells
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    line = next((ln for ln in text.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        errors = [o for o in nb.cells[-1].outputs if o.get("output_type") == "error"]
        why = f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else "no result printed"
        return [Score(str(path), name, e["id"], 0.0, e["points"], False, "0/0", f"the grader could not run: {why}")
                for e in entries]
    return [Score(str(path), name, r["exercise"], r["points"], r["max_points"], r["fixed"], r["hidden"], r["message"])
            for r in json.loads(line[len(MARK):])]


def grade(key_path: str | Path, submissions: Sequence[str | Path], csv_path: str | Path | None = None, *,
          timeout: int = 600) -> list[Score]:
    """Grade every submitted notebook against the release's ``key.json``; write the scores to ``csv_path``."""
    key_path = Path(key_path)
    try:
        key = json.loads(key_path.read_text())
        key["notebooks"], key["hidden_seeds"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{key_path}: not a key.json written by `romlib assignment` ({type(e).__name__}: {e})") from e
    scores = [s for sub in submissions for s in grade_notebook(sub, key, timeout=timeout)]
    if csv_path is not None:
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["submission", "notebook", "exercise", "points", "max_points", "fixed_inputs", "hidden_tests",
                        "message"])
            for s in scores:
                w.writerow([s.submission, s.notebook, s.exercise, s.points, s.max_points, s.fixed, s.hidden, s.message])
    return scores


def run_release(args) -> int:
    key = release(args.out, args.notebooks, points=args.points, hidden_seeds=args.hidden_seeds, seed=args.seed)
    n = sum(len(v) for v in json.loads(key.read_text())["notebooks"].values())
    print(f"wrote {key.parent.parent / 'student'} (hand out) and {key} (keep): {n} exercises")
    return 0


def run_grade(args) -> int:
    scores = grade(args.key, args.submissions, args.csv, timeout=args.timeout)
    totals: dict[str, list[float]] = {}
    for s in scores:
        t = totals.setdefault(s.submission, [0.0, 0.0])
        t[0] += s.points
        t[1] += s.max_points
        print(f"{s.submission}  {s.exercise:<18} {s.points:g}/{s.max_points:g}  {s.message[:100]}")
    for sub, (got, of) in totals.items():
        print(f"{sub}: {got:g} / {of:g}")
    return 0

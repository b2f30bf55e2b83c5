"""The graded assignment (romlib.teach.assignment): the student version, the hidden tests, the grader's scores."""
import csv
import json

import pytest

from romlib.teach.assignment import grade, release, score_answer
from romlib.teach.exercises import EXERCISES
from romlib.teach.exercises.core import difference

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

IDS = ("01.cf", "08.forward")  # two cheap exercises: a mini assignment graded in seconds


def _cf(eps_uncond, eps_cond, scale):  # a correct answer written here (not the library's function)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def _hard_coded(exercise_id):
    """An answer that returns the library's outputs for the notebook's fixed inputs, looked up by their shapes and
    scalars: it passes the notebook's own check."""
    e = EXERCISES[exercise_id]
    table = {tuple((tuple(a.shape) if hasattr(a, "shape") else a) for a in args): e.reference(*args)
             for args in e.cases()}
    return lambda *args: table[tuple((tuple(a.shape) if hasattr(a, "shape") else a) for a in args)]


def test_every_exercise_with_fresh_inputs_draws_new_ones_that_its_solution_passes():
    fresh = [e for e in EXERCISES.values() if e.has_fresh_inputs]
    assert {e.id for e in EXERCISES.values()} - {e.id for e in fresh} == set()  # every exercise: a hard-coded table fails
    for e in fresh:
        if e.id == "08.train-step":  # 1.7 s; its seeding is the same code path as 08.step's
            continue
        fixed, new = e.cases(), e.cases(seed=5)
        assert any(difference(n, f) is not None for n, f in zip(new, fixed)), e.id
        assert e.check(e.solution, seed=5).ok, e.id


def test_score_answer_full_zero_and_hard_coded():
    seeds = [11, 12]
    assert score_answer(_cf, "01.cf", seeds)["points"] == 1.0
    table = _hard_coded("01.cf")
    assert EXERCISES["01.cf"].check(table).ok  # the notebook's own check cannot tell
    r = score_answer(table, "01.cf", seeds)
    assert (r["points"], r["fixed"], r["hidden"]) == (0.0, True, "0/2") and r["message"].startswith("hidden test 1")
    library = score_answer(EXERCISES["01.cf"].solution, "01.cf", seeds)
    assert library["points"] == 0.0 and "romlib's own solution" in library["message"]
    assert score_answer(None, "01.cf", seeds)["message"] == "`cf_eps` is not defined in the submission"


def _course_notebook(path):
    """A two-exercise notebook laid out as the course's: set-up, exercise cell, folded solution, per exercise."""
    cells = [nbformat.v4.new_code_cell("import romlib as rl")]
    for i in IDS:
        e = EXERCISES[i]
        cells += [nbformat.v4.new_markdown_cell(e.prompt), nbformat.v4.new_code_cell(e.cell),
                  nbformat.v4.new_markdown_cell(e.solution_cell)]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)


def _submit(student, folder, answers):
    """Copy of the student notebook with the exercise cells' code replaced by ``answers[id]`` (kept if absent)."""
    nb = nbformat.read(student, as_version=4)
    for cell in nb.cells:
        exercise = cell.get("metadata", {}).get("romlib", {}).get("exercise")
        if exercise in answers:
            cell.source = answers[exercise] + "\n" + EXERCISES[exercise].check_call
    folder.mkdir()
    nbformat.write(nb, folder / student.name)
    return folder / student.name


def test_release_and_grade_solved_unsolved_hard_coded(tmp_path):
    _course_notebook(tmp_path / "mini.ipynb")
    key = release(tmp_path / "out", source=[tmp_path / "mini.ipynb"], seed=3)
    student = tmp_path / "out" / "student" / "mini.ipynb"
    nb = nbformat.read(student, as_version=4)
    text = json.dumps(nb)
    assert "<details>" not in text and "Solution (" not in text
    assert "scale * (eps_cond - eps_uncond)" not in text and "(1 - abar).sqrt()" not in text
    assert [c.source for c in nb.cells if c.get("metadata", {}).get("romlib")] == [EXERCISES[i].cell.rstrip() for i in IDS]
    k = json.loads(key.read_text())
    assert [e["id"] for e in k["notebooks"]["mini.ipynb"]] == list(IDS) and len(k["hidden_seeds"]) == 2
    assert not any(str(s) in text for s in k["hidden_seeds"])

    solved = _submit(student, tmp_path / "solved", {i: EXERCISES[i].solution_source for i in IDS})
    unsolved = _submit(student, tmp_path / "unsolved", {})
    table = ("import torch\nfrom romlib.teach.exercises import EXERCISES\n"
             "_known = {tuple(a[0].shape) + (a[2],): EXERCISES['01.cf'].reference(*a) for a in EXERCISES['01.cf'].cases()}\n"
             "def cf_eps(eps_uncond, eps_cond, scale):\n    return _known[tuple(eps_uncond.shape) + (scale,)]\n")
    cheat = _submit(student, tmp_path / "cheat", {"01.cf": table,
                                                  "08.forward": "from romlib.teach.exercises.nb08 import q_sample\n"})
    scores = grade(key, [solved, unsolved, cheat], tmp_path / "scores.csv", timeout=120)
    got = {(s.submission.split("/")[-2], s.exercise): (s.points, s.fixed, s.hidden) for s in scores}
    assert got == {("solved", "01.cf"): (1.0, True, "2/2"), ("solved", "08.forward"): (1.0, True, "2/2"),
                   ("unsolved", "01.cf"): (0.0, False, "0/2"), ("unsolved", "08.forward"): (0.0, False, "0/2"),
                   ("cheat", "01.cf"): (0.0, True, "0/2"), ("cheat", "08.forward"): (0.0, False, "0/2")}
    why = {(s.submission.split("/")[-2], s.exercise): s.message for s in scores}
    assert "not attempted yet" in why["unsolved", "01.cf"]
    assert why["cheat", "01.cf"].startswith("hidden test 1 (fresh inputs)")
    assert "romlib's own solution" in why["cheat", "08.forward"]
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["exercise"], float(r["points"])) for r in rows] == [(s.exercise, s.points) for s in scores]
    assert sum(float(r["points"]) for r in rows if "/solved/" in r["submission"]) == 2.0

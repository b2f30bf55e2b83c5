"""The graded assignment (romlib.teach.assignment): otter assign's student version and hidden tests, otter run's scores.

Nothing here skips: the `test` extra installs otter-grader, and without it these tests fail."""
import csv
import json
import re
import zipfile

import nbformat

from romlib.teach.assignment import DOCS_URL, grade, master_notebook, notebook_name, release, verdict
from romlib.teach.exercises import EXERCISES
from romlib.teach.exercises.core import difference

IDS = ("01.cf", "08.forward")  # two cheap exercises: a mini assignment graded in seconds


def test_every_exercise_with_fresh_inputs_draws_new_ones_that_its_solution_passes():
    fresh = [e for e in EXERCISES.values() if e.has_fresh_inputs]
    assert {e.id for e in EXERCISES.values()} - {e.id for e in fresh} == set()  # every exercise: a hard-coded table fails
    for e in fresh:
        if e.id == "08.train-step":  # 1.7 s; its seeding is the same code path as 08.step's
            continue
        fixed, new = e.cases(), e.cases(seed=5)
        assert any(difference(n, f) is not None for n, f in zip(new, fixed)), e.id
        assert e.check(e.solution, seed=5).ok, e.id


def _cf(eps_uncond, eps_cond, scale):  # a correct answer written here (not the library's function)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def test_verdict_what_the_tests_assert():
    assert verdict("01.cf", _cf).ok and verdict("01.cf", _cf, seed=11).ok
    assert verdict("01.cf", None).message == "`cf_eps` is not defined in the submission"
    library = verdict("01.cf", EXERCISES["01.cf"].solution)
    assert not library.ok and "romlib's own solution" in library.message


def test_one_mistake_costs_one_question_when_a_later_exercise_calls_the_earlier_function():
    """08.loop calls the student's reverse_step: with a wrong one (σ² = β_t) the loop is graded with romlib's
    reverse_step and says so; with a right one, with the student's own."""
    wrong_step = next(m.fn for m in EXERCISES["08.step"].mistakes if "β_t" in m.message)
    for step_source, should_swap in ((None, True), (EXERCISES["08.step"].solution_source, False)):
        space = {"reverse_step": wrong_step}
        if step_source:
            exec("import torch\n" + step_source, space)
        exec("import torch\n" + EXERCISES["08.loop"].solution_source, space)
        before = space["reverse_step"]
        assert verdict("08.step", before).ok is not should_swap
        v = verdict("08.loop", space["sample_loop"])
        assert v.ok, v.message
        assert ("graded with romlib's `reverse_step`" in v.message) is should_swap, v.message
        assert space["reverse_step"] is before  # the namespace is left as it was
    # without the swap the same loop fails: the check really runs the student's step
    space = {"reverse_step": wrong_step}
    exec("import torch\n" + EXERCISES["08.loop"].solution_source, space)
    assert not EXERCISES["08.loop"].check(space["sample_loop"]).ok


def test_submission_names_from_colab_and_browsers_match_the_handed_out_notebook():
    for name in ("08_write_the_loop.ipynb", "Copy of 08_write_the_loop.ipynb", "08_write_the_loop (1).ipynb",
                 "Copy of Copy of 08_write_the_loop (2).ipynb", "subs/ada/Copy of 08_write_the_loop.ipynb"):
        assert notebook_name(name) == "08_write_the_loop.ipynb", name
    assert notebook_name("08_write_the_loop_v2.ipynb") == "08_write_the_loop_v2.ipynb"


def _course_notebook(path):
    """A two-exercise notebook laid out as the course's: set-up, exercise cell, folded solution, per exercise."""
    cells = [nbformat.v4.new_markdown_cell("The terms are in the [glossary](../docs/glossary.md#respacing)."),
             nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nimport romlib as rl")]
    for i in IDS:
        e = EXERCISES[i]
        cells += [nbformat.v4.new_markdown_cell(e.prompt), nbformat.v4.new_code_cell(e.cell),
                  nbformat.v4.new_markdown_cell(e.solution_cell)]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)


def test_master_notebook_one_question_per_exercise_with_hidden_tests(tmp_path):
    _course_notebook(tmp_path / "mini.ipynb")
    nb, ids = master_notebook(nbformat.read(tmp_path / "mini.ipynb", as_version=4), "mini", [101, 202], points=2)
    assert ids == list(IDS)
    raw = [c.source for c in nb.cells if c.cell_type == "raw"]
    assert raw[0].startswith("# ASSIGNMENT CONFIG\nname: mini\n")
    assert [r for r in raw if r.startswith("# BEGIN QUESTION")] == [
        f"# BEGIN QUESTION\nname: {i}\npoints: 2\nall_or_nothing: true\ncheck_cell: false" for i in IDS]
    tests = [c.source for c in nb.cells if c.cell_type == "code" and "def test_" in c.source]
    assert len(tests) == 2 * 3 and sum("hidden: true" in t for t in tests) == 2 * 2
    assert "verdict('08.forward', q_sample, seed=202)" in tests[-1] and "<details>" not in json.dumps(nb)


def _submit(student, folder, answers, extra=()):
    """Copy of the student notebook with the exercise cells' code replaced by ``answers[id]`` (kept if absent)."""
    nb = nbformat.read(student, as_version=4)
    for cell in nb.cells:
        exercise = cell.get("metadata", {}).get("otter", {}).get("tests", [None])[0]
        if exercise in answers:
            cell.source = answers[exercise] + "\n" + EXERCISES[exercise].check_call
    nb.cells += [nbformat.v4.new_code_cell(c) for c in extra]
    folder.mkdir()
    nbformat.write(nb, folder / student.name)
    return folder / student.name


def _hard_coded(exercise_id):
    """An answer that returns the library's outputs on the notebook's fixed inputs as constants, looked up by the sum
    of its first input: it passes the notebook's check (the public test)."""
    e = EXERCISES[exercise_id]
    table = {round(float(args[0].double().sum()), 4): e.reference(*args).tolist() for args in e.cases()}
    return (f"import torch\n_TABLE = {table!r}\n\n"
            f"def {e.function}(*args):\n    return torch.tensor(_TABLE[round(float(args[0].double().sum()), 4)])\n")


def test_release_and_grade_solved_unsolved_hard_coded(tmp_path):
    _course_notebook(tmp_path / "mini.ipynb")
    autograder = release(tmp_path / "out", source=[tmp_path / "mini.ipynb"], seed=3, run_tests=False)
    student = tmp_path / "out" / "student" / "mini.ipynb"
    nb = nbformat.read(student, as_version=4)
    text = json.dumps(nb)
    assert "<details>" not in text and "Solution (" not in text and "BEGIN SOLUTION" not in text
    assert "scale * (eps_cond - eps_uncond)" not in text and "(1 - abar).sqrt()" not in text
    assert "NBVAL" not in text and "../docs/" not in text and f"({DOCS_URL}glossary.md#respacing)" in text
    assert [c.source for c in nb.cells if c.cell_type == "code"][1:] == [EXERCISES[i].cell.rstrip() for i in IDS]
    with zipfile.ZipFile(autograder / "mini.zip") as z:
        hidden = [z.read(f"tests/{i}.py").decode() for i in IDS]
    seeds = {int(s) for t in hidden for s in re.findall(r"seed=(\d+)", t)}
    assert len(seeds) == 2 and all(t.count("hidden=True") == 2 for t in hidden)
    assert not any(str(s) in text for s in seeds) and "hidden=True" not in text  # no hidden test in the student's copy

    table = {i: _hard_coded(i) for i in IDS}
    for i in IDS:  # the hard-coded answers pass the notebook's own check
        space = {}
        exec(table[i], space)
        assert EXERCISES[i].check(space[EXERCISES[i].function]).ok
    solved = _submit(student, tmp_path / "solved", {i: EXERCISES[i].solution_source for i in IDS})
    unsolved = _submit(student, tmp_path / "unsolved", {}, extra=["raise RuntimeError('a cell that fails')"])
    cheat = _submit(student, tmp_path / "cheat", table)
    solved = solved.rename(solved.with_name("Copy of mini.ipynb"))  # as Colab names a student's copy
    stray = tmp_path / "stray" / "notes.ipynb"  # matches no notebook: a row with its reason, the others graded
    stray.parent.mkdir()
    stray.write_text("{}")
    grades = grade(autograder, [solved, unsolved, cheat, stray, tmp_path / "gone" / "mini.ipynb"],
                   tmp_path / "scores.csv", timeout=300, jobs=3)
    got = {g.submission.split("/")[-2]: (g.points, g.total, g.possible, g.error) for g in grades}
    why = {g.submission.split("/")[-2]: g.messages for g in grades}
    zero = {"01.cf": 0.0, "08.forward": 0.0}
    assert got == {"solved": ({"01.cf": 1.0, "08.forward": 1.0}, 2.0, 2.0, ""),
                   "unsolved": (zero, 0.0, 2.0, ""), "cheat": (zero, 0.0, 2.0, ""),
                   "stray": (zero, 0.0, 2.0, "not graded: no notebook named 'notes.ipynb' in this assignment; "
                                              "expected one of mini.ipynb"),
                   "gone": (zero, 0.0, 2.0, "not graded: no such file")}, why
    assert why["solved"] == {}, why
    assert why["unsolved"]["01.cf"].startswith("the notebook's inputs: not attempted yet")
    assert all(why["cheat"][i].startswith("hidden test 1 (fresh inputs): ") for i in IDS), why["cheat"]
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["submission"].split("/")[-2], r["01.cf"], r["08.forward"], r["total"], r["possible"]) for r in rows] == [
        ("solved", "1.0", "1.0", "2.0", "2.0"), ("unsolved", "0.0", "0.0", "0.0", "2.0"),
        ("cheat", "0.0", "0.0", "0.0", "2.0"), ("stray", "0.0", "0.0", "0.0", "2.0"), ("gone", "0.0", "0.0", "0.0", "2.0")]
    # the messages column: every failing exercise's whole message, one per line, to pass on to the student
    assert rows[0]["messages"] == "" and rows[2]["messages"].splitlines() == [f"{i}: {why['cheat'][i]}" for i in IDS]

    stuck = _submit(student, tmp_path / "stuck", {}, extra=["while True:\n    pass"])
    [late] = grade(autograder / "mini.zip", [stuck], timeout=4)  # stopped (otter and its kernel) at the time limit
    assert (late.points, late.error) == ({"01.cf": 0.0, "08.forward": 0.0}, "not graded: it ran past 4 s")

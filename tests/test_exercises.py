"""The notebooks' checked exercises: every solution passes, every stub and typical mistake is told
apart with its own message, and no answer — of whatever kind — makes a check raise."""
import numpy as np
import pytest

import romlib as rl
from romlib.teach.exercises import EXERCISES, check, for_notebook

IDS = list(EXERCISES)


def _with_needs(e) -> dict:
    """A namespace holding the functions of the exercises ``e`` calls (as the notebook holds the student's)."""
    ns = {}
    for need in e.needs:
        exec(EXERCISES[need].solution_source, ns)
    return ns


def test_at_least_two_exercises_per_notebook_01_to_07():
    for nb in ("01", "02", "03", "04", "05", "06", "07"):
        assert len(for_notebook(nb)) >= 2, nb
    assert all(e.id.split(".")[0] == e.notebook for e in EXERCISES.values())


@pytest.mark.parametrize("eid", IDS)
def test_solution_passes(eid):
    e = EXERCISES[eid]
    v = e.check(e.solution)
    assert v.ok, v.message
    assert v.exercise == eid and "done" in v.message
    # the source shown in the collapsed solution cell defines the same function, and it passes too
    ns = _with_needs(e)
    exec(e.solution_source, ns)
    assert e.check(ns[e.function]).ok


@pytest.mark.parametrize("eid", IDS)
def test_each_typical_mistake_is_named(eid):
    e = EXERCISES[eid]
    assert len(e.mistakes) >= 3
    messages = [m.message for m in e.mistakes]
    assert len(set(messages)) == len(messages), "two mistakes share a message"
    for m in e.mistakes:
        v = e.check(m.fn)
        assert not v.ok
        # the message may start with where the answer first differs (notebook 08: "step 3 (t = 777): ... . ")
        assert v.message == m.message or v.message.endswith(". " + m.message), \
            f"{m.message!r} was diagnosed as {v.message!r}"


@pytest.mark.parametrize("eid", IDS)
def test_the_stub_is_runnable_code_that_does_not_pass_yet(eid):
    e = EXERCISES[eid]
    ns = _with_needs(e)
    exec(e.stub, ns)
    assert "TODO" in e.stub
    v = e.check(ns[e.function])
    assert not v.ok and ("TODO" in v.message or "`...`" in v.message), v.message


BAD_ANSWERS = {
    "not a function": (None, "itself"),
    "a number": (3, "itself"),
    "returns nothing": (lambda *a: None, "forget `return`"),
    "raises": (lambda *a: 1 / 0, "raised ZeroDivisionError"),
    "returns text": (lambda *a: "an answer", "is a str"),
    "returns NaN": (lambda *a: float("nan"), ""),
}


@pytest.mark.parametrize("eid", IDS)
@pytest.mark.parametrize("kind", list(BAD_ANSWERS))
def test_wrong_kinds_of_answer_are_verdicts_not_exceptions(eid, kind):
    answer, says = BAD_ANSWERS[kind]
    v = EXERCISES[eid].check(answer)
    assert not v.ok and v.message and says in v.message


def test_specific_diagnoses_read_as_the_issue_asks():
    # CF's base branch where CCF's is expected
    v = check("01.ccf-base", lambda model, x_t, t, image, keep, ref, target, s: (
        (lambda e_c, e_b: e_b + s * (e_c - e_b))(model(x_t, t, target, image * keep), model(x_t, t, "", image * keep))),
        show=False)
    assert "ε(x|∅)" in v.message and "eq. 6" in v.message and "eq. 8" in v.message
    assert "sqrt missing on ᾱ_t" in check("01.q-sample", EXERCISES["01.q-sample"].mistakes[0].fn, show=False).message
    assert "GLIDE's 1 = keep" in check("03.dilate-keep", lambda m, k: rl.masks.dilate(m, k), show=False).message
    assert "instead of the edit region" in check("03.dilate-keep", lambda m, k: rl.masks.dilate(1 - m, k),
                                                 show=False).message
    v = check("06.win-prob", lambda r: np.nan_to_num(EXERCISES["06.win-prob"].solution(r)).T, show=False)
    assert "rank 1 is best" in v.message


def test_an_answer_that_is_slightly_off_gets_the_place_it_differs():
    v = check("01.cf", lambda u, c, s: u + s * (c - u) + 1e-2, show=False)
    assert not v.ok and "differs from the library's" in v.message and "largest difference" in v.message


def test_an_answer_that_edits_its_inputs_cannot_spoil_the_next_check():
    def in_place(u, c, s):
        u.mul_(0)
        return c
    assert not check("01.cf", in_place, show=False).ok
    assert check("01.cf", EXERCISES["01.cf"].solution, show=False).ok


def test_rl_check_prints_and_returns_the_verdict(capsys):
    v = rl.check("05.crop-box", EXERCISES["05.crop-box"].solution)
    assert v.ok and bool(v) and "✓" in capsys.readouterr().out
    v = rl.check("no-such-id", print)
    assert not v.ok and "01.cf" in v.message and "✗" in capsys.readouterr().out


def test_import_romlib_stays_light():
    import subprocess
    import sys

    code = "import romlib, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_the_teaching_guide_lists_every_exercise():
    from pathlib import Path

    guide = (Path(__file__).resolve().parent.parent / "docs" / "teaching.md").read_text()
    missing = [eid for eid in EXERCISES if f"`{eid}`" not in guide]
    assert not missing, f"docs/teaching.md does not list {missing}"


@pytest.mark.parametrize("eid", IDS)
def test_the_notebook_cells_run_and_check(eid, capsys):
    """The student's cell (stub + check call) runs as it stands and prints a verdict; the folded
    solution cell holds code that passes."""
    e = EXERCISES[eid]
    ns = {"rl": rl}
    exec(e.cell, ns)
    assert f"[{eid}]" in capsys.readouterr().out
    assert e.solution_cell.startswith("<details>") and e.solution_cell.rstrip().endswith("</details>")
    code = e.solution_cell.split("```python\n", 1)[1].split("```", 1)[0]
    ns = _with_needs(e)
    exec(code, ns)
    assert e.check(ns[e.function]).ok


def test_answers_in_other_containers_are_compared_by_value():
    import torch

    # a list of 0-d tensors, a numpy array, a tensor: all the same order
    assert check("05.order", lambda d: [torch.tensor(int(i)) for i in torch.as_tensor(d).argsort()], show=False).ok
    assert check("05.order", lambda d: np.argsort(np.asarray(d), kind="stable"), show=False).ok
    assert check("05.crop-box", lambda b, w, h: torch.tensor(rl.masks.enlarge_box(b, 1.3, w, h)), show=False).ok
    v = check("05.order", lambda d: [[0, 1]], show=False)
    assert not v.ok and "shape" in v.message

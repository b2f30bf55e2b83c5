"""Checked exercises for the notebooks: the student writes a line of the method, romlib says what differs.

``EXERCISES`` maps an id (``"<notebook>.<name>"``, e.g. ``"01.ccf-base"``) to an
:class:`~romlib.teach.exercises.core.Exercise`: its ``prompt``, the ``stub`` cell the student starts
from, a worked ``solution`` (and ``solution_source`` for a collapsed cell) and ``check(answer)``,
which compares the student's function with the library's on fixed inputs and names typical
mistakes. In a notebook::

    def cf_eps(eps_uncond, eps_cond, scale):
        return eps_uncond + scale * (eps_cond - eps_uncond)

    rl.check("01.cf", cf_eps)          # prints ✓ or ✗ with what is wrong, returns the Verdict
    rl.hint("01.cf")                   # where to look in the paper; again: the answer's shape; again: the formula

One module per notebook (``nb01`` … ``nb07``); ``core`` holds the checker they share.
"""
from __future__ import annotations

from typing import Any

from . import nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08
from .core import Exercise, Mistake, Verdict

__all__ = ["EXERCISES", "Exercise", "Mistake", "Verdict", "check", "hint", "yours", "get", "for_notebook"]

#: every checked exercise, by id, in notebook order
EXERCISES: dict[str, Exercise] = {e.id: e for mod in (nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08)
                              for e in mod.EXERCISES}
#: how many hints each exercise has given in this session (rl.hint goes one level further each call)
_GIVEN: dict[str, int] = {}


def get(exercise_id: Any) -> Exercise:
    """``EXERCISES[exercise_id]`` with an error that lists the ids."""
    if exercise_id not in EXERCISES:
        raise ValueError(f"no exercise {exercise_id!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[exercise_id]


def for_notebook(notebook: str) -> list[Exercise]:
    """The exercises of one notebook, by its number (``"01"``) or its name (``"01_diffusion_and_guidance"``)."""
    return [e for e in EXERCISES.values() if e.notebook == str(notebook)[:2]]


def check(exercise_id: str, answer: Any, *, show: bool = True) -> Verdict:
    """Check ``answer`` (the student's function) against exercise ``exercise_id``; print the verdict
    (``show=True``) and return it. A wrong answer is a verdict, never an exception; an unknown id
    is a verdict too, listing the ids."""
    if not isinstance(exercise_id, str) or exercise_id not in EXERCISES:
        shown = repr(exercise_id[:60]) if isinstance(exercise_id, str) else f"id of type {type(exercise_id).__name__}"
        v = Verdict(False, f"no exercise {shown}; the exercises are: {', '.join(EXERCISES)}", shown)
    else:
        v = EXERCISES[exercise_id].check(answer)
    if show:
        print(v)
    return v


def hint(exercise_id: str, level: int | None = None, *, show: bool = True) -> str | None:
    """The next hint of exercise ``exercise_id``, printed (``show=True``: nothing returned, so a notebook shows it
    once) or returned (``show=False``): the first call says
    where to look in the paper, the next the shape of the answer, the last the formula itself. ``level`` (1, 2, …)
    asks for one level directly. An unknown id or level is a message, never an exception."""
    if not isinstance(exercise_id, str) or exercise_id not in EXERCISES:
        shown = repr(exercise_id[:60]) if isinstance(exercise_id, str) else f"id of type {type(exercise_id).__name__}"
        text = f"no exercise {shown}; the exercises are: {', '.join(EXERCISES)}"
    else:
        levels = EXERCISES[exercise_id].levels
        if level is None:
            n = min(_GIVEN.get(exercise_id, 0) + 1, len(levels))
        elif isinstance(level, int) and not isinstance(level, bool) and 1 <= level <= len(levels):
            n = level
        else:
            n = 0
        if n == 0:
            text = f"level={level!r}: exercise {exercise_id!r} has hints 1 to {len(levels)}"
        else:
            _GIVEN[exercise_id] = max(_GIVEN.get(exercise_id, 0), n)
            what = "the formula — the answer itself" if n == len(levels) else (
                "where to look" if n == 1 else "the shape of the answer")
            more = "" if n == len(levels) else f" (rl.hint({exercise_id!r}) again for the next)"
            text = f"Hint {n} of {len(levels)} [{exercise_id}], {what}: {levels[n - 1]}{more}"
    if show:
        print(text)
        return None
    return text


def yours(exercise_id: str, answer: Any) -> Any:
    """``answer`` once it passes exercise ``exercise_id``, else the exercise's solution (said in one line), so a
    notebook's later cells run before every exercise is done (notebook 08: your loop edits ShapesWorld)."""
    e = get(exercise_id)
    if e.check(answer).ok:
        return answer
    print(f"[{exercise_id}] not passed yet: this cell uses romlib's solution of `{e.function}` until yours passes")
    return e.solution

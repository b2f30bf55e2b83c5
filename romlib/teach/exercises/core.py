"""What every checked exercise shares: the :class:`Verdict`, the :class:`Exercise` and its checker.

A check runs the student's function and the library's reference on a few fixed inputs (several
shapes and scales, edge cases included) and compares the outputs. When they differ, it runs the
exercise's *known wrong variants* (:class:`Mistake`) on the same inputs: if the student's outputs
match one of them, the verdict names that mistake ("sqrt missing on ᾱ_t"), not just "wrong".

A check never raises and never hangs, whatever the answer: not a function, a function that raises (even an
exception whose text cannot be shown), the wrong shape or type (shapes and sizes are compared before any value
is read, so a huge or zero-stride expanded tensor costs nothing), NaN, a generator, an object whose ``==``,
``bool`` or text is slow or broken — each is a :class:`Verdict` with a message, within :data:`TIME_LIMIT`
seconds (an answer still running then is named as too slow).
"""
from __future__ import annotations

import copy
import inspect
import logging
import ctypes
import math
import sys
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["Verdict", "Mistake", "Exercise", "Unexpected", "difference", "fresh_seed", "TIME_LIMIT", "MAX_VALUES"]

log = logging.getLogger(__name__)

#: Seconds a check may take (the student's function on every input, and the comparison) before its verdict.
TIME_LIMIT = 10.0
#: The most values a result may hold to be compared (the references' results hold a few thousand).
MAX_VALUES = 10_000_000


def fresh_seed(base: int, seed: int) -> int:
    """The generator seed of an exercise's inputs: ``base`` (the fixed inputs the notebook shows) for ``seed`` 0,
    else a different seed for each ``seed`` — the fresh inputs of an assignment's hidden tests."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected an int >= 0 (0 = the fixed inputs)")
    return base if seed == 0 else zlib.crc32(f"{base}/{seed}".encode())


def _two(got: float, want: float) -> str:
    """``got instead of want`` with as many digits as it takes for the two to read differently (4 to 12)."""
    for digits in range(4, 13):
        a, b = f"{got:.{digits}g}", f"{want:.{digits}g}"
        if a != b:
            break
    return f"{a} instead of {b}"


class Unexpected(Exception):
    """Raised by an exercise's ``observe`` when the answer's result is of the wrong kind: its text is the verdict."""


class _TimeUp(BaseException):
    """Raised inside an answer that ran past the time limit (a BaseException: ``except Exception`` does not stop it)."""


def _text(x: Any, limit: int = 300) -> str:
    """``str(x)``, cut to ``limit`` characters; a text that cannot be made is named instead of raising."""
    try:
        t = str(x)
    except Exception as e:  # the student's own __str__ can raise anything
        t = f"<its text cannot be shown: its __str__ raised {type(e).__name__}>"
    return t if len(t) <= limit else t[:limit] + "…"


def _repr(x: Any, limit: int = 80) -> str:
    try:
        t = repr(x)
    except Exception as e:  # the student's own __repr__ can raise anything
        t = f"<a {type(x).__name__} whose __repr__ raised {type(e).__name__}>"
    return t if len(t) <= limit else t[:limit] + "…"


def _shape(x: Any) -> tuple | None:
    """The shape of a numpy array or torch tensor (read without touching its values), else None."""
    torch = sys.modules.get("torch")
    if isinstance(x, np.ndarray) or (torch is not None and isinstance(x, torch.Tensor)):
        return tuple(int(n) for n in x.shape)
    return None


def _stop(worker: threading.Thread, seconds: float = 30.0) -> None:
    """Raise :class:`_TimeUp` inside ``worker`` every 0.2 s (a bare ``except:`` catches one) until it ends or
    ``seconds`` pass: an answer still running after its verdict does not keep a core busy."""
    ident, end = ctypes.c_ulong(worker.ident), time.monotonic() + seconds
    while worker.is_alive() and time.monotonic() < end:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ident, ctypes.py_object(_TimeUp))
        worker.join(0.2)


def run_limited(fn: Callable[[], Any], seconds: float) -> tuple[bool, Any]:
    """``(True, fn())`` when ``fn`` finishes within ``seconds``, else ``(False, None)`` at once. ``fn`` runs in a
    daemon thread; one still running at the limit is told to stop (an exception raised inside it, again and again
    for a while) while the caller goes on. An exception of ``fn`` is raised here."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except _TimeUp:
            pass
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    worker = threading.Thread(target=target, daemon=True, name="romlib-check")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        threading.Thread(target=_stop, args=(worker,), daemon=True, name="romlib-check-stop").start()
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box["value"]


@dataclass(frozen=True)
class Verdict:
    """The result of checking one answer: ``ok`` and a ``message`` saying what is right or wrong."""

    ok: bool
    message: str
    exercise: str = ""

    def __str__(self) -> str:
        return f"{'✓ passed' if self.ok else '✗ not yet'} [{self.exercise}] {self.message}"

    def __repr__(self) -> str:
        return f"<Verdict {self.exercise}: {'passed' if self.ok else 'not yet'}>"

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer: a function with the exercise's signature, and the message that names it."""

    fn: Callable
    message: str


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _as_array(x) -> np.ndarray | None:
    """Numbers, numpy arrays and torch tensors as float64 arrays; None for anything else."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().double().numpy()
    if _is_num(x):
        return np.asarray(float(x))
    if isinstance(x, np.ndarray) and (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        return x.astype(np.float64)
    if isinstance(x, (list, tuple)) and x:  # numbers, nested lists, 0-d tensors
        try:
            return np.asarray([_as_array(v) if hasattr(v, "detach") else v for v in x], dtype=np.float64)
        except (TypeError, ValueError):
            return None
    return None


def difference(got: Any, want: Any, *, atol: float = 1e-5, rtol: float = 1e-4, where: str = "the result") -> str | None:
    """None when ``got`` equals ``want`` (strings exactly, numbers, arrays and tensors to a tolerance,
    tuples element by element), else one sentence saying how they differ."""
    if got is Ellipsis:
        return f"{where} is `...`: a TODO is still to be filled in"
    if inspect.isgenerator(got) or inspect.isasyncgen(got) or inspect.iscoroutine(got):
        return (f"{where} is a {type(got).__name__}, not a value: does the function `yield` (or is it `async`) "
                "where it should `return`?")
    if got is None and want is not None:
        return f"{where} is None: did you forget `return`?"
    if want is None:
        return None if got is None else f"{where} is {_repr(got)}; expected None"
    if isinstance(want, (bool, np.bool_)):
        if hasattr(got, "item") and getattr(got, "ndim", 1) == 0:
            got = got.item()
        if not isinstance(got, (bool, np.bool_)):
            return f"{where} is {_repr(got)}; expected True or False"
        return None if bool(got) == bool(want) else f"{where} is {bool(got)}; expected {bool(want)}"
    if isinstance(want, str):
        if type(got) is not str:  # a str subclass could bring its own (slow, odd) __eq__
            return f"{where} is a {type(got).__name__}; expected a text (str)"
        return None if got == want else f"{where} is {_repr(got)}; expected {want!r}"
    if isinstance(want, (tuple, list)) and not all(_is_num(v) for v in want):  # e.g. (text, tensor)
        if type(got) not in (tuple, list) or len(got) != len(want):
            return f"{where} is a {type(got).__name__}; expected a tuple of {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            d = difference(g, w, atol=atol, rtol=rtol, where=f"item {i} of {where}")
            if d:
                return d
        return None
    w = _as_array(want)
    shape = _shape(got)
    if shape is not None:  # compared before any value is read: a huge or expanded tensor costs nothing
        if shape != tuple(w.shape):
            return f"{where} has shape {shape}; expected {tuple(w.shape)}"
        if math.prod(shape) > MAX_VALUES:
            return f"{where} holds {math.prod(shape)} values; expected {w.size}"
    elif isinstance(got, (list, tuple)) and len(got) > MAX_VALUES:
        return f"{where} is a {type(got).__name__} of {len(got)} items; expected {w.size} value(s)"
    g = _as_array(got)
    if g is None:
        return f"{where} is a {type(got).__name__}; expected a number, an array or a tensor"
    if g.shape != w.shape:
        return f"{where} has shape {tuple(g.shape)}; expected {tuple(w.shape)}"
    nan_g, nan_w = np.isnan(g), np.isnan(w)
    if (nan_g & ~nan_w).any():
        return f"{where} has NaN at {int((nan_g & ~nan_w).sum())} place(s) where a number is expected"
    if (nan_w & ~nan_g).any():
        return f"{where} has a number at {int((nan_w & ~nan_g).sum())} place(s) where NaN is expected"
    ok = nan_w | np.isclose(g, np.where(nan_w, 0, w), atol=atol, rtol=rtol)
    if ok.all():
        return None
    k = np.unravel_index(np.argmax(np.where(ok, -np.inf, np.abs(np.nan_to_num(g - w)))), g.shape)
    at = f" at index {tuple(int(i) for i in k)}" if g.ndim else ""
    return (f"{where} differs from the library's in {int((~ok).sum())} of {ok.size} value(s); "
            f"largest difference{at}: {_two(float(g[k]), float(w[k]))}")


def _copy(args: tuple) -> tuple:
    """A fresh copy of the inputs for each call, so an answer that edits its inputs in place cannot
    change what the next function sees. Plain functions are shared; everything else (a torch module and
    its optimizer included) is deep-copied with one memo, so an optimizer still steps the copied module."""
    out, memo = [], {}
    for a in args:
        if hasattr(a, "clone") and hasattr(a, "detach") and not getattr(a, "requires_grad", False):
            out.append(a.detach().clone())
        elif callable(a) and not _is_module(a):
            out.append(a)
        else:
            b = copy.deepcopy(a, memo)
            if _is_module(a):  # deepcopy leaves .grad behind: a step's stale gradients are part of the input
                for p_new, p_old in zip(b.parameters(), a.parameters()):
                    if p_old.grad is not None:
                        p_new.grad = p_old.grad.detach().clone()
            out.append(b)
    return tuple(out)


def _has_ellipsis(out, depth: int = 2) -> bool:
    """``...`` as the result or inside a short tuple or list of it (an untouched TODO)."""
    if out is Ellipsis:
        return True
    if depth and type(out) in (tuple, list) and len(out) <= 16:
        return any(_has_ellipsis(x, depth - 1) for x in out)
    return False


def _is_module(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.nn.Module)


def _describe(args: tuple) -> str:
    def one(a):
        if hasattr(a, "shape"):
            return f"{type(a).__name__}{tuple(a.shape)}"
        if callable(a):
            return getattr(a, "__name__", "a function")
        return repr(a) if len(repr(a)) < 40 else type(a).__name__
    return "(" + ", ".join(one(a) for a in args) + ")"


@dataclass(frozen=True)
class Exercise:
    """One checked exercise of a notebook.

    ``id``: ``"<notebook>.<name>"`` (e.g. ``"01.ccf-base"``); ``prompt``: what the student is asked;
    ``stub``: the code cell the student starts from (defines ``function`` with a TODO);
    ``reference``: the library's answer (same signature); ``solution``: a worked answer (passes);
    ``cases``: a function giving the fixed inputs (tuples of arguments); ``mistakes``: known wrong
    variants with their messages; ``checks``: one line on what the check compares (for the guide)."""

    id: str
    title: str
    function: str
    prompt: str
    stub: str
    reference: Callable
    solution: Callable
    cases: Callable[[], Sequence[tuple]]
    mistakes: tuple[Mistake, ...]
    checks: str
    paper: str = ""  # the section / equation it is about
    atol: float = 1e-5
    hint: str = ""  # the formula: the last of the hints, given only when asked (rl.hint)
    normalise: Callable | None = None  # applied to every output before comparing (e.g. a diagonal that is not checked)
    hints: tuple[str, ...] = ()  # the hints before the formula: where to look in the paper, then the answer's shape
    observe: Callable | None = None  # (inputs, output) -> what is compared (e.g. a module's weights after a step)
    locate: Callable | None = None  # (inputs, got, expected) -> where they first differ (e.g. "step 3 (t = 880): ...")
    needs: tuple[str, ...] = ()  # exercises whose functions the solution calls (notebook 08's loop calls reverse_step)
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def levels(self) -> tuple[str, ...]:
        """The hints in the order :func:`romlib.teach.exercises.hint` gives them: where to look, the shape of the
        answer, the formula last."""
        return tuple(h for h in (*self.hints, self.hint) if h)

    @property
    def pointer(self) -> str:
        """What a wrong answer that matches no known mistake is told: the first hint and where the others are."""
        first = self.levels[0] if self.levels else f"the paper, {self.paper}"
        return f"A pointer: {first} (more: rl.hint({self.id!r}))"

    @property
    def notebook(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def solution_source(self) -> str:
        """The solution's code (self-contained: its imports are inside it)."""
        return inspect.getsource(self.solution)

    @property
    def check_call(self) -> str:
        """The line that checks the student's function: ``rl.check("<id>", <function>)``."""
        return f'rl.check("{self.id}", {self.function})'

    @property
    def cell(self) -> str:
        """The code cell the student sees: the stub with its TODO, then the check."""
        return f"{self.stub.rstrip()}\n\n\n{self.check_call}\n"

    @property
    def solution_cell(self) -> str:
        """A markdown cell with the solution folded away (a ``<details>`` block)."""
        uses = f"It calls your functions of {', '.join(self.needs)}.\n\n" if self.needs else ""
        return (f"<details><summary>Solution ({self.id})</summary>\n\n{uses}```python\n{self.solution_source.rstrip()}"
                f"\n```\n\n</details>")

    @property
    def has_fresh_inputs(self) -> bool:
        """Whether ``cases`` takes a ``seed`` (0: the fixed inputs; others: fresh ones, for hidden tests)."""
        return "seed" in inspect.signature(self.cases).parameters

    def _inputs_and_expected(self, seed: int = 0):
        if seed and not self.has_fresh_inputs:
            raise ValueError(f"seed={seed!r}: exercise {self.id!r} has only its fixed inputs (seed 0)")
        if seed not in self._memo:
            inputs = [tuple(a) for a in (self.cases(seed=seed) if seed else self.cases())]
            self._memo[seed] = inputs, [self._run(self.reference, a) for a in inputs]
        return self._memo[seed]

    def check(self, answer: Any, *, time_limit: float | None = None, seed: int = 0) -> Verdict:
        """Compare ``answer`` (the student's function) with the library's on the fixed inputs (``seed`` 0) or on
        fresh ones (``seed`` > 0, when :attr:`has_fresh_inputs`); a verdict within ``time_limit`` seconds (default
        :data:`TIME_LIMIT`), never an exception for any answer."""
        def verdict(ok, msg):
            return Verdict(ok, msg, self.id)

        if not callable(answer):
            return verdict(False, f"expected the function `{self.function}` itself (pass it without calling it: "
                                  f"rl.check({self.id!r}, {self.function})); got a {type(answer).__name__}")
        inputs, expected = self._inputs_and_expected(seed)  # the library's own answers: before the clock starts
        at: list = [None]  # the inputs being tried, for the message of an answer that runs too long
        limit = TIME_LIMIT if time_limit is None else time_limit
        try:
            done, v = run_limited(lambda: self._check(answer, inputs, expected, at, verdict), limit)
        except Exception as e:  # the checker's own comparison met an object it cannot handle: still a verdict
            return verdict(False, f"the result of `{self.function}` could not be compared ({type(e).__name__}: "
                                  f"{_text(e, 200)}); return a number, an array or a tensor as the stub says")
        if not done:
            where = f" on the inputs {_describe(at[0])}" if at[0] is not None else ""
            return verdict(False, f"`{self.function}` gave no result within {limit:g} s{where} (an endless loop, or far "
                                  "more work than needed?); the library's answer takes well under a second")
        return v

    @property
    def not_attempted(self) -> str:
        return (f"not attempted yet: `{self.function}` still has its TODO (a `...`). Write it, then run this cell "
                f"again; rl.hint({self.id!r}) says where to look")

    def _check(self, answer, inputs, expected, at: list, verdict) -> Verdict:
        got = []
        for args in inputs:
            at[0] = args
            try:
                out = self._run(answer, args)
            except NotImplementedError:
                return verdict(False, self.not_attempted)
            except Unexpected as e:
                return verdict(False, _text(e))
            except Exception as e:  # any error of the student's code is a verdict, never a crash
                text = f"{type(e).__name__}: {_text(e)}"
                if "ellipsis" in text.lower():
                    return verdict(False, self.not_attempted)
                return verdict(False, f"`{self.function}` raised {text[:300]} on the inputs {_describe(args)}")
            if _has_ellipsis(out):
                return verdict(False, self.not_attempted)
            got.append(out)
        at[0] = None
        first = next(((a, g, w, d) for a, g, w in zip(inputs, got, expected) if (d := difference(g, w, atol=self.atol))),
                     None)
        if first is None:
            return verdict(True, f"matches the library's answer on all {len(inputs)} test inputs. {self.title}: done.")
        args, g, w, diff = first
        where = self._locate(args, g, w)
        lead = f"{where}. " if where else ""
        for mistake in self.mistakes:
            if self._matches(mistake.fn, inputs, got):
                return verdict(False, lead + mistake.message)
        if where:
            return verdict(False, f"{lead}{self.pointer}")
        end = "" if diff.endswith(("?", ".")) else "."
        return verdict(False, f"on the inputs {_describe(args)}, {diff}{end} {self.pointer}")

    def _run(self, fn: Callable, args: tuple):
        """``fn`` on a fresh copy of ``args``, its output observed (:attr:`observe`) and normalised."""
        args = _copy(args)
        out = fn(*args)
        if self.observe is not None and out is not Ellipsis:
            out = self.observe(args, out)
        return self._norm(out)

    def _locate(self, args, got, want) -> str | None:
        if self.locate is None:
            return None
        try:
            return self.locate(args, got, want)
        except Exception as e:  # an output of an unexpected kind: the generic comparison speaks instead
            log.debug("locate failed on %s: %s", self.id, _text(e))
            return None

    def _norm(self, out):
        if self.normalise is None:
            return out
        try:
            return self.normalise(out)
        except Exception:  # an output of the wrong kind is compared as it is (and reported as such)
            return out

    def _matches(self, fn: Callable, inputs, got) -> bool:
        for args, g in zip(inputs, got):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    w = self._run(fn, args)
            except Exception as e:  # a wrong variant that cannot run on some input simply does not match
                log.debug("mistake variant %s failed: %s", getattr(fn, "__name__", fn), _text(e))
                return False
            if difference(g, w, atol=self.atol) is not None:
                return False
        return True

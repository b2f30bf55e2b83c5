"""Interrupts as one exception, and sections an interrupt cannot cut in two.

* Ctrl-C (SIGINT) and ``kill`` (SIGTERM) both become :class:`Interrupted`, a ``KeyboardInterrupt``
  that knows its signal and the exit status that says so: 128 + the signal's number, i.e. 130 for
  SIGINT and 143 for SIGTERM. ``romlib``'s ``main`` calls :func:`install` on its first line, before
  any heavy import, so an interrupt at any moment of a command ends in a one-line message.
* :class:`deferred` holds a signal that arrives inside a ``with`` block and raises it when the block
  ends: a few renames that must happen together (:class:`romlib.result.RunWriter`'s swap, a training
  checkpoint with its loss log) always do. It works with whatever handler is installed (Python's
  default ``KeyboardInterrupt`` in a notebook, :func:`install`'s in the command line) and does
  nothing outside the main thread (where Python delivers no signal anyway).
"""
from __future__ import annotations

import os
import signal
import threading

__all__ = ["Interrupted", "install", "restore", "deferred", "exit_status", "signal_name", "SIGNALS"]

#: the signals handled: Ctrl-C and a polite ``kill``
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM received by the command (``signum``). A command may set ``kept`` to
    a sentence saying what the interrupted run kept on disk."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__(signal_name(self))


def signal_name(e: BaseException) -> str:
    """``"SIGINT"`` or ``"SIGTERM"`` (a plain ``KeyboardInterrupt`` is a SIGINT)."""
    return signal.Signals(getattr(e, "signum", signal.SIGINT)).name


def exit_status(e: BaseException) -> int:
    """128 + the signal's number: 130 for SIGINT (and a plain ``KeyboardInterrupt``), 143 for SIGTERM."""
    return 128 + int(getattr(e, "signum", signal.SIGINT))


def _raise(signum, frame):
    raise Interrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> dict:
    """SIGINT and SIGTERM raise :class:`Interrupted` from now on; returns the previous handlers
    (for :func:`restore`). Does nothing outside the main thread."""
    if not _main_thread():
        return {}
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _raise)
    return old


def restore(old: dict) -> None:
    """Put back the handlers :func:`install` returned."""
    for s, handler in old.items():
        signal.signal(s, handler if handler is not None else signal.SIG_DFL)


class deferred:
    """``with deferred(): ...``: a SIGINT/SIGTERM arriving inside the block is held and delivered to
    the handler that was installed before, once the block has ended (first signal wins). When the
    block ends by an exception, that exception goes on (it is already ending the work); a held
    signal is then dropped unless the exception is not an interrupt, in which case the interrupt
    is raised from it. ``ignore=True`` drops every signal that arrives inside (for the cleanup that
    follows an interrupt: the command is already ending, a second Ctrl-C must not cut it short)."""

    def __init__(self, ignore: bool = False):
        self.ignore = ignore

    def __enter__(self) -> "deferred":
        self.pending: list[int] = []
        self.old: dict = {}
        if _main_thread():
            self.old = {s: signal.getsignal(s) for s in SIGNALS}
            for s in SIGNALS:
                signal.signal(s, self._hold)
        return self

    def _hold(self, signum, frame) -> None:
        self.pending.append(signum)

    def __exit__(self, exc_type, exc, tb) -> None:
        restore(self.old)
        if not self.pending or self.ignore:
            return
        signum = self.pending[0]
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            return
        handler = self.old.get(signum)
        if callable(handler):
            handler(signum, None)  # raises (Interrupted, or KeyboardInterrupt from Python's default)
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), signum)  # the default action, now that the block is done

"""Live controls: one slow update at a time, the newest request never lost (the explorer's widgets, notebooks 03–07).

A widget's change handler calls :meth:`LiveUpdate.request`; the update itself runs on one worker thread, so the
kernel keeps receiving the next changes while it samples. Requests made while an update runs are merged (the
newest value of each knob wins) and run as *one* update after it: a change is never lost, and two updates (two
sampling runs) never run at once. A request waits ``debounce`` seconds for the next one before it starts, so a
burst of changes (a slider dragged through values, a seed typed digit by digit) costs one update. Plain Python,
no widgets: ``tests/test_live.py`` drives it with a fake slow stage.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

__all__ = ["LiveUpdate"]


class LiveUpdate:
    """``update(changes) -> value`` on one worker thread, then ``render(value, changes)``; ``status(text)`` hears
    "queued …", "updating …" and errors (:meth:`request`, :meth:`wait`)."""

    def __init__(self, update: Callable[[dict], object], render: Callable[[object, dict], None] | None = None, *,
                 status: Callable[[str], None] | None = None, debounce: float = 0.3):
        if debounce < 0:
            raise ValueError(f"debounce={debounce!r}; accepted: seconds >= 0")
        self._update, self._render, self._status = update, render, status
        self.debounce = float(debounce)
        self._cond = threading.Condition()
        self._pending: dict = {}
        self._has_pending = False
        self._stamp = 0.0
        self._worker: threading.Thread | None = None
        self.running: dict | None = None  # the changes of the update now running
        self.done = 0  # updates finished (rendered or failed)
        self.errors: list[BaseException] = []

    def request(self, **changes) -> None:
        """Ask for an update with ``changes`` (merged with any request not yet started); returns at once."""
        with self._cond:
            self._pending.update(changes)
            self._has_pending = True
            self._stamp = time.monotonic()
            if self.running is not None:
                self._say(f"queued: {_fmt(self._pending)} (after the update now running)")
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="romlib-live-update", daemon=True)
                self._worker.start()
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no update runs or waits; False when ``timeout`` seconds passed first."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._worker is not None:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._worker is not None

    # ------------------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self._status is not None:
            self._status(text)

    def _next(self) -> dict | None:
        """The merged changes to run next, after the debounce (None: nothing left; the worker ends)."""
        with self._cond:
            while True:
                if not self._has_pending:
                    self._worker = None
                    self._cond.notify_all()
                    return None
                left = self._stamp + self.debounce - time.monotonic()
                if left <= 0:
                    changes, self._pending, self._has_pending = self._pending, {}, False
                    self.running = changes
                    return changes
                self._cond.wait(left)

    def _loop(self) -> None:
        while (changes := self._next()) is not None:
            self._say(f"updating: {_fmt(changes)} …")
            try:
                value = self._update(changes)
                if self._render is not None:
                    self._render(value, changes)
            except Exception as e:  # noqa: BLE001 - shown to the student in the status line, and logged
                log.exception("update %s failed", changes)
                self.errors.append(e)
                self._say(f"the update {_fmt(changes)} failed: {type(e).__name__}: {e}")
            finally:
                with self._cond:
                    self.running = None
                    self.done += 1
                    self._cond.notify_all()


def _fmt(changes: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in changes.items()) or "(no change)"

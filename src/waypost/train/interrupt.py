"""Stopping a fit cleanly on SIGINT / SIGTERM: record the signal, stop at the next safe point.

Why not Python's default (KeyboardInterrupt raised wherever the main thread happens to be): it
lands in the middle of anything, and Lightning's `_call_and_handle_interrupt` turns it into
`sys.exit(1)`, so the MLflow run was marked FAILED and the CLI said nothing. Here:

- `interrupt_guard()` installs handlers (main thread only) that only *record* the signal;
- the places that can stop safely ask `check()`: the Lightning callback `StopOnSignal` after each
  batch, the GBM callbacks after each boosting round, the fit pipeline between its steps. The
  first one to see the signal raises `FitInterrupted`, which the tracker ends as KILLED;
- `critical()` marks a section (saving a model directory, logging/registering a model, swapping
  `runs/latest`) during which even a second signal waits for the section to end;
- `commit()` is the point of no return: from the moment the finished model starts being logged,
  registered and saved, a signal no longer aborts the fit (aborting would leave a registered
  version for a KILLED run); the fit completes and `guard.late_signal` says a signal came;
- a second signal outside a critical section (a third inside one) exits at once with
  128 + signum. Nothing half-written can be seen even then: model directories appear by
  `os.replace`, checkpoints by `os.replace`, registry calls are single transactions; the MLflow
  run left RUNNING is marked FAILED by the next fit on this host (`waypost.track.orphans`).

Only the standard library is imported: the tracker (imported by the CLI at start-up) needs
`FitInterrupted`.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from types import FrameType
from typing import Any

__all__ = ["FitInterrupted", "InterruptGuard", "active_guard", "check", "commit", "critical", "interrupt_guard"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class FitInterrupted(BaseException):
    """A fit stopped because the process got SIGINT or SIGTERM.

    A BaseException, like KeyboardInterrupt and SystemExit: it is a request to stop, not an error,
    and no `except Exception` on the way up may swallow it. It is deliberately not a
    KeyboardInterrupt, which Lightning converts into `sys.exit(1)`.
    `run_id` and `checkpoint` are filled in on the way up by the code that knows them.
    """

    def __init__(self, signum: int, where: str = "") -> None:
        self.signum = int(signum)
        self.where = where
        self.run_id: str | None = None
        self.checkpoint: str | None = None
        self.checkpoint_note: str = ""
        super().__init__(f"{self.signal_name} during {where}" if where else self.signal_name)

    def __str__(self) -> str:
        """What a Python caller needs: the signal, the run, and how to continue."""
        text = f"{self.signal_name} during {self.where}" if self.where else self.signal_name
        if self.run_id:
            text += f"; MLflow run {self.run_id} marked KILLED"
        if self.checkpoint:
            text += (f"; checkpoint {self.checkpoint} ({self.checkpoint_note}): continue with "
                     "Predictor.fit(..., resume=True) or `waypost train CONFIG --resume`")
        return text

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class InterruptGuard:
    """The signal state of one fit; see the module docstring. Use `interrupt_guard()`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self.late_signal: int | None = None  # a signal that arrived after commit() began
        self._critical = 0
        self._committing = False
        self._previous: dict[int, Any] = {}
        self.installed = False

    # ---- handlers
    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal only works in the main thread; other threads keep the default
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        self.installed = True

    def uninstall(self) -> None:
        if not self.installed:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self.installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self._committing:
            self.late_signal = signum
        if self.count >= 3 or (self.count >= 2 and not self._critical):
            self.force_exit(signum)

    @staticmethod
    def force_exit(signum: int) -> None:
        """Leave now: written with os.write (no buffered I/O from a signal handler)."""
        name = signal.Signals(signum).name
        os.write(2, f"\nsecond {name}: exiting now without cleaning up; the MLflow run stays RUNNING until "
                    f"the next fit on this host marks it FAILED\n".encode())
        os._exit(128 + signum)

    # ---- what the fit asks
    @property
    def pending(self) -> bool:
        """A signal arrived and the fit may still stop for it."""
        return self.signum is not None and not self._committing

    def check(self, where: str) -> None:
        """Raise FitInterrupted if a signal is pending; `where` names the safe point, for the message."""
        if self.pending and not self._critical:
            assert self.signum is not None
            raise FitInterrupted(self.signum, where)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Even a second signal waits until this block ends (then exits at once)."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
            if not self._critical and self.count >= 2 and self.signum is not None:
                self.force_exit(self.signum)

    def commit(self) -> None:
        """Enter the point of no return (see the module docstring); lasts until the guard closes."""
        if self.signum is not None:
            self.late_signal = self.signum
        self._committing = True


_ACTIVE: ContextVar[InterruptGuard | None] = ContextVar("waypost_interrupt_guard", default=None)


def active_guard() -> InterruptGuard | None:
    """The guard of the fit running in this context, or None outside `interrupt_guard()`."""
    return _ACTIVE.get()


@contextlib.contextmanager
def interrupt_guard() -> Iterator[InterruptGuard]:
    """Install the recording handlers for the block; nested calls reuse the outer guard, so the
    CLI can guard fit + save + `runs/latest` while `Predictor.fit` guards the fit alone."""
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    guard = InterruptGuard()
    guard.install()
    token = _ACTIVE.set(guard)
    try:
        yield guard
    finally:
        _ACTIVE.reset(token)
        guard.uninstall()


def check(where: str) -> None:
    """`active_guard().check(where)`, a no-op outside a guard."""
    guard = _ACTIVE.get()
    if guard is not None:
        guard.check(where)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """`active_guard().critical()`, a plain block outside a guard."""
    guard = _ACTIVE.get()
    if guard is None:
        yield
        return
    with guard.critical():
        yield


def commit() -> None:
    """`active_guard().commit()`, a no-op outside a guard."""
    guard = _ACTIVE.get()
    if guard is not None:
        guard.commit()

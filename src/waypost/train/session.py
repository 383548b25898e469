"""The durable context of one fit: its time budget and its checkpoint folder.

The fit pipeline opens a `FitSession` and names the part being trained (`with session.part("mlp")`);
the training engine and the GBM callbacks look it up with `current_session()` and ask it for their
deadline (`deadline_for`, which keeps time back for saving and logging) and checkpoint slot.
That way the time limit and the checkpoints reach every training loop the way Lightning callbacks
do, without a `checkpoint=`/`deadline=` argument threaded through every model's `fit`; a model
fitted outside a pipeline (tests, distillation, pruning) simply finds no session.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from waypost.train.checkpoint import CheckpointStore, PartSlot

#: The share of the limit the pipeline plans to use: the rest absorbs estimation error.
PLAN_SHARE = 0.98


class TimeBudget:
    """`limit` seconds from `started` (a `time.perf_counter()` value) for a whole fit."""

    def __init__(self, limit: float | None, started: float | None = None) -> None:
        self.limit = limit
        self.started = time.perf_counter() if started is None else started
        self.deadline = None if limit is None else self.started + PLAN_SHARE * limit

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.perf_counter()

    def until(self, reserve: float = 0.0, share: float = 1.0) -> float | None:
        """The deadline for one step that must leave `reserve` seconds for what follows it and may
        take `share` of what is left (e.g. the GBM before an MLP)."""
        if self.deadline is None:
            return None
        now = time.perf_counter()
        return now + max(0.0, (self.deadline - reserve - now) * share)


#: Whether this process has committed a tracked model before: the first MLflow model logging and
#: the first figures pay one-off imports and caches (measured ~2 s of a cold commit's ~2.5 s).
_WARM = {"tracked": False}


def commit_reserve(tracked: bool, model_bytes: int, saves: int = 1) -> float:
    """Seconds kept back for what follows training: metrics, plots, saving the model directory
    (`saves` times: the CLI also writes runs/<name>) and logging + registering it in MLflow.

    Measured on this project's 2-core machine (docs/decisions.md, "Time limit"): a tracked tabular
    commit (4 figures, model logging, registration) takes ~1.1 s in a warm process and ~2.5 s in a
    fresh one; MLflow's copy of the weights adds ~25 ms/MB (3.6 s for a 90 MB MiniLM), a
    safetensors save ~2-4 ms/MB; untracked, only the saves. Rounded up.
    """
    mb = model_bytes / 2**20
    saving = saves * (0.1 + 0.004 * mb)
    if not tracked:
        return saving + 0.1
    return saving + (1.5 if _WARM["tracked"] else 3.0) + 0.03 * mb


def mark_committed(tracked: bool) -> None:
    """Called after a commit: later fits in this process get the warm reserve."""
    if tracked:
        _WARM["tracked"] = True


@dataclass
class FitSession:
    budget: TimeBudget
    checkpoints: CheckpointStore | None = None
    tracked: bool = False
    saves: int = 1
    name: str | None = None
    share: float = 1.0
    #: seconds of post-training work the parts trained so far add (e.g. serialising a large GBM)
    extra_reserve: float = 0.0
    #: a plan entry about the checkpoint folder (resumed, replaced, none matched), if any
    plan_note: Any = None

    @property
    def slot(self) -> PartSlot | None:
        """The checkpoint slot of the part being trained, if checkpoints are on."""
        if self.checkpoints is None or self.name is None:
            return None
        return self.checkpoints.slot(self.name)

    @contextlib.contextmanager
    def part(self, name: str, share: float = 1.0) -> Iterator[FitSession]:
        """Train part `name`, which may use `share` of the time left (the GBM leaves the MLP some)."""
        old = (self.name, self.share)
        self.name, self.share = name, share
        try:
            yield self
        finally:
            self.name, self.share = old

    def deadline_for(self, model_bytes: int = 0) -> float | None:
        """When the current part must stop training (a perf_counter value; None: no limit), keeping
        `commit_reserve` for a model of `model_bytes`."""
        reserve = commit_reserve(self.tracked, model_bytes, self.saves) + self.extra_reserve
        return self.budget.until(reserve, self.share)


_CURRENT: ContextVar[FitSession | None] = ContextVar("waypost_fit_session", default=None)


def current_session() -> FitSession | None:
    return _CURRENT.get()


def fit_deadline(time_limit: float | None = None, model_bytes: int = 0, now: float | None = None) -> float | None:
    """When a training loop must stop (a perf_counter value; None: no limit): the sooner of the
    current session's deadline for its part and `time_limit` seconds from `now`."""
    session = current_session()
    now = time.perf_counter() if now is None else now
    deadlines = [d for d in (session.deadline_for(model_bytes) if session is not None else None,
                             now + time_limit if time_limit else None) if d is not None]
    return min(deadlines) if deadlines else None


@contextlib.contextmanager
def fit_session(session: FitSession) -> Iterator[FitSession]:
    token = _CURRENT.set(session)
    try:
        yield session
    finally:
        _CURRENT.reset(token)

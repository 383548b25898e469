"""Boosting-round callbacks for LightGBM and XGBoost: stop on SIGINT/SIGTERM and before a deadline.

The counterpart of `waypost.train.durable` for the GBMs: after every round they ask
`interrupt.check` (raising `FitInterrupted`) and stop the booster when the next round would cross
the deadline. A time stop keeps the best round so far, the rule early stopping uses, so the model
is what early stopping would have kept at that point.

What a round costs is more than its boosting time: every tree is later serialised (LightGBM's
sklearn wrapper round-trips the model through text, the checkpoint and each model save write it,
MLflow copies the file). On a small table that is most of the cost: 5,000 three-class rounds on
penguins boost in 1.3 s, and their 50 MB of model text take 1.2 s per serialisation. So the clock
times the serialisation of the latest rounds every time the round count doubles, and counts it
`post_factor` times per round.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from waypost.train import interrupt

#: serialisation is timed on the latest this-many rounds, at round 20, 40, 80, ...
PROBE_ROUNDS = 20


class RoundClock:
    """Per-round timing and the stop decision, shared by both libraries.

    `post_factor`: how many times each round's trees will be serialised or copied before the fit
    ends (see the module docstring); `serialise(first, n)` writes rounds first..first+n-1 and
    returns the bytes, so the clock can time it.
    """

    def __init__(self, deadline: float | None, total: int, post_factor: float = 0.0) -> None:
        self.deadline, self.total, self.post_factor = deadline, total, post_factor
        self._last = time.perf_counter()
        self.times: list[float] = []
        self.stopped_at: int | None = None  # rounds done when the deadline stopped boosting
        self.serialise_s_per_round = 0.0
        self.bytes_per_round = 0.0
        self._next_probe = PROBE_ROUNDS

    def _probe(self, rounds_done: int, serialise: Callable[[int, int], bytes | str]) -> None:
        n = min(PROBE_ROUNDS, rounds_done)
        started = time.perf_counter()
        size = len(serialise(rounds_done - n, n))
        self.serialise_s_per_round = (time.perf_counter() - started) / n
        self.bytes_per_round = size / n
        self._next_probe *= 2

    def tick(self, rounds_done: int, serialise: Callable[[int, int], bytes | str] | None = None) -> bool:
        """Record a finished round; True when the next one (and the serialising of every round so
        far) would cross the deadline."""
        interrupt.check(f"gbm boosting round {rounds_done}")
        now = time.perf_counter()
        self.times.append(now - self._last)
        if self.deadline is None:
            self._last = now
            return False
        if serialise is not None and self.post_factor and rounds_done >= self._next_probe:
            self._probe(rounds_done, serialise)
            now = time.perf_counter()
        self._last = now
        # the first "round" also holds the booster's set-up (binning, OpenMP start): not a round's cost
        recent = (self.times[1:] or self.times)[-20:]
        next_round = max(sum(recent) / len(recent), recent[-1])
        post = (rounds_done + 1) * self.serialise_s_per_round * self.post_factor
        if now + next_round + post > self.deadline:
            self.stopped_at = rounds_done
            return True
        return False

    def post_seconds(self, rounds: int, factor: float) -> float:
        """Estimated seconds to serialise `rounds` rounds `factor` times."""
        return rounds * self.serialise_s_per_round * factor

    def describe(self) -> str | None:
        if self.stopped_at is None:
            return None
        return f"stopped after {self.stopped_at} of {self.total} boosting rounds by time_limit"


def lightgbm_callback(clock: RoundClock) -> Any:
    """A LightGBM callback (runs after early_stopping and record_evaluation: order 40)."""
    import lightgbm as lgb

    best: dict[str, Any] = {"score": None, "iteration": 0, "results": []}

    def callback(env: Any) -> None:
        results = list(env.evaluation_result_list or [])
        if results:
            _, _, score, higher_better = results[0][:4]
            better = best["score"] is None or (score > best["score"] if higher_better else score < best["score"])
            if better:
                best.update(score=score, iteration=env.iteration, results=results)

        def serialise(first: int, n: int) -> str:
            return env.model.model_to_string(start_iteration=first, num_iteration=n)

        if clock.tick(env.iteration + 1, serialise):
            # lgb.train turns this into booster.best_iteration = iteration + 1, as early stopping does
            raise lgb.callback.EarlyStopException(best["iteration"], best["results"])

    callback.order = 40  # type: ignore[attr-defined]
    callback.before_iteration = False  # type: ignore[attr-defined]
    return callback


def xgboost_callback(clock: RoundClock) -> Any:
    """An XGBoost TrainingCallback; returning True ends training, and XGBoost's EarlyStopping has
    recorded the best iteration so far as the model's `best_iteration`."""
    import xgboost as xgb

    class _Stop(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            def serialise(first: int, n: int) -> bytes:
                return bytes(model[first:first + n].save_raw("json"))

            return clock.tick(epoch + 1, serialise)

    return _Stop()

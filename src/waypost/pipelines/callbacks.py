"""Fit-level callbacks, Lightning style: small hooks the fit pipeline calls, so tracking, the
console and later monitoring, explanations or retraining subscribe without editing the pipeline.

Each hook receives the `FitContext` (config, plan, tracker, session) and what just happened. Hooks
run in the order the callbacks were given: waypost's own (console, tracking) first, then the user's
(`Predictor(callbacks=[...])`). A hook that raises stops the fit, like any other error in it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from waypost.plan import Decision


@dataclass
class FitContext:
    config: Any
    plan: list[Decision]
    session: Any = None
    tracker: Any = None
    verbose: bool = True
    data: dict[str, Any] = field(default_factory=dict)  # rows, columns: what the hooks may report


class FitCallback:
    """Override the hooks you need; each default does nothing."""

    def on_plan(self, ctx: FitContext) -> None:
        """The job is planned: task, columns, architecture (ctx.plan), before any training."""

    def on_fit_start(self, ctx: FitContext) -> None:
        """Preprocessing done, the run (ctx.tracker) open: parts are about to train."""

    def on_part_start(self, ctx: FitContext, name: str, part: Any) -> None:
        """Part `name` is about to train."""

    def on_part_fitted(self, ctx: FitContext, name: str, part: Any, score: float) -> None:
        """Part `name` trained; `score` is its validation loss (the task's)."""

    def on_fit_end(self, ctx: FitContext, model: Any) -> None:
        """The `FittedModel` is complete (ensemble chosen, metrics computed), before it is committed."""


class Callbacks:
    """The callbacks of one fit, called together."""

    def __init__(self, callbacks: list[FitCallback]) -> None:
        for cb in callbacks:
            if not isinstance(cb, FitCallback):
                from waypost.errors import ConfigError

                raise ConfigError(f"callbacks: {cb!r} is a {type(cb).__name__}; expected a "
                                  "waypost.pipelines.callbacks.FitCallback subclass")
        self.callbacks = list(callbacks)

    def __getattr__(self, hook: str) -> Any:
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return call


class ConsoleCallback(FitCallback):
    """One line per step on stderr (`verbose=True`), never wrapped."""

    def _say(self, ctx: FitContext, message: str) -> None:
        from waypost.pipelines.commit import console

        console(ctx.verbose, message)

    def on_part_start(self, ctx: FitContext, name: str, part: Any) -> None:
        self._say(ctx, f"[bold]training[/] {name} on {ctx.data.get('train_rows', '?')} rows")

    def on_fit_end(self, ctx: FitContext, model: Any) -> None:
        selection = next((d for d in reversed(model.plan) if d.step == "selection"), None)
        why = selection.reason if selection is not None else ""
        self._say(ctx, f"[bold green]selected[/] {model.selected}: {why}")


class TrackingCallback(FitCallback):
    """The MLflow run's params, metrics, plan, lineage and plots (the model itself is logged when
    the fit commits, `waypost.pipelines.commit`)."""

    def on_fit_start(self, ctx: FitContext) -> None:
        tracker = ctx.tracker
        tracker.log_params({"config": ctx.config.to_dict()})
        tracker.log_params({"data": {k: ctx.data[k] for k in ("train_rows", "valid_rows", "features") if k in ctx.data}})

    def on_fit_end(self, ctx: FitContext, model: Any) -> None:
        from waypost.track.run_log import log_run

        log_run(ctx.tracker, model, ctx.data.get("valid_raw"), ctx.data.get("y_valid"))

"""The fit's run, session and commit: the MLflow run (or a no-op tracker), the time budget and
checkpoint folder, and the point of no return where the model is logged, registered and saved."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from waypost import __version__
from waypost.config import WaypostConfig
from waypost.errors import ConfigError
from waypost.plan import Decision
from waypost.train import interrupt


def run_tracker(cfg: WaypostConfig, resume_run_id: str | None = None) -> Any:
    """The MLflow run of one fit (or a no-op tracker with tracking off), named and tagged;
    `resume_run_id` continues an interrupted run (see MlflowTracker)."""
    from waypost.track.tracker import make_tracker

    return make_tracker(
        cfg.tracking.enabled, experiment=cfg.tracking.experiment, tracking_uri=cfg.tracking.uri,
        run_name=f"{cfg.registered_model_name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"waypost.version": __version__, "waypost.task": cfg.task, "waypost.target": cfg.target},
        **({"resume_run_id": resume_run_id} if cfg.tracking.enabled else {}),
    )


def console(verbose: bool, message: str) -> None:
    if verbose:
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(message)  # one line, never wrapped


def open_session(cfg: WaypostConfig, frames: list[Any], resume: bool, save_to: Path | None, started: float,
                 verbose: bool) -> Any:
    """The fit's time budget and (with `training.checkpoint_dir`) its checkpoint folder."""
    from waypost.track.lineage import dataframe_digest
    from waypost.train.checkpoint import CheckpointStore, fit_key
    from waypost.train.session import FitSession, TimeBudget

    store, plan_note = None, None
    if cfg.training.checkpoint_dir:
        digests = [None if f is None else dataframe_digest(f) for f in frames]
        store = CheckpointStore(cfg.training.checkpoint_dir, fit_key(cfg.to_dict(), digests, __version__), cfg.target)
        note = store.open(resume=resume)
        if note:  # one line, and in the plan (so `--quiet` and the manifest have it too)
            console(verbose, note)
            plan_note = Decision("training", "checkpoint", "resumed" if store.resumed else "fresh", note)
    elif resume:
        raise ConfigError("resume=True needs training.checkpoint_dir (the folder the interrupted fit checkpointed "
                          "into); `waypost train` uses .waypost/checkpoints")
    return FitSession(TimeBudget(cfg.training.time_limit, started), store, tracked=cfg.tracking.enabled,
                      saves=2 if save_to is not None else 1, plan_note=plan_note)


def commit_model(model: Any, tracker: Any, save_to: Path | None, verbose: bool) -> dict[str, Any] | None:
    """The point of no return: log + register the model in MLflow, then write `save_to`; returns
    the registered model's info (None without tracking).

    Before it, SIGINT/SIGTERM still stop the fit (the run ends KILLED, nothing registered); from
    here on a signal waits (`interrupt.commit`), because stopping half-way would leave a registered
    version of a KILLED run or a registered model without its directory."""
    from waypost.persistence import save_model
    from waypost.train.session import mark_committed

    interrupt.check("logging the run")
    interrupt.commit()
    info = None
    with interrupt.critical():
        if tracker.run_id is not None:
            with tempfile.TemporaryDirectory(prefix="waypost-model-") as tmp:
                model_dir = save_model(model, Path(tmp) / "model")
                info = tracker.log_model(model_dir, model.config.registered_model_name)
            console(verbose, f"[bold]tracked[/] run {tracker.run_id}; registered "
                    f"{info.get('registered_model')} v{info.get('version')}")
        if save_to is not None:
            save_model(model, Path(save_to))
    mark_committed(tracker.run_id is not None)
    return info

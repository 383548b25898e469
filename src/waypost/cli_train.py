"""Helpers of `waypost train` (kept out of cli.py, which imports nothing heavy and stays short):
the resume command, the one-line interruption message and the atomic `runs/latest` swap."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def train_command(config: Path, output: Path, name: Optional[str], tracking_uri: Optional[str], no_track: bool,
                   time_limit: Optional[float], quiet: bool) -> str:
    """The exact `waypost train ... --resume` command that continues this fit."""
    import shlex

    args = ["waypost", "train", str(config)]
    if output != Path("runs"):
        args += ["--output", str(output)]
    if name:
        args += ["--name", name]
    if tracking_uri:
        args += ["--tracking-uri", tracking_uri]
    if no_track:
        args.append("--no-track")
    if time_limit:
        args += ["--time-limit", f"{time_limit:g}"]
    if quiet:
        args.append("--quiet")
    return shlex.join([*args, "--resume"])


def interrupted_line(exc: BaseException, again: str) -> str:
    """One line: which signal, the run, the checkpoint and the command that resumes."""
    run = f"MLflow run {exc.run_id} marked KILLED" if getattr(exc, "run_id", None) else "no MLflow run"
    if getattr(exc, "checkpoint", None):
        saved = f"checkpoint {exc.checkpoint} ({exc.checkpoint_note})"
    else:
        saved = "no checkpoint yet"
    return f"interrupted by {exc.signal_name} during {exc.where or 'the fit'}: {run}; {saved}; resume with: {again}"


def point_latest(output: Path, run_name: str) -> Path:
    """Point `output/latest` at `run_name` atomically: a new symlink under a temporary name replaces
    the old one with os.replace, so `latest` never disappears or dangles half-way."""
    import uuid

    from waypost.train.interrupt import critical

    latest = output / "latest"
    tmp = output / f".latest.tmp-{uuid.uuid4().hex[:8]}"
    with critical():
        tmp.symlink_to(run_name, target_is_directory=True)
        try:
            os.replace(tmp, latest)
        finally:
            if tmp.is_symlink():
                tmp.unlink()
    return latest

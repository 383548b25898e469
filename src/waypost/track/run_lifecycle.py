"""A run's life across processes: orphaned runs are marked FAILED, interrupted runs are continued.

Runs left RUNNING by a process that died (kill -9, OOM killer, power loss) are marked FAILED.

Every run waypost starts is tagged with the host, the pid and the process's start time. When a
tracker starts a run it looks for RUNNING runs of its experiment tagged with *this* host whose
process is gone: no such pid, or a pid that now belongs to another process (a different start
time: pids are reused). Those are set FAILED with a tag saying why. Runs of other hosts, runs
without the tags (other tools, older waypost) and runs of live processes are never touched: a
second fit in another terminal keeps its run.

Start time: field 22 of /proc/<pid>/stat (clock ticks since boot) plus the kernel's boot id, so a
reboot cannot make an old pid look alive. Without /proc (macOS, Windows) only "is the pid alive"
is checked, which errs towards leaving a run alone.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, START_TAG = "waypost.host", "waypost.pid", "waypost.process_start"
REASON_TAG = "waypost.failed_reason"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """`<boot id>:<start ticks>` of process `pid`, or None where /proc cannot tell (or no process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    return f"{_boot_id()}:{fields[19]}"  # field 22 overall; 20th after pid and comm


def identity_tags() -> dict[str, str]:
    """The tags that let a later fit tell whether this process is still alive."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), START_TAG: process_start(pid) or ""}


def _alive(pid: int, start: str) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    now = process_start(pid)
    if start and now is not None:
        return now == start  # same pid, same start: the same process
    return True


def mark_orphans(client: Any, experiment_id: str, *, by_run: str | None = None) -> list[str]:
    """Set FAILED every RUNNING run of `experiment_id` left by a dead process on this host; returns
    their ids. Never raises: a bookkeeping failure must not stop a fit (it is logged)."""
    host = socket.gethostname()
    marked: list[str] = []
    try:
        runs = client.search_runs(
            [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
            max_results=1000)
        for run in runs:
            tags = run.data.tags
            try:
                pid = int(tags.get(PID_TAG, ""))
            except ValueError:
                continue
            if run.info.run_id == by_run or _alive(pid, tags.get(START_TAG, "")):
                continue
            reason = (f"process {pid} on {host} ended without closing this run (killed or crashed); marked "
                      f"FAILED at {time.strftime('%Y-%m-%dT%H:%M:%S')} by the next waypost fit")
            client.set_tag(run.info.run_id, REASON_TAG, reason)
            client.set_terminated(run.info.run_id, status="FAILED")
            marked.append(run.info.run_id)
    except Exception:  # noqa: BLE001 - best effort, see the docstring
        log.warning("could not check experiment %s for runs left RUNNING by dead processes", experiment_id,
                    exc_info=True)
    if marked:
        log.warning("marked %d run(s) left RUNNING by a dead process as FAILED: %s", len(marked), ", ".join(marked))
    return marked


def continue_run(client: Any, run_id: str, experiment_id: str) -> Any | None:
    """Reopen an interrupted run (KILLED or FAILED, same experiment) for a resumed fit: status back
    to RUNNING, the identity tags rewritten for this process. Returns the run (with its params and
    metric keys), or None when it cannot be continued (deleted, another experiment, still running
    elsewhere, finished): the caller then starts a new run tagged with the old id."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    info = run.info
    if info.experiment_id != experiment_id or info.lifecycle_stage != "active" or info.status not in ("KILLED", "FAILED"):
        return None
    client.update_run(run_id, status="RUNNING")
    resumed = int(run.data.tags.get("waypost.resumed", "0")) + 1
    for key, value in {**identity_tags(), "waypost.resumed": str(resumed)}.items():
        client.set_tag(run_id, key, value)
    return run

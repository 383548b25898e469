"""Where an interrupted fit keeps what it needs to continue: one folder per (config, data).

Layout, under `training.checkpoint_dir` (`waypost train`: `.waypost/checkpoints`):

    <target>-<key>/meta.json          what the folder belongs to, the MLflow run, progress per part
    <target>-<key>/gbm/...            the finished GBM (native text/JSON booster + bookkeeping)
    <target>-<key>/mlp/last.ckpt      the network after its last completed epoch (Lightning)
    <target>-<key>/mlp/final.*        the finished network (safetensors + JSON fit record)

Why keyed by a digest of the config and the training data: `--resume` must never continue a fit
on other data or other settings; the time limit, the checkpoint folder and the tracking settings
are left out of the key (resuming with more time or another MLflow server is the same fit).
Every file is written to a temporary name and moved into place with `os.replace`, so a kill at
any moment leaves the previous complete file or the new one, never half of one. Nothing here is a
pickle: JSON, safetensors, native booster formats, and Lightning checkpoints that only hold
tensors and plain values (read back with `torch.load(weights_only=True)`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from waypost.errors import ModelFileError

META = "meta.json"
FORMAT = "waypost.checkpoint"
FORMAT_VERSION = 1
#: config keys that do not change what a fit computes, so they stay out of the checkpoint key
UNKEYED = {"training": ("time_limit", "checkpoint_dir"), "tracking": None}


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary sibling and `os.replace` (fsynced first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    raw = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fit_key(config: dict[str, Any], data_digests: list[str | None], version: str) -> str:
    """16 hex digits of sha256 over the config (less UNKEYED), the data digests and waypost's version."""
    cfg = json.loads(json.dumps(config, default=str))
    for section, keys in UNKEYED.items():
        if keys is None:
            cfg.pop(section, None)
        else:
            for key in keys:
                cfg.get(section, {}).pop(key, None)
    body = json.dumps({"config": cfg, "data": data_digests, "waypost": version}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


class PartSlot:
    """The checkpoint folder of one part of the fit (gbm, mlp, image, text)."""

    def __init__(self, store: CheckpointStore, name: str) -> None:
        self.store, self.name = store, name
        self.dir = store.path / name

    @property
    def last_ckpt(self) -> Path:
        return self.dir / "last.ckpt"

    def has(self, filename: str) -> bool:
        return (self.dir / filename).is_file()

    def write(self, filename: str, data: bytes | str) -> None:
        atomic_write(self.dir / filename, data)

    def read_json(self, filename: str) -> dict[str, Any]:
        path = self.dir / filename
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"checkpoint file {path} is unreadable ({exc}); delete {self.store.path} "
                                 "to start this fit afresh") from None

    def write_json(self, filename: str, obj: Any) -> None:
        self.write(filename, json.dumps(obj, indent=1))

    def progress(self, **fields: Any) -> None:
        """Record how far this part got (shown in the interrupt message and the resume note)."""
        self.store.update_meta(parts={**self.store.meta.get("parts", {}), self.name: fields})


class CheckpointStore:
    """One fit's resumable state; see the module docstring."""

    def __init__(self, root: str | Path, key: str, target: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(target))[:40] or "fit"
        self.root = Path(root).expanduser().resolve()
        self.key = key
        self.path = self.root / f"{safe}-{key}"
        self.meta: dict[str, Any] = {}
        self.resumed = False

    def exists(self) -> bool:
        return (self.path / META).is_file()

    def read_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads((self.path / META).read_text())
        except (OSError, ValueError):
            return {}
        return meta if meta.get("format") == FORMAT and meta.get("format_version") == FORMAT_VERSION else {}

    def open(self, *, resume: bool) -> str:
        """Resume the existing folder (`resume` and one exists) or start a fresh one; returns a
        one-line note for the console and the plan ("" when there was nothing to say)."""
        found = self.read_meta() if self.exists() else {}
        if resume and found:
            self.meta, self.resumed = found, True
            self.update_meta(resumed=int(found.get("resumed", 0)) + 1)
            return f"resuming from checkpoint {self.path} ({self.describe()})"
        note = ""
        if found:
            self.meta = found
            note = (f"a checkpoint of an interrupted fit of this config and data exists ({self.describe()}); "
                    f"starting fresh and replacing it (pass --resume / fit(resume=True) to continue it)")
        elif resume:
            note = f"no checkpoint matches this config and data under {self.root}; starting fresh"
        if self.path.exists():
            shutil.rmtree(self.path)
        self.meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "key": self.key,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "parts": {}}
        self.update_meta()
        return note

    def update_meta(self, **fields: Any) -> None:
        self.meta.update(fields)
        atomic_write(self.path / META, json.dumps(self.meta, indent=1))

    def bind_run(self, run_id: str | None, tracking_uri: str | None) -> None:
        """The MLflow run this fit logs to, so a resume can continue it."""
        if run_id is not None:
            self.update_meta(run_id=run_id, tracking_uri=tracking_uri)

    @property
    def run_id(self) -> str | None:
        return self.meta.get("run_id") if self.resumed else None

    def slot(self, name: str) -> PartSlot:
        return PartSlot(self, name)

    def describe(self) -> str:
        parts = self.meta.get("parts", {})
        if not parts:
            return "no part finished an epoch yet"
        out = []
        for name, p in parts.items():
            if p.get("finished"):
                out.append(f"{name} finished")
            elif "epoch" in p:
                out.append(f"{name} after epoch {p['epoch'] + 1} of {p.get('max_epochs', '?')}")
        return ", ".join(out) or "no part finished an epoch yet"

    def remove(self) -> None:
        """The fit succeeded: its checkpoint is no longer needed."""
        shutil.rmtree(self.path, ignore_errors=True)

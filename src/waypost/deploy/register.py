"""Log a bundle to MLflow as a pyfunc model (served by the torch-free runtime) and register it.

The export gets its own run in the training run's experiment, tagged with the training run id,
so the registry shows which training produced each deployable version. With an alias (default
"champion" when none is set yet), `mlflow models serve -m models:/NAME@champion` serves it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from waypost.deploy.bundle import MAX_METRIC_DROP


def register_bundle(predictor: Any, bundle_dir: Path, report: dict[str, Any], *,
                    alias: str | None = "champion") -> dict[str, Any] | None:
    """Returns the registration info, or None when the model was trained without tracking."""
    from waypost.runtime.bundle import MANIFEST
    from waypost.track.tracker import MlflowTracker

    uri = predictor.lineage_.get("mlflow_tracking_uri")  # the store the training run lives in
    parent = predictor.lineage_.get("mlflow_run_id")
    if not uri or not parent:
        return None
    cfg = predictor.config_
    name = cfg.registered_model_name
    tracker = MlflowTracker(experiment=cfg.tracking.experiment, tracking_uri=uri,
                            run_name=f"{name}-export-{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"waypost.parent_run": parent, "waypost.stage": "export",
                                  "waypost.optimize": report["optimize"]})
    with tracker:
        tracker.log_params({"optimize": report["optimize"], "parent_run": parent})
        metrics = {"bundle_size_bytes": report["size_bytes"], "p50_ms_1row": report["latency"]["p50_ms_1row"],
                   "rows_per_s_batch": report["latency"]["rows_per_s_batch"]}
        if "metrics" in report:
            metrics["metric_drop"] = report["metrics"]["drop"]
        tracker.log_metrics(metrics)
        tracker.log_dict(report, "export_report.json")
        from waypost.kinds import get_kind

        extras = sorted({get_kind(k).runtime_extra for k in predictor.features_.values()})  # tokenizers for text
        info = tracker.log_model(bundle_dir, name, artifact_key="waypost_bundle",
                                 pip_requirements=[f"waypost[{','.join(extras)}]"])
        drop = (report.get("metrics") or {}).get("drop", 0.0)
        if alias and drop > MAX_METRIC_DROP:
            # registered for the record, but nothing serves it by alias: an over-budget int8/fp16
            # bundle must not become @champion because nobody read the warning
            info["alias_withheld"] = (f"{report['optimize']} costs {drop * 100:.1f} points, over the 1-point "
                                      f"budget: @{alias} not set (set it by hand if this is intended)")
        elif alias:
            existing = _aliases(tracker, name)
            if alias != "champion" or alias not in existing:
                tracker.set_alias(name, alias, info["version"])
                info["alias"] = alias
    # `mlflow models serve` finds the registry through MLFLOW_TRACKING_URI, not through waypost's own setting
    target = f"models:/{name}@{info['alias']}" if info.get("alias") else f"models:/{name}/{info['version']}"
    info["tracking_uri"] = uri
    info["serve_command"] = f"MLFLOW_TRACKING_URI={uri} mlflow models serve -m {target} --env-manager local"
    # the bundle now knows its registered version; the server reports it with every prediction
    manifest_path = bundle_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["model_version"] = f"{name}/{info['version']}"
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(manifest_path)
    return info


def _aliases(tracker: Any, name: str) -> dict[str, str]:
    try:
        return dict(tracker.client.get_registered_model(name).aliases)
    except Exception:  # a registry without aliases support, or the model was just created
        return {}

"""MLflow tracking and model registry behind one small object, `MlflowTracker`.

Why not the fluent `mlflow.*` API: it keeps a global tracking URI and "active run", so a library
using it leaks state into the user's process (their own runs, their notebook). The tracker talks
to one store through an explicit `MlflowClient`; only where MLflow itself reads the global URI
(model logging, registering a `models:/` source) is it pinned for the call and restored.
Why batching: each `log_metric` is one SQLite transaction; metrics are buffered and written with
`log_batch` (MLflow's limits: 1000 metrics, 100 params/tags per batch).
The embedded default is `sqlite:///<workdir>/.waypost/mlflow.db` with artifacts in
`<workdir>/.waypost/artifacts`, so `mlflow ui --backend-store-uri sqlite:///.waypost/mlflow.db`
shows runs, artifacts and models. mlflow is imported inside methods only: the CLI imports this
module and must start fast (a test checks `mlflow` stays out of `sys.modules`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from waypost.errors import ConfigError, ModelFileError
from waypost.track.mlflow_state import pinned_tracking_uri, quiet_signature_warning
from waypost.track.null import NullTracker, _close_figure

__all__ = ["DEFAULT_DIR", "ENV_TRACKING_URI", "MlflowTracker", "NullTracker", "make_tracker",
           "resolve_tracking_uri"]

log = logging.getLogger(__name__)

DEFAULT_DIR = ".waypost"
ENV_TRACKING_URI = "WAYPOST_TRACKING_URI"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"

# MLflow's limits (mlflow.utils.validation); copied so this module need not import mlflow.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_KEY_LENGTH = 250
_STATUSES = ("FINISHED", "FAILED", "KILLED")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")  # 2+ letters: "C:\..." is a path, not a scheme
_SQLITE_EXT = (".db", ".sqlite", ".sqlite3")
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")  # MLflow's portable key alphabet (no ':' on Windows)


def resolve_tracking_uri(uri: str | Path | None = None, workdir: str | Path = ".") -> str:
    """Pick the tracking store: explicit `uri` > env `WAYPOST_TRACKING_URI` > the embedded default.

    Why the normalisation: users type paths, MLflow wants URIs. Anything with a scheme
    (`sqlite://`, `http://`, `postgresql://`, `file://`, `databricks`) is used as is; a local path
    ending in .db/.sqlite becomes an SQLite store; any other local path becomes a file store.
    Relative paths are taken relative to `workdir`. The default is
    `sqlite:///<abs workdir>/.waypost/mlflow.db`, and its folder is created.
    """
    chosen = str(uri) if uri not in (None, "") else os.environ.get(ENV_TRACKING_URI, "").strip()
    root = Path(workdir).expanduser().resolve()
    if not chosen:
        folder = root / DEFAULT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(folder / DB_FILE).as_posix()}"
    if _SCHEME.match(chosen) or chosen == "databricks":
        return chosen
    path = Path(chosen).expanduser()
    path = path if path.is_absolute() else root / path
    if path.suffix.lower() in _SQLITE_EXT:
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.as_posix()}"
    return path.as_uri()


def _sqlite_path(uri: str) -> Path | None:
    """Local database file behind an `sqlite:///` URI, or None (other stores, in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri[len("sqlite:///"):].split("?", 1)[0]
    if not raw or raw == ":memory:":
        return None
    return Path(raw).resolve()


def _clean_key(key: str) -> str:
    """Make `key` a valid MLflow param/metric/tag name instead of failing a whole batch on it."""
    key = _BAD_KEY_CHARS.sub("_", str(key)).strip() or "_"
    key = posixpath.normpath(key).lstrip("/")  # MLflow rejects keys that normalise to another name
    if key in (".", "") or key.startswith(".."):
        key = "_" + key
    return key[:MAX_KEY_LENGTH]


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: MLflow params are flat, configs are nested."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_text(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (list, tuple, Mapping)) else str(value)
    return text[:MAX_PARAM_VAL_LENGTH]


def _jsonable(value: Any) -> Any:
    """json `default=`: numpy scalars/arrays, paths and sets appear in configs and metrics."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return sorted(value, key=str) if isinstance(value, (set, frozenset)) else str(value)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowTracker:
    """One MLflow run in one store: params, buffered metrics, artifacts, models and the registry.

    Use it as a context manager: `with MlflowTracker("exp") as t: ...` starts the run and ends it
    FINISHED, or FAILED when the block raises, KILLED when it stops for a signal (KeyboardInterrupt,
    `waypost.train.interrupt.FitInterrupted`); the exception propagates.

    Each run is tagged with this host, pid and process start time; starting a run first marks FAILED
    the runs of this experiment that a dead process on this host left RUNNING
    (`waypost.track.run_lifecycle`). `resume_run_id` continues an interrupted run instead of
    creating one (when it is KILLED/FAILED in this experiment; otherwise a new run is tagged
    `waypost.resumed_from`); `continued` then says so and `continued_metrics` holds the metric keys
    the run already has.
    """

    def __init__(self, experiment: str, tracking_uri: str | None = None, workdir: str | Path = ".",
                 run_name: str | None = None, tags: Mapping[str, Any] | None = None,
                 resume_run_id: str | None = None) -> None:
        if not experiment or not str(experiment).strip():
            raise ConfigError("experiment name must be a non-empty string")
        self.experiment = str(experiment)
        self.workdir = Path(workdir).expanduser().resolve()
        self.tracking_uri = resolve_tracking_uri(tracking_uri, self.workdir)
        self.run_name = run_name
        self.tags = {str(k): v for k, v in (tags or {}).items()}
        self.experiment_id: str | None = None
        self._run_id: str | None = None
        self._client: Any = None
        self._metrics: list[Any] = []
        self._params: dict[str, str] = {}
        self._skipped_metrics = 0
        self._ended = False
        self.resume_run_id = resume_run_id
        self.continued = False
        self.continued_metrics: frozenset[str] = frozenset()
        self._continued_params: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    @property
    def run_id(self) -> str | None:
        """The MLflow run id once `start()` ran, else None."""
        return self._run_id

    @property
    def client(self) -> Any:
        """The `MlflowClient` bound to this tracker's store (tracking and registry)."""
        if self._client is None:
            from mlflow import MlflowClient

            # registry_uri pinned too: a user's MLFLOW_REGISTRY_URI must not split our runs and
            # their registered versions across two stores.
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def artifact_root(self) -> str | None:
        """Where a new experiment stores artifacts: beside a local SQLite file, else the server's choice.

        For the embedded default that is `<workdir>/.waypost/artifacts`. Without it MLflow would
        write `./mlruns` relative to whatever the current directory happens to be.
        """
        db = _sqlite_path(self.tracking_uri)
        return None if db is None else (db.parent / ARTIFACTS_DIR).as_uri()

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        client = self.client
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                return client.create_experiment(self.experiment, artifact_location=self.artifact_root())
            except MlflowException:  # created meanwhile by another process: use theirs
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            # a deleted experiment still owns its name; reviving it beats a confusing error
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id

    def start(self) -> MlflowTracker:
        """Create the experiment (if new) and a run; returns self. No-op while a run is open; after
        `end()` it opens a fresh run (one tracker can serve a sequence of runs)."""
        if self._run_id is not None and not self._ended:
            return self
        # MLflow's per-artifact progress bars and INFO lines about table creation drown the plan
        # (imported first: importing mlflow sets its logger back to INFO).
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow  # noqa: F401

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        db = _sqlite_path(self.tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        from waypost import __version__

        from waypost.track.run_lifecycle import continue_run, identity_tags, mark_orphans

        self.experiment_id = self._experiment_id()
        mark_orphans(self.client, self.experiment_id)
        tags = {"waypost.version": __version__, **self.tags, **identity_tags()}
        tags = {_clean_key(k): str(v)[:MAX_TAG_VAL_LENGTH] for k, v in tags.items()}
        old = continue_run(self.client, self.resume_run_id, self.experiment_id) if self.resume_run_id else None
        resume_from, self.resume_run_id = self.resume_run_id, None  # a later start() opens a fresh run
        self._ended, self._params, self._skipped_metrics = False, {}, 0
        self.continued, self.continued_metrics, self._continued_params = False, frozenset(), {}
        if old is not None:
            self._run_id, self.run_name = old.info.run_id, old.info.run_name
            self.continued, self.continued_metrics = True, frozenset(old.data.metrics)
            self._continued_params = dict(old.data.params)
            return self
        if resume_from:
            tags["waypost.resumed_from"] = resume_from
        run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
        self._run_id, self.run_name = run.info.run_id, run.info.run_name
        return self

    def end(self, status: str = "FINISHED") -> None:
        """Write buffered metrics and close the run with `status` (FINISHED, FAILED or KILLED)."""
        status = status.upper()
        if status not in _STATUSES:
            raise ConfigError(f"run status must be one of {_STATUSES}, got {status!r}")
        if self._run_id is None or self._ended:
            return
        try:
            self.flush()
        finally:
            self.client.set_terminated(self._run_id, status=status)
            self._ended = True
        if self._skipped_metrics:
            log.info("run %s: skipped %d NaN/inf metric values", self._run_id, self._skipped_metrics)

    def __enter__(self) -> MlflowTracker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc_type is None:
            self.end("FINISHED")
            return False
        from waypost.train.interrupt import FitInterrupted

        status = "KILLED" if issubclass(exc_type, (KeyboardInterrupt, FitInterrupted)) else "FAILED"
        try:
            if isinstance(exc, FitInterrupted) and self._run_id is not None and not self._ended:
                self.set_tags({"waypost.interrupted_by": exc.signal_name})
            self.end(status)
        except Exception:  # never let bookkeeping hide the user's real exception
            log.exception("could not mark MLflow run %s as %s", self._run_id, status)
        return False

    def _require_run(self) -> str:
        if self._run_id is None or self._ended:
            raise ConfigError("no active run: call start() or use `with tracker:` before logging")
        return self._run_id

    # ------------------------------------------------------------------ params, metrics, tags
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) params, flattened with dots, as strings truncated to MLflow's 6000 chars.

        MLflow params are write-once: re-logging the same value is skipped, a different value for
        a logged key raises ConfigError (naming the key) before anything reaches the store.
        """
        from mlflow.entities import Param

        run_id = self._require_run()
        fresh: dict[str, str] = {}
        changed: dict[str, str] = {}
        for key, value in _flatten(params).items():
            name, text = _clean_key(key), _param_text(value)
            if name in self._continued_params:  # a continued run keeps its params; a changed one
                if self._continued_params[name] != text:  # (e.g. a longer time_limit) becomes a tag
                    changed[f"waypost.resume.{name}"] = text
                continue
            old = self._params.get(name, fresh.get(name))
            if old is None:
                fresh[name] = text
            elif old != text:
                raise ConfigError(f"param {name!r} was already logged as {old!r}; cannot change it to {text!r}")
        items = [Param(k, v) for k, v in fresh.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk, synchronous=True)
        self._params.update(fresh)
        if changed:
            self.set_tags(changed)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer metrics for `step` (0 when None); NaN/inf are skipped (MLflow charts break on them).

        Written on `flush()`, `end()`, or as soon as a full batch (1000) is buffered. Values may be
        Python, numpy or 0-d torch numbers.
        """
        from mlflow.entities import Metric

        self._require_run()
        stamp = int(time.time() * 1000)
        step = int(step or 0)
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}") from None
            if not math.isfinite(number):
                self._skipped_metrics += 1
                continue
            self._metrics.append(Metric(_clean_key(key), number, stamp, step))
        if len(self._metrics) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write buffered metrics in batches of 1000 (MLflow's limit per `log_batch`)."""
        if not self._metrics or self._run_id is None:
            return
        pending, self._metrics = self._metrics, []
        try:
            for chunk in _chunks(pending, MAX_METRICS_PER_BATCH):
                self.client.log_batch(self._run_id, metrics=chunk, synchronous=True)
        except Exception:
            self._metrics = pending + self._metrics  # keep them for a retry rather than lose them
            raise

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values stringified, truncated to MLflow's 8000 chars)."""
        from mlflow.entities import RunTag

        run_id = self._require_run()
        items = [RunTag(_clean_key(k), str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk, synchronous=True)

    # ------------------------------------------------------------------ artifacts
    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Write `obj` as YAML (.yaml/.yml) or JSON (anything else); numpy values are converted."""
        text = json.dumps(obj, indent=2, default=_jsonable)
        if artifact_file.lower().endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(json.loads(text), sort_keys=False)
        self.log_text(text, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write `text` to `artifact_file` (a path inside the run's artifacts)."""
        self.client.log_text(self._require_run(), text, artifact_file)

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as `artifact_file` (png, svg, pdf by extension), then close it.

        Closing matters: a training run makes dozens of figures and pyplot keeps each alive.
        """
        try:
            self.client.log_figure(self._require_run(), fig, artifact_file)
        finally:
            _close_figure(fig)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """Copy every file under `local_dir` into the run's artifacts (under `artifact_path`)."""
        self.client.log_artifacts(self._require_run(), str(local_dir), artifact_path)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy one file into the run's artifacts (under `artifact_path`)."""
        self.client.log_artifact(self._require_run(), str(path), artifact_path)

    # ------------------------------------------------------------------ models and registry
    def log_model(self, model_dir: str | Path, registered_model_name: str | None = None, *,
                  pip_requirements: list[str] | None = None, name: str = "model",
                  input_example: Any = None, artifact_key: str = "waypost_model") -> dict[str, Any]:
        """Log a saved waypost model directory as an MLflow pyfunc model; register it if named.

        The model is an MLflow 3 "model from code": the pyfunc is `waypost/track/pyfunc_model.py`
        (copied as source) and `model_dir` is its artifact `waypost_model`, so nothing is pickled
        and `mlflow.pyfunc.load_model(uri)` / `mlflow models serve` run `Predictor.load`.
        Explicit `pip_requirements` (default `["waypost"]`) skip MLflow's slow environment
        inference. The logged model is created in this run's experiment and linked to the run;
        the version is registered in the same store. Returns model_uri, model_id, run_id,
        registered_model and version (None when not registered).

        `input_example` (a few rows of the input frame) makes MLflow load the model once to
        infer and store a signature; that imports the Predictor and torch, so it costs seconds
        and is off by default (the model is then logged without a signature).
        """
        import mlflow
        from mlflow.models import Model

        run_id = self._require_run()
        src = Path(model_dir).expanduser().resolve()
        if not src.is_dir():
            raise ModelFileError(f"model directory {str(src)!r} does not exist or is not a directory")
        self.flush()  # MLflow links the run's metrics at this step to the logged model
        code = Path(__file__).resolve().with_name("pyfunc_model.py")
        client = self.client
        # Created here, and Model.log given run_id: mlflow.pyfunc.log_model takes neither a run nor
        # an experiment and, without an active fluent run, files the model under experiment "0".
        logged = client.create_logged_model(
            experiment_id=self.experiment_id, name=name, source_run_id=run_id, params=dict(self._params),
            tags={"waypost.model_dir": str(src)}, model_type="waypost",
        )
        with pinned_tracking_uri(self.tracking_uri), quiet_signature_warning(input_example is None):
            info = Model.log(  # what mlflow.pyfunc.log_model does, plus run_id (see above)
                artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id, model_id=logged.model_id,
                python_model=str(code), artifacts={artifact_key: str(src)}, input_example=input_example,
                pip_requirements=list(pip_requirements) if pip_requirements is not None else ["waypost"],
            )
        result: dict[str, Any] = {"model_uri": info.model_uri, "model_id": logged.model_id, "run_id": run_id,
                                  "registered_model": None, "version": None}
        if registered_model_name:
            version = self.register_model(info.model_uri, registered_model_name, model_id=logged.model_id)
            result.update(registered_model=registered_model_name, version=version)
        return result

    def register_model(self, model_uri: str, name: str, *, model_id: str | None = None) -> str:
        """Add a version of registered model `name` pointing at `model_uri`; returns the version."""
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        # The SQL registry resolves a `models:/<id>` source through the *global* tracking URI
        # (an MLflow TODO), hence the pin.
        with pinned_tracking_uri(self.tracking_uri):
            mv = client.create_model_version(name, source=model_uri, run_id=self._run_id, model_id=model_id)
        return str(mv.version)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Point `alias` (e.g. "champion") of registered model `name` at `version`."""
        self.client.set_registered_model_alias(name, alias, str(version))


def make_tracker(enabled: bool, **kwargs: Any) -> MlflowTracker | NullTracker:
    """`MlflowTracker(**kwargs)` when tracking is on, else a `NullTracker` (for `--no-track`)."""
    return MlflowTracker(**kwargs) if enabled else NullTracker()

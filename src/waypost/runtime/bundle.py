"""A deployed bundle: `waypost.json` + `model.onnx`, run with numpy and onnxruntime only."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from waypost.errors import DataError, ModelFileError
from waypost.runtime.features import ISSUES, TabularTransform

MANIFEST = "waypost.json"
FORMAT = "waypost.bundle"
#: 2: the preprocessor is one "frame" state for every table (`waypost.kinds.frame`); 1 still loads
FORMAT_VERSION = 2


def is_bundle(path: str | os.PathLike) -> bool:
    """A bundle directory (from `waypost export`), as opposed to a model directory (`Predictor.save`)."""
    return (Path(path) / MANIFEST).is_file()


def read_bundle_manifest(path: Path) -> dict[str, Any]:
    from waypost.manifest import read_versioned_json

    return read_versioned_json(path, MANIFEST, fmt=FORMAT, max_version=FORMAT_VERSION, kind="bundle directory",
                               written_by="`waypost export`")


class Bundle:
    """Preprocessing from the manifest + one onnxruntime session. Thread-safe for `infer`
    (onnxruntime sessions allow concurrent `run`)."""

    def __init__(self, path: str | os.PathLike, *, providers: list[str] | None = None,
                 intra_op_threads: int | None = None) -> None:
        """Loads and verifies (`waypost.runtime.verify`): the manifest's structure, the graph's
        sha256 against the manifest, its inputs and outputs, and one self-test prediction. Any
        failure is a ModelFileError naming the file and what is wrong."""
        import onnxruntime as ort

        from waypost.runtime import verify

        self.path = Path(path)
        self.manifest = manifest = read_bundle_manifest(self.path)
        where = str(self.path / MANIFEST)
        verify.check_manifest(manifest, where)
        model_file = self.path / manifest["model"]["file"]
        blob = verify.read_verified(model_file, manifest["model"]["digest"])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            self.session = ort.InferenceSession(blob, options, providers=providers or _providers(ort))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelFileError(f"{model_file}: onnxruntime cannot load it ({exc})") from None
        verify.check_graph(self.session, manifest, where)
        self._inputs = [i.name for i in self.session.get_inputs()]
        self.task: str = manifest["task"]
        self.target: str = manifest["target"]
        self.features: dict[str, str] = dict(manifest["features"])
        from waypost.tasks import get_task

        self._task = get_task(self.task)  # the output contract: raw graph output -> the answer
        self._encoder_state = encoder = manifest["target_encoder"]
        self.classes: list[Any] | None = list(encoder["classes"]) if self._task.is_classification else None
        self.version: str = manifest.get("model_version") or manifest["model"]["digest"][:19]
        try:
            self._transform = input_transform(manifest["preprocessor"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{where}: the preprocessor state cannot be used ({exc!r})") from None
        verify.self_test(self)

    def example_record(self) -> dict[str, Any]:
        """A row built from the fitted state (medians, most frequent categories): for docs and probes."""
        from waypost.runtime.verify import example_record

        return example_record(self.manifest)

    # ---- input ---------------------------------------------------------------------------
    def _columns(self, data: Any) -> tuple[dict[str, Any], int]:
        if _is_frame(data):  # a pandas DataFrame, without importing pandas here
            missing = [c for c in self.features if c not in data.columns]
            if missing:
                raise DataError(f"missing columns: {missing}")
            from waypost.runtime.frames import frame_columns

            data = frame_columns(data, list(self.features))
        if isinstance(data, dict):
            missing = [c for c in self.features if c not in data]
            if missing:
                raise DataError(f"missing columns: {missing}")
            cols = {c: data[c] for c in self.features}
            lengths = {len(v) if hasattr(v, "__len__") and not isinstance(v, str) else -1 for v in cols.values()}
            if -1 in lengths or len(lengths) != 1:
                raise DataError("columns must be lists or arrays of one common length")
            n = lengths.pop()
        elif isinstance(data, (list, tuple)):
            n = len(data)
            for i, rec in enumerate(data):
                if not isinstance(rec, dict):
                    raise DataError(f"record {i} is a {type(rec).__name__}; expected a mapping of column -> value")
                absent = [c for c in self.features if c not in rec]
                if absent:
                    raise DataError(f"record {i} is missing columns: {absent}")
            cols = {c: [rec[c] for rec in data] for c in self.features}
        else:
            raise DataError(f"expected a list of records or a dict of columns, got {type(data).__name__}")
        if n == 0:
            raise DataError("empty batch: no rows to predict")
        return cols, n

    # ---- inference -----------------------------------------------------------------------
    def _views(self, data: Any) -> dict[str, Any]:
        cols, n = self._columns(data)
        return self._transform(cols, n)

    def feeds(self, data: Any) -> dict[str, np.ndarray]:
        """The graph's inputs for `data`: the preprocessing alone, what bare onnxruntime is fed."""
        views = self._views(data)
        return {name: views[name] for name in self._inputs}

    def _run(self, views: dict[str, Any]) -> np.ndarray:
        raw = self.session.run(None, {name: views[name] for name in self._inputs})[0]
        finite = np.isfinite(raw).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            raise NonFiniteOutput(rows)
        return raw

    def raw(self, data: Any) -> np.ndarray:
        """The graph's output: class probabilities, or the standardised regression value (n, 1).
        Never NaN or infinite: such a row raises `NonFiniteOutput` (a DataError) naming it."""
        return self._run(self._views(data))

    def infer(self, data: Any) -> dict[str, Any]:
        """{"prediction", "proba" (None for regression), "issues"}: `issues` maps "unseen" (values
        outside a category's training vocabulary) and "clipped" (numbers outside the training range)
        to {column: bool mask over the rows}, only for columns with at least one."""
        views = self._views(data)
        raw = self._run(views)
        return {**self._task.decode(raw, self._encoder_state), "issues": views.get(ISSUES, {})}

    def predict(self, data: Any) -> np.ndarray:
        return self.infer(data)["prediction"]  # type: ignore[return-value]

    def predict_proba(self, data: Any) -> np.ndarray:
        if not self._task.is_classification:
            raise DataError(f"predict_proba is for classification; this bundle's task is {self.task}")
        return self.infer(data)["proba"]  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, task={self.task!r}, version={self.version!r})"


class NonFiniteOutput(DataError):
    """The graph answered NaN or infinity for some rows: never sent as an answer."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = [int(r) for r in rows]
        shown = ", ".join(str(r) for r in self.rows[:10]) + (" ..." if len(self.rows) > 10 else "")
        super().__init__(f"row {self.rows[0]}: the model's output is not a finite number (rows {shown}); "
                         "check the values of these rows")


def _is_frame(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns") and hasattr(data, "to_numpy")


def input_transform(state: dict[str, Any]) -> Any:
    """The preprocessor state -> a callable (columns, n) -> the graph's input arrays by name.

    Each encoder column gets its kind's transform (Pillow or tokenizers, imported only then); the
    tabular columns get `TabularTransform`. The export calibrates int8 through this same function,
    so it feeds what the bundle will feed.
    """
    from waypost.kinds import get_kind
    from waypost.kinds.frame import frame_state

    state = frame_state(state)
    if state.get("kind") != "frame":
        raise ModelFileError(f"bundle preprocessor has kind {state.get('kind')!r}; expected 'frame'")
    steps = [get_kind(entry["kind"]).runtime_transform(entry) for entry in state["columns"]]
    if state.get("tabular") is not None:
        steps.append(TabularTransform(state["tabular"]))
    if len(steps) == 1:
        return steps[0]

    def transform(columns: dict[str, Any], n: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for step in steps:
            out.update(step(columns, n))
        return out

    return transform


def _providers(ort: Any) -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]

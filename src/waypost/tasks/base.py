"""What every task provides (see docs/architecture.md for how forecast, anomaly and recommend plug
in). One immutable instance per task; `tests/test_conformance.py::test_task_contract` and
`tests/test_tasks.py` check each.

Why a task object: the differences between binary, multiclass and regression (output width, last
activation, target dtype, split, loss, metrics, how a raw output becomes an answer) used to be
`if task == "regression"` branches in two dozen files; each new task would have had to find them
all. Now they live here once, and the rest of the package asks.

numpy only at import: the torch-free runtime decodes through `Task.decode`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from waypost.errors import DataError


class Task:
    """The interface; `waypost.tasks.classification` and `waypost.tasks.regression` implement it."""

    name: str = ""
    #: labels with a class codec, probabilities out
    is_classification: bool = False
    #: anomaly (later) trains without a target
    needs_target: bool = True
    #: what the validation loss is, in words (the plan's selection line)
    validation_loss_name: str = ""

    _frozen = False

    def _freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, key: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError(f"task {self.name!r} is immutable (one shared instance per task)")
        object.__setattr__(self, key, value)

    # ---- the network's output --------------------------------------------------------------
    def n_outputs(self, n_classes: int) -> int:
        """The network's and the graph's output width."""
        raise NotImplementedError

    def output_activation(self) -> str:
        """"softmax" or "identity": what a network's last layer is followed by (and its ONNX graph)."""
        raise NotImplementedError

    def target_dtype(self) -> Any:
        """The encoded target's numpy dtype (int64 codes, float32 standardised values)."""
        raise NotImplementedError

    # ---- data ------------------------------------------------------------------------------
    def stratify_labels(self, y: Any) -> Any:
        """Labels to stratify the validation split on (a pandas Series), or None for a random split."""
        raise NotImplementedError

    def split_reason(self) -> str:
        """What the split stratifies on, in words."""
        raise NotImplementedError

    # ---- training --------------------------------------------------------------------------
    def validation_loss(self, raw: np.ndarray, y: np.ndarray) -> float:
        """The loss early stopping, ensembling and selection minimise, on encoded targets."""
        raise NotImplementedError

    def choose_loss(self, training: Any, y_train: np.ndarray, n_classes: int = 0) -> tuple[Any, str, Any]:
        """(loss module, sampling "none" | "oversample", the plan's Decision) from the training
        config (`loss`, `imbalance`, `focal_gamma`) and the encoded training targets. `n_classes`
        sizes the class counts when a class is absent from `y_train` (0: the largest code seen)."""
        raise NotImplementedError

    # ---- evaluation ------------------------------------------------------------------------
    def metrics(self, y: np.ndarray, raw: np.ndarray, encoder: Any) -> dict[str, float]:
        """`evaluate`'s metrics, in the original label/target space: `y` encoded, `raw` the output,
        `encoder` the fitted TargetEncoder (or its JSON state)."""
        raise NotImplementedError

    def choose_threshold(self, y: np.ndarray, raw: np.ndarray, decision: Any) -> tuple[float | None, str]:
        """A decision threshold fitted on validation outputs (binary classification); None: none."""
        return None, ""

    def headline_metric(self, n_classes: int) -> str:
        """The one number a before/after comparison shows."""
        raise NotImplementedError

    # ---- the output contract ---------------------------------------------------------------
    def decode(self, raw: np.ndarray, encoder_state: dict[str, Any]) -> dict[str, Any]:
        """The output contract, numpy only: {"prediction", "proba" or None} from the raw output and
        the target encoder's JSON state. Shared by the runtime, `Predictor` and the server."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # one shared instance per task: a deep copy of a model (pruning copies the predictor) keeps it
    def __copy__(self) -> Task:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Task:
        return self


def encoder_state(encoder: Any) -> dict[str, Any]:
    """A TargetEncoder's JSON state, or the state itself: `metrics` takes either."""
    return encoder if isinstance(encoder, dict) else encoder.to_state()


def rows_of(raw: Any, what: str) -> np.ndarray:
    """`raw` as an array with rows, or a DataError saying what was expected."""
    arr = np.asarray(raw)
    if arr.ndim == 0:
        raise DataError(f"{what}: expected one output row per input row, got a scalar")
    return arr

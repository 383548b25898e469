"""Randomised tree ensembles (scikit-learn's extra trees and random forest) on the GBM view.

Why: averaged deep trees make errors unlike boosting's, which is what a weighted ensemble needs;
AutoGluon's default stack carries both for that reason. They read the GBM view (raw numbers with
NaN, category codes as ordered numbers; scikit-learn >= 1.6 routes NaN in both).

The fitted trees are converted once to an ONNX `TreeEnsembleRegressor` (`deploy.gbm_onnx.
forest_model`), and that graph is the part: `predict_raw` runs it in onnxruntime, the model file is
the graph itself, and the bundle merges it. So the validation predictions the ensemble weights are
fitted on are exactly what a bundle serves, and nothing is pickled. Size: a fully grown tree holds
about one leaf per training row; leaves are capped (`max_leaf_nodes`) so a 50k-row table gives a
graph of tens of MB, not gigabytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from waypost.data.preprocess import TabularArrays
from waypost.data.types import TABULAR_TYPES
from waypost.errors import ModelFileError, NotFittedError
from waypost.models.registry import register

N_TREES = 100
#: leaves per tree: 100 trees x 2,048 leaves ~ 400k nodes, ~20 MB of graph
MAX_LEAVES = 2048


class TreeGraphPart:
    """A tree ensemble whose part *is* its ONNX graph: fitted by a library that cannot serve in a
    bundle (scikit-learn, CatBoost), converted once, then predicted, saved and exported as that
    graph. A subclass fits and calls `_set_graph`; `ENTRY` names the constructor arguments its
    manifest entry keeps (the rest of the entry is common)."""

    kind = ""
    ENTRY: tuple[str, ...] = ()
    variant = ""  # the graph's output and file name

    @property
    def output(self) -> str:
        return f"{self.variant}_out"

    def _set_graph(self, model: Any) -> None:
        import onnxruntime as ort

        self.graph_ = model
        trees = next(n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor")
        self.n_nodes_ = len(next(a for a in trees.attribute if a.name == "nodes_nodeids").ints)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session_ = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    def predict_raw(self, arrays: TabularArrays) -> np.ndarray:
        if not hasattr(self, "graph_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() first")
        x = np.ascontiguousarray(arrays.gbm, dtype=np.float32)
        out = np.asarray(self.session_.run(None, {"gbm": x})[0], dtype=np.float64)
        return out if self.classifier else out[:, 0]

    def to_onnx(self, sample: TabularArrays) -> Any:
        return self.graph_

    def save(self, directory: Path) -> dict[str, Any]:
        path = directory / f"{self.variant}.onnx"
        path.write_bytes(self.graph_.SerializeToString())
        return {"kind": self.kind, "file": path.name, "task": self.task, "n_classes": self.n_classes,
                **{k: getattr(self, k) for k in self.ENTRY}}

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> TreeGraphPart:
        import onnx

        from waypost.models.parts import part_file

        path = part_file(directory, entry)
        model = cls(task=entry["task"], n_classes=entry["n_classes"], **{k: entry[k] for k in cls.ENTRY})
        try:
            graph = onnx.load_from_string(path.read_bytes())
            onnx.checker.check_model(graph)
            model._set_graph(graph)
        except Exception as exc:  # a truncated or foreign file: onnx and onnxruntime raise their own types
            raise ModelFileError(f"{path}: not a readable ONNX tree ensemble ({exc})") from None
        return model


class ForestModel(TreeGraphPart):
    kind = "forest"
    ENTRY = ("variant", "n_trees", "max_leaves")

    def __init__(self, *, task: str, n_classes: int = 0, variant: str = "extra_trees", seed: int = 0,
                 n_trees: int = N_TREES, max_leaves: int = MAX_LEAVES) -> None:
        from waypost.tasks import get_task

        if variant not in ("extra_trees", "random_forest"):
            raise ValueError(f"forest variant must be extra_trees or random_forest, got {variant!r}")
        self.task, self.n_classes, self.variant, self.seed = task, n_classes, variant, seed
        self.classifier = get_task(task).is_classification
        self.n_trees, self.max_leaves = n_trees, max_leaves

    def fit(self, train: TabularArrays, y_train: np.ndarray, valid: TabularArrays, y_valid: np.ndarray,
            *, tracker: Any = None, verbose: bool = False, time_limit: float | None = None) -> ForestModel:
        import time

        from sklearn import ensemble

        from waypost.deploy.gbm_onnx import forest_model
        from waypost.deploy.onnx_graph import OPSET

        family = {"extra_trees": "ExtraTrees", "random_forest": "RandomForest"}[self.variant]
        cls = getattr(ensemble, family + ("Classifier" if self.classifier else "Regressor"))
        # min_samples_leaf 1 memorises small regression tables through the averaging; 2 is smoother
        est = cls(n_estimators=self.n_trees, max_leaf_nodes=self.max_leaves, min_samples_leaf=1 if self.classifier else 2,
                  max_features="sqrt" if self.classifier else 1.0, n_jobs=1, random_state=self.seed)
        start = time.perf_counter()
        est.fit(np.ascontiguousarray(train.gbm, dtype=np.float32), y_train)
        self.seconds_ = time.perf_counter() - start
        n_targets = len(est.classes_) if self.classifier else 1
        if self.classifier and n_targets != max(self.n_classes, 2):
            raise ValueError(f"the training rows hold {n_targets} of the {self.n_classes} classes")
        self._set_graph(forest_model(est.estimators_, train.gbm.shape[1], n_targets, self.classifier,
                                     self.output, OPSET))
        return self


@register("extra_trees", data_types=TABULAR_TYPES, requires=("sklearn",), priority=2,
          reason="extremely randomised trees, averaged: errors unlike boosting's, so they add to an ensemble",
          when="an ensemble part on tabular data (preset medium and best), or when asked")
def build_extra_trees(**kwargs: Any) -> ForestModel:
    return ForestModel(variant="extra_trees", **kwargs)


@register("random_forest", data_types=TABULAR_TYPES, requires=("sklearn",), priority=2,
          reason="a random forest (bootstrapped trees on random feature subsets), averaged",
          when="an ensemble part on tabular data (preset best), or when asked")
def build_random_forest(**kwargs: Any) -> ForestModel:
    return ForestModel(variant="random_forest", **kwargs)

"""CatBoost on the GBM view: ordered boosting of oblivious (symmetric) trees.

Why: its ordered boosting and symmetric trees are strong and hard to overfit on small tables, and
its errors differ from LightGBM's leaf-wise trees. What it does not get here is its own categorical
encoding (ordered target statistics): CatBoost cannot export a model with categorical features to
ONNX, and a bundle must not need CatBoost, so categories reach it as the GBM view's integer codes,
as they reach the forests. Measured on one split (issue #12 research): wa_churn log loss 0.421
native vs 0.427 on codes, diamonds RMSE 597 both at 1,000 rounds.

The fitted trees are converted to an ONNX `TreeEnsembleRegressor` (`_graph`, from CatBoost's JSON
dump: each oblivious tree becomes a full binary tree of its depth) and that graph is the part, as
for the forests: `predict_raw` runs it, the file is the graph, loading needs no CatBoost.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from waypost.data.preprocess import TabularArrays
from waypost.data.types import TABULAR_TYPES
from waypost.models.forest import TreeGraphPart
from waypost.models.registry import register

ITERATIONS = 1000
EARLY_STOPPING = 50


class CatBoostModel(TreeGraphPart):
    """A tree part whose graph comes from CatBoost (its ONNX plumbing is the forests')."""

    kind = "catboost"
    variant = "catboost"
    ENTRY = ("iterations",)

    def __init__(self, *, task: str, n_classes: int = 0, seed: int = 0, iterations: int = ITERATIONS) -> None:
        from waypost.tasks import get_task

        self.task, self.n_classes, self.seed = task, n_classes, seed
        self.classifier = get_task(task).is_classification
        self.iterations = iterations

    def fit(self, train: TabularArrays, y_train: np.ndarray, valid: TabularArrays, y_valid: np.ndarray,
            *, tracker: Any = None, verbose: bool = False, time_limit: float | None = None) -> CatBoostModel:
        import time

        import catboost as cb

        from waypost.config import GBMConfig
        from waypost.models.gbm import n_jobs
        from waypost.train.gbm_callbacks import RoundClock
        from waypost.train.session import fit_deadline

        params = dict(iterations=self.iterations, od_type="Iter", od_wait=EARLY_STOPPING, use_best_model=True,
                      random_seed=self.seed, verbose=0, allow_writing_files=False,
                      thread_count=n_jobs(GBMConfig(), len(y_train)))
        clock = RoundClock(fit_deadline(time_limit), self.iterations)
        est = cb.CatBoostClassifier(**params) if self.classifier else cb.CatBoostRegressor(**params)
        start = time.perf_counter()
        est.fit(np.ascontiguousarray(train.gbm, np.float32), y_train,
                eval_set=(np.ascontiguousarray(valid.gbm, np.float32), y_valid), callbacks=[_Deadline(clock)])
        self.time_note_ = clock.describe()
        self.seconds_ = time.perf_counter() - start
        self.best_iteration_ = int(est.get_best_iteration() or 0) + 1
        self._set_graph(_graph(est, train.gbm.shape[1], self.classifier, self.output))
        return self


class _Deadline:
    """CatBoost's per-iteration hook: stop boosting (and SIGINT/SIGTERM) as the GBMs do."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock

    def after_iteration(self, info: Any) -> bool:
        return not self.clock.tick(int(info.iteration))


def _graph(est: Any, n_features: int, classifier: bool, output: str) -> Any:
    """CatBoost's JSON dump -> `gbm` float (n, d) -> `output`: probabilities (n, k) or the value
    (n, 1). An oblivious tree of depth d tests one (feature, border) per level, `x > border`; the
    leaf index has bit `level` set where the test at that level is true. NaN follows the feature's
    `nan_value_treatment` (nan_mode Min: NaN is below every border, the test is false)."""
    from onnx import TensorProto, helper

    from waypost.deploy.gbm_onnx import TreeWriter, tree_model
    from waypost.deploy.onnx_graph import OPSET

    with tempfile.TemporaryDirectory() as tmp:
        est.save_model(f"{tmp}/model.json", format="json")
        dump = json.loads(Path(f"{tmp}/model.json").read_text())
    nan_true = {f["flat_feature_index"]: f.get("nan_value_treatment") == "AsTrue"
                for f in dump["features_info"].get("float_features", [])}
    scale, bias = dump["scale_and_bias"]
    bias = np.atleast_1d(np.asarray(bias, dtype=np.float64))
    dim = len(bias)
    w = TreeWriter()
    for t, tree in enumerate(dump["oblivious_trees"]):
        _oblivious_tree(w, t, tree["splits"], tree["leaf_values"], dim, float(scale), nan_true)
    nodes = [helper.make_node("TreeEnsembleRegressor", ["gbm"], ["cb_raw"], name="trees", domain="ai.onnx.ml",
                              n_targets=dim, aggregate_function="SUM", post_transform="NONE",
                              base_values=[float(b) for b in bias], **w.a)]
    if not classifier:
        nodes.append(helper.make_node("Identity", ["cb_raw"], [output]))
        width = 1
    elif dim == 1:
        one = helper.make_tensor("cb_one", TensorProto.FLOAT, [], [1.0])
        nodes += [helper.make_node("Sigmoid", ["cb_raw"], ["cb_p1"]),
                  helper.make_node("Constant", [], ["cb_one"], value=one),
                  helper.make_node("Sub", ["cb_one", "cb_p1"], ["cb_p0"]),
                  helper.make_node("Concat", ["cb_p0", "cb_p1"], [output], axis=1)]
        width = 2
    else:
        nodes.append(helper.make_node("Softmax", ["cb_raw"], [output], axis=1))
        width = dim
    return tree_model(nodes, n_features, width, output, OPSET)


def _oblivious_tree(w: Any, t: int, splits: list[dict[str, Any]], leaves: list[float], dim: int, scale: float,
                    nan_true: dict[int, bool]) -> None:
    """One oblivious tree as a full binary tree of its depth, node ids in visiting order."""
    depth, counter = len(splits), [0]

    def visit(level: int, index: int) -> int:
        me = counter[0]
        counter[0] += 1
        if level == depth:
            w.leaves(t, me, {k: scale * leaves[index * dim + k] for k in range(dim)})
            return me
        feature = int(splits[level]["float_feature_index"])
        slot = len(w.a["nodes_nodeids"])  # this node's entry; its children's ids are known after the visit
        w.split(t, me, feature, "BRANCH_GT", float(np.float32(splits[level]["border"])), -1, -1,
                int(nan_true.get(feature, False)))
        false_id = visit(level + 1, index)
        true_id = visit(level + 1, index | (1 << level))
        w.a["nodes_truenodeids"][slot], w.a["nodes_falsenodeids"][slot] = true_id, false_id
        return me

    visit(0, 0)


@register("catboost", data_types=TABULAR_TYPES, requires=("catboost",), priority=3,
          reason="CatBoost: ordered boosting of symmetric trees, strong and hard to overfit on small tables "
                 "(categories as codes: its own categorical encoding does not export to ONNX)",
          when="an ensemble part on tabular data when CatBoost is installed (preset best), or when asked")
def build_catboost(**kwargs: Any) -> CatBoostModel:
    return CatBoostModel(**kwargs)

"""Gradient-boosted trees -> ONNX `TreeEnsembleRegressor` raw scores (+ sigmoid/softmax).

LightGBM is converted here from `booster.dump_model()`, node by node, with LightGBM's own decision
rules (`NumericalDecision` / `CategoricalDecision` in its tree.h):
- numerical `<=`: NaN follows `default_left` when the split learned a missing direction
  (missing_type "NaN"); otherwise LightGBM reads NaN as 0.0, so NaN goes left iff 0 <= threshold;
- categorical `==` with "a||b||c": one BRANCH_EQ per category, chained; NaN and values outside the
  set go right.
onnxmltools' converter ignores the missing_type rule (NaN predictions differ by up to 0.03 on
palmer penguins), so a deployed model would not predict what was validated. XGBoost goes through
onnxmltools, whose missing-value handling matches XGBoost's, for models without categorical splits.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from waypost.errors import ConfigError

ML_OPSET = 3
_TREE_ATTRS = (
    "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
    "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
    "target_treeids", "target_nodeids", "target_ids", "target_weights",
)


class _TreeWriter:
    """Accumulates the flat attribute lists of one TreeEnsembleRegressor."""

    def __init__(self) -> None:
        self.a: dict[str, list[Any]] = {k: [] for k in _TREE_ATTRS}

    def leaf(self, tree: int, node: int, target: int, value: float) -> None:
        self._node(tree, node, 0, "LEAF", 0.0, 0, 0, 0)
        self.a["target_treeids"].append(tree)
        self.a["target_nodeids"].append(node)
        self.a["target_ids"].append(target)
        self.a["target_weights"].append(float(value))

    def _node(self, tree: int, node: int, feature: int, mode: str, value: float,
              true_id: int, false_id: int, missing_true: int) -> None:
        for key, v in zip(_TREE_ATTRS[:8], (tree, node, feature, mode, value, true_id, false_id, missing_true)):
            self.a[key].append(v)

    def split(self, *args: Any) -> None:
        self._node(*args)


def _lightgbm_tree(w: _TreeWriter, tree_id: int, target: int, root: dict[str, Any]) -> None:
    counter = [0]

    def new_id() -> int:
        counter[0] += 1
        return counter[0] - 1

    def visit(node: dict[str, Any], node_id: int) -> None:
        if "leaf_value" in node:
            w.leaf(tree_id, node_id, target, node["leaf_value"])
            return
        feature = int(node["split_feature"])
        kind = node["decision_type"]
        if kind == "<=":
            missing = node["missing_type"]
            threshold = float(node["threshold"])
            # Inputs are float32; LightGBM compares them to a double threshold. The largest float32
            # <= the threshold gives the same answer for every float32 input (nearest rounding
            # could land above a data value and flip it).
            with np.errstate(over="ignore"):  # LightGBM's ~1e300 "always left" becomes +inf: same decision
                t32 = np.float32(threshold)
            if float(t32) > threshold:
                t32 = np.nextafter(t32, np.float32(-np.inf))
            if missing == "NaN":
                nan_left = bool(node["default_left"])
            elif missing == "None":
                nan_left = 0.0 <= threshold
            else:  # "Zero": zeros *and* NaN follow default_left; ONNX cannot say "0 is missing"
                raise ConfigError("LightGBM models trained with zero_as_missing=True cannot be exported to ONNX")
            left, right = new_id(), new_id()
            w.split(tree_id, node_id, feature, "BRANCH_LEQ", float(t32), left, right, int(nan_left))
            visit(node["left_child"], left)
            visit(node["right_child"], right)
        elif kind == "==":
            cats = [float(c) for c in str(node["threshold"]).split("||")]
            left, right = new_id(), new_id()
            current = node_id
            for i, cat in enumerate(cats):
                nxt = right if i == len(cats) - 1 else new_id()
                w.split(tree_id, current, feature, "BRANCH_EQ", cat, left, nxt, 0)  # NaN -> not in set
                current = nxt
            visit(node["left_child"], left)
            visit(node["right_child"], right)
        else:
            raise ConfigError(f"unsupported LightGBM split type {kind!r}")

    visit(root, new_id())


def lightgbm_tree_node(booster: Any, input_name: str, output_name: str) -> tuple[Any, int]:
    """(TreeEnsembleRegressor node producing raw scores (n, n_targets), n_targets)."""
    from onnx import helper

    dump = booster.dump_model()
    if dump.get("average_output"):
        raise ConfigError("LightGBM random-forest mode (average_output) is not supported for ONNX export")
    per_iter = int(dump["num_tree_per_iteration"])
    w = _TreeWriter()
    for info in dump["tree_info"]:
        i = int(info["tree_index"])
        _lightgbm_tree(w, i, i % per_iter, info["tree_structure"])
    node = helper.make_node(
        "TreeEnsembleRegressor", [input_name], [output_name], name="trees", domain="ai.onnx.ml",
        n_targets=per_iter, aggregate_function="SUM", post_transform="NONE",
        base_values=[0.0] * per_iter, **w.a,
    )
    return node, per_iter


def gbm_model(part: Any, n_features: int, task: str, opset: int) -> Any:
    """A standalone ONNX model: input `gbm` float (n, n_features) -> `gbm_out`: probabilities
    (n, k) for classifiers, standardised value (n, 1) for regression."""
    from onnx import TensorProto, helper

    if part.library == "xgboost":
        return _xgboost_model(part, n_features, task, opset)
    tree, n_targets = lightgbm_tree_node(part.booster_, "gbm", "gbm_raw")
    nodes = [tree]
    if task == "regression":
        nodes.append(helper.make_node("Identity", ["gbm_raw"], ["gbm_out"], name="value"))
        width = 1
    elif task == "binary":
        one = helper.make_tensor("gbm_one", TensorProto.FLOAT, [], [1.0])
        nodes += [
            helper.make_node("Sigmoid", ["gbm_raw"], ["gbm_p1"], name="sigmoid"),
            helper.make_node("Constant", [], ["gbm_one"], value=one, name="one"),
            helper.make_node("Sub", ["gbm_one", "gbm_p1"], ["gbm_p0"], name="complement"),
            helper.make_node("Concat", ["gbm_p0", "gbm_p1"], ["gbm_out"], axis=1, name="probabilities"),
        ]
        width = 2
    else:
        nodes.append(helper.make_node("Softmax", ["gbm_raw"], ["gbm_out"], axis=1, name="softmax"))
        width = n_targets
    graph = helper.make_graph(
        nodes, "waypost_gbm",
        [helper.make_tensor_value_info("gbm", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("gbm_out", TensorProto.FLOAT, ["batch", width])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("ai.onnx.ml", ML_OPSET)])


def _xgboost_model(part: Any, n_features: int, task: str, opset: int) -> Any:
    from onnx import helper

    if part.categorical:
        raise ConfigError(
            "XGBoost models with categorical features cannot be exported to ONNX yet; "
            "train with model.gbm.library: lightgbm (the default) to deploy this table"
        )
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = onnxmltools.convert_xgboost(
        part.booster_, initial_types=[("gbm", FloatTensorType([None, n_features]))], target_opset=15
    )
    # onnxmltools names outputs label/probabilities (classifier) or variable (regressor).
    out = [o.name for o in model.graph.output][-1]
    model.graph.node.append(helper.make_node("Identity", [out], ["gbm_out"], name="gbm_out"))
    del model.graph.output[:]
    from onnx import TensorProto

    width = 1 if task == "regression" else max(2, part.n_classes)
    model.graph.output.append(helper.make_tensor_value_info("gbm_out", TensorProto.FLOAT, ["batch", width]))
    return model


def reference_predictions(part: Any, x: np.ndarray) -> np.ndarray:
    """What the in-memory GBM predicts on the GBM view (for parity checks)."""
    from waypost.data.preprocess import TabularArrays

    n = len(x)
    return part.predict_raw(TabularArrays(np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64), x))

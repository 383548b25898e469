"""Gradient-boosted trees -> ONNX `TreeEnsembleRegressor` raw scores (+ sigmoid/softmax).

LightGBM is converted here from `booster.dump_model()`, node by node, with LightGBM's own decision
rules (`NumericalDecision` / `CategoricalDecision` in its tree.h):
- numerical `<=`: NaN follows `default_left` when the split learned a missing direction
  (missing_type "NaN"); otherwise LightGBM reads NaN as 0.0, so NaN goes left iff 0 <= threshold;
- categorical `==` with "a||b||c": one BRANCH_EQ per category, chained; NaN and values outside the
  set go right.
onnxmltools' converter ignores the missing_type rule (NaN predictions differ by up to 0.03 on
palmer penguins), so a deployed model would not predict what was validated. XGBoost is converted
from its JSON dump the same way (onnxmltools' graph for XGBoost 3 lacks a default-domain opset and
does not cover categorical splits).
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


class TreeWriter:
    """Accumulates the flat attribute lists of one TreeEnsembleRegressor."""

    def __init__(self) -> None:
        self.a: dict[str, list[Any]] = {k: [] for k in _TREE_ATTRS}

    def leaf(self, tree: int, node: int, target: int, value: float) -> None:
        self.leaves(tree, node, {target: value})

    def leaves(self, tree: int, node: int, values: dict[int, float]) -> None:
        """A leaf adding `values[target]` to each of several targets (a forest's class fractions)."""
        self._node(tree, node, 0, "LEAF", 0.0, 0, 0, 0)
        for target, value in values.items():
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


def _lightgbm_tree(w: TreeWriter, tree_id: int, target: int, root: dict[str, Any]) -> None:
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
    w = TreeWriter()
    for info in dump["tree_info"]:
        i = int(info["tree_index"])
        _lightgbm_tree(w, i, i % per_iter, info["tree_structure"])
    node = helper.make_node(
        "TreeEnsembleRegressor", [input_name], [output_name], name="trees", domain="ai.onnx.ml",
        n_targets=per_iter, aggregate_function="SUM", post_transform="NONE",
        base_values=[0.0] * per_iter, **w.a,
    )
    return node, per_iter


def gbm_model(part: Any, n_features: int, opset: int) -> Any:
    """A standalone ONNX model: input `gbm` float (n, n_features) -> `gbm_out`: probabilities
    (n, k) for classifiers, standardised value (n, 1) for regression. The boosted margins pick the
    head: a two-class classifier boosts one margin (sigmoid), more classes one margin each (softmax)."""
    if part.library == "xgboost":
        return _xgboost_model(part, n_features, opset)
    tree, n_targets = lightgbm_tree_node(part.booster_, "gbm", "gbm_raw")
    return _with_head([tree], n_features, n_targets, part.classifier, opset)


def _with_head(nodes: list[Any], n_features: int, n_targets: int, classifier: bool, opset: int) -> Any:
    """Raw scores -> probabilities (sigmoid of one margin, softmax of several) or the value."""
    from onnx import TensorProto, helper

    nodes = list(nodes)
    if not classifier:
        nodes.append(helper.make_node("Identity", ["gbm_raw"], ["gbm_out"], name="value"))
        width = 1
    elif n_targets == 1:
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
    return tree_model(nodes, n_features, width, "gbm_out", opset)


def _xgboost_tree(w: TreeWriter, tree_id: int, target: int, root: dict[str, Any]) -> None:
    """XGBoost's rule: `x < split_condition` goes to "yes", NaN to "missing"; a categorical node lists
    its categories in `split_condition` and sends them to "yes", everything else to "no"."""
    counter = [0]
    ids: dict[int, int] = {}

    def onnx_id(xgb_id: int) -> int:
        if xgb_id not in ids:
            ids[xgb_id] = counter[0]
            counter[0] += 1
        return ids[xgb_id]

    def visit(node: dict[str, Any]) -> None:
        me = onnx_id(node["nodeid"])
        if "leaf" in node:
            w.leaf(tree_id, me, target, node["leaf"])
            return
        feature = int(str(node["split"]).lstrip("f"))
        yes, no, missing = onnx_id(node["yes"]), onnx_id(node["no"]), node["missing"]
        condition = node.get("categories", node.get("split_condition"))
        if isinstance(condition, list):  # categorical: the dump's "yes" is "value in the set"
            current = me
            for i, cat in enumerate(condition):
                last = i == len(condition) - 1
                nxt = no if last else counter[0]
                if not last:
                    counter[0] += 1
                nan_true = int(missing == yes) if i == 0 else 0  # NaN decided at the first test
                w.split(tree_id, current, feature, "BRANCH_EQ", float(cat), yes, nxt, nan_true)
                current = nxt
        else:
            w.split(tree_id, me, feature, "BRANCH_LT", float(np.float32(condition)), yes, no,
                    int(missing == node["yes"]))
        for child in node["children"]:
            visit(child)

    visit(root)


def _xgboost_model(part: Any, n_features: int, opset: int) -> Any:
    """Trees from the JSON dump; the base margin is measured (XGBoost's output margin minus the
    trees' sum on a few rows) rather than re-derived from its version-dependent base_score rules."""
    import json

    import onnxruntime as ort
    import xgboost as xgb
    from onnx import helper

    booster = part.booster_
    dumps = [json.loads(t) for t in booster.get_dump(dump_format="json")]
    n_targets = part.n_classes if part.classifier and part.n_classes > 2 else 1  # one margin, or one per class
    w = TreeWriter()
    for i, tree in enumerate(dumps):
        _xgboost_tree(w, i, i % n_targets, tree)
    trees = helper.make_node("TreeEnsembleRegressor", ["gbm"], ["gbm_raw"], name="trees", domain="ai.onnx.ml",
                             n_targets=n_targets, aggregate_function="SUM", post_transform="NONE",
                             base_values=[0.0] * n_targets, **w.a)
    probe = tree_model([trees], n_features, n_targets, "gbm_raw", opset)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, n_features)).astype(np.float32)
    for c in part.categorical:
        x[:, c] = rng.integers(0, 3, 8)
    leaf_sum = ort.InferenceSession(probe.SerializeToString()).run(None, {"gbm": x})[0]
    dm = xgb.DMatrix(x, feature_types=part._feature_types(n_features), enable_categorical=True)
    margin = np.asarray(booster.predict(dm, output_margin=True), dtype=np.float64).reshape(8, n_targets)
    base = np.median(margin - leaf_sum, axis=0)
    trees = helper.make_node("TreeEnsembleRegressor", ["gbm"], ["gbm_raw"], name="trees", domain="ai.onnx.ml",
                             n_targets=n_targets, aggregate_function="SUM", post_transform="NONE",
                             base_values=[float(b) for b in base], **w.a)
    return _with_head([trees], n_features, n_targets, part.classifier, opset)


def tree_model(nodes: list[Any], n_features: int, width: Any, output: str, opset: int) -> Any:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "waypost_gbm",
        [helper.make_tensor_value_info("gbm", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", width])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("ai.onnx.ml", ML_OPSET)])


def with_features_in_front(trees: Any, nodes: list[Any], initializers: list[Any], inputs: list[Any],
                           joined: str) -> Any:
    """A copy of a tree graph (input `gbm`) whose trees read `joined` instead, an edge that `nodes`
    compute from the new graph `inputs` (a GBM view widened by embedding features)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(trees)
    graph = model.graph
    for node in graph.node:
        node.input[:] = [joined if name == "gbm" else name for name in node.input]
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(list(nodes) + old)
    graph.initializer.extend(initializers)
    del graph.input[:]
    graph.input.extend(inputs)
    onnx.checker.check_model(model)
    return model


def reference_predictions(part: Any, x: np.ndarray) -> np.ndarray:
    """What the in-memory GBM predicts on the GBM view (for parity checks)."""
    from waypost.data.preprocess import TabularArrays

    n = len(x)
    return part.predict_raw(TabularArrays(np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64), x))


def forest_model(estimators: list[Any], n_features: int, n_targets: int, classifier: bool, output: str,
                 opset: int) -> Any:
    """A scikit-learn random forest / extra-trees ensemble as one `TreeEnsembleRegressor` averaging
    its trees: input `gbm` float (n, n_features) -> `output`: the mean of the trees' leaf values,
    which for a classifier are class fractions (its probabilities, (n, k)) and for a regressor the
    value (n, 1). scikit-learn casts inputs to float32 and compares them `<=` a double threshold;
    the largest float32 <= that threshold gives the same answer for every float32 input. NaN
    follows the node's `missing_go_to_left`."""
    from onnx import helper

    w = TreeWriter()
    scale = 1.0 / len(estimators)
    for t, est in enumerate(estimators):
        tree = est.tree_
        left, right, feature = tree.children_left, tree.children_right, tree.feature
        threshold, missing_left = tree.threshold, getattr(tree, "missing_go_to_left", None)
        values = tree.value[:, 0, :]  # (nodes, k): class fractions, or the regression value
        for node in range(tree.node_count):
            if left[node] == -1:
                w.leaves(t, node, {k: float(values[node, k]) * scale for k in range(n_targets)})
                continue
            t32 = np.float32(threshold[node])
            if float(t32) > threshold[node]:
                t32 = np.nextafter(t32, np.float32(-np.inf))
            nan_left = int(missing_left[node]) if missing_left is not None else 0
            w.split(t, node, int(feature[node]), "BRANCH_LEQ", float(t32), int(left[node]), int(right[node]), nan_left)
    trees = helper.make_node("TreeEnsembleRegressor", ["gbm"], [output], name="trees", domain="ai.onnx.ml",
                             n_targets=n_targets, aggregate_function="SUM", post_transform="NONE",
                             base_values=[0.0] * n_targets, **w.a)
    return tree_model([trees], n_features, n_targets if classifier else 1, output, opset)

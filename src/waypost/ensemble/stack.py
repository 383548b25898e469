"""Stacking (preset `best`): a second-level model on the parts' out-of-fold predictions plus the
original features (Wolpert 1992; the L2 layer of AutoGluon's best_quality).

Why beside the weighted ensemble: greedy selection can only average the parts, one weight per part
for every row. A level-2 model can trust a part more where it is good (a GBM on some categories,
the MLP on others) because it also sees the row's own features. It needs out-of-fold predictions to
learn from, so it exists only when the parts are bagged; otherwise it would learn from predictions
on rows the parts trained on, which are too good.

The level-2 model is the regularised linear part (`models/linear.py`) on
`[log p of every part (classes), or each part's value (regression); the standardised numbers]`
and the one-hot categories. Its penalty is chosen by cross-validation over the same folds as the
parts (each fold's level-2 model fits on the other folds' out-of-fold rows), which also gives its
honest out-of-fold loss; the model is then refitted on every row. The fit keeps the stack only
when that loss beats the weighted ensemble's.

At predict time each part family's fold models are averaged (as the bagged ensemble does) and the
level-2 model reads the averages. In a bundle it is one graph: every fold model, their means,
`Log`, `Concat` with the numbers, and the linear layer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from waypost.data.preprocess import TabularArrays
from waypost.errors import ModelFileError, NotFittedError

EPS = 1e-6  # probabilities are clipped here before the log: a fold model's 0 stays finite


def level_one(raws: dict[str, np.ndarray], classifier: bool) -> np.ndarray:
    """(n, sum of widths) float64: each family's log-probabilities or value, families in order."""
    cols = [np.log(np.clip(np.asarray(r, np.float64), EPS, 1.0)) if classifier
            else np.asarray(r, np.float64).reshape(len(r), -1) for r in raws.values()]
    return np.hstack(cols)


class StackedModel:
    """The level-2 linear model over part families (`members`: family -> its fold parts' names)."""

    kind = "stack"

    def __init__(self, *, task: str, n_classes: int = 0, cardinalities: list[int] | None = None,
                 members: dict[str, list[str]] | None = None) -> None:
        from waypost.tasks import get_task

        self.task, self.n_classes = task, n_classes
        self.classifier = get_task(task).is_classification
        self.cardinalities = [int(c) for c in (cardinalities or [])]
        self.members = {f: list(names) for f, names in (members or {}).items()}

    @property
    def reads(self) -> list[str]:
        """The parts it runs at predict time (kept in the model, re-attached on load)."""
        return [n for names in self.members.values() for n in names]

    def attach(self, parts: dict[str, Any]) -> StackedModel:
        missing = [n for n in self.reads if n not in parts]
        if missing:
            raise NotFittedError(f"StackedModel.attach: parts {missing} are missing; it reads {self.reads}")
        self.parts_ = {n: parts[n] for n in self.reads}
        return self

    # ---- fit ----------------------------------------------------------------------------------
    def _inputs(self, level1: np.ndarray, x: TabularArrays) -> TabularArrays:
        return TabularArrays(np.hstack([level1, x.numeric.astype(np.float64)]), x.categorical, x.gbm)

    def _linear(self, strengths: tuple[float, ...]) -> Any:
        from waypost.models.linear import LinearModel

        return LinearModel(task=self.task, n_classes=self.n_classes, cardinalities=self.cardinalities,
                           strengths=strengths)

    def fit(self, oof: dict[str, np.ndarray], x: TabularArrays, y: np.ndarray, held: list[np.ndarray]) -> StackedModel:
        """Learn from the families' out-of-fold outputs `oof` on the rows `x` (targets `y`); `held`:
        each fold's held-out rows, the folds the parts were bagged on."""
        from waypost.models.linear import STRENGTHS
        from waypost.pipelines.train_parts import take
        from waypost.tasks import get_task

        if list(oof) != list(self.members):
            raise ValueError(f"StackedModel.fit: out-of-fold outputs for {list(oof)}, members {list(self.members)}")
        task = get_task(self.task)
        z = self._inputs(level_one(oof, self.classifier), x)
        folds = [(take(z, rest), y[rest], take(z, rows), rows)
                 for rows in held for rest in [np.setdiff1d(np.arange(len(y)), rows)]]
        best: tuple[float, float, np.ndarray] | None = None
        for strength in sorted(STRENGTHS, reverse=True):  # ties keep the stronger penalty: the simpler model
            raw: np.ndarray | None = None
            for z_rest, y_rest, z_held, rows in folds:
                out = self._linear((strength,)).fit(z_rest, y_rest, z_rest, y_rest).predict_raw(z_held)
                raw = np.zeros((len(y),) + out.shape[1:]) if raw is None else raw
                raw[rows] = out
            loss = task.validation_loss(raw, y)
            if best is None or loss < best[0] - 1e-12:
                best = (loss, strength, raw)
        self.loss_, self.strength_, self.oof_raw_ = best
        self.linear_ = self._linear((self.strength_,)).fit(z, y, z, y)
        return self

    # ---- predict ------------------------------------------------------------------------------
    def family_raws(self, inputs: TabularArrays) -> dict[str, np.ndarray]:
        """Each family's output: the mean of its fold models'."""
        if not hasattr(self, "parts_"):
            raise NotFittedError("StackedModel has no parts: attach() the fitted parts it reads first")
        return {f: np.mean([self.parts_[n].predict_raw(inputs) for n in names], axis=0)
                for f, names in self.members.items()}

    def predict_raw(self, inputs: TabularArrays) -> np.ndarray:
        if not hasattr(self, "linear_"):
            raise NotFittedError("StackedModel is not fitted: call fit() first")
        return self.linear_.predict_raw(self._inputs(level_one(self.family_raws(inputs), self.classifier), inputs))

    def to_onnx(self, sample: TabularArrays) -> Any:
        """Every fold model, the family means, log, concat with `numeric`, the linear layer -> `stack_out`."""
        import onnx
        from onnx import compose, helper

        from waypost.deploy.onnx_graph import OPSET, assemble, blend_nodes, merge_graphs

        if not hasattr(self, "linear_"):
            raise NotFittedError("StackedModel is not fitted: call fit() first")
        graphs = {n: self.parts_[n].to_onnx(sample) for n in self.reads}
        inputs, nodes, inits, functions, outputs, opsets = merge_graphs(graphs)
        features = []
        for family, names in self.members.items():
            mean = f"stack/{family}_mean"
            nodes += blend_nodes({n: outputs[n] for n in names}, dict.fromkeys(names, 1.0 / len(names)),
                                 output=mean, prefix=f"stack/{family}")
            if self.classifier:
                nodes += [helper.make_node("Clip", [mean, "stack/eps", "stack/one"], [f"{mean}_clip"]),
                          helper.make_node("Log", [f"{mean}_clip"], [f"stack/{family}_feature"])]
            else:
                nodes.append(helper.make_node("Reshape", [mean, "stack/column"], [f"stack/{family}_feature"]))
            features.append(f"stack/{family}_feature")
        inits += [onnx.numpy_helper.from_array(np.array(EPS, np.float32), "stack/eps"),
                  onnx.numpy_helper.from_array(np.array(1.0, np.float32), "stack/one"),
                  onnx.numpy_helper.from_array(np.array([-1, 1], np.int64), "stack/column")]
        linear = compose.add_prefix(self.linear_.to_onnx(sample), "stack/", rename_inputs=True, rename_outputs=True)
        numeric = "numeric" in inputs
        nodes.append(helper.make_node("Concat", features + (["numeric"] if numeric else []), ["stack/numeric"], axis=1))
        if self.cardinalities:
            nodes.append(helper.make_node("Identity", ["categorical"], ["stack/categorical"]))
        nodes += list(linear.graph.node)
        inits += list(linear.graph.initializer)
        opsets[""] = max(opsets.get("", 0), OPSET)  # the linear layer's opset, if every part's is older
        return assemble("waypost_stack", graphs, inputs, nodes, inits, functions, opsets, "stack/linear_out",
                        int(self.linear_.bias_.shape[0]))

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        if not hasattr(self, "linear_"):
            raise NotFittedError("StackedModel is not fitted: call fit() first")
        entry = self.linear_.save(directory)
        return {**entry, "kind": self.kind, "members": self.members, "loss": self.loss_}

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> StackedModel:
        from waypost.models.linear import LinearModel

        members = entry.get("members")
        if not isinstance(members, dict) or not all(isinstance(v, list) and v for v in members.values()):
            raise ModelFileError(f"{directory}: the stack's 'members' must map each part family to its parts")
        model = cls(task=entry["task"], n_classes=entry["n_classes"], cardinalities=entry["cardinalities"],
                    members=members)
        model.linear_ = LinearModel.load(directory, {**entry, "kind": "linear"})
        model.strength_, model.loss_ = model.linear_.strength_, float(entry["loss"])
        return model



def maybe_stack(cfg: Any, task: Any, n_classes: int, cardinalities: list[int], trained: Any, x: TabularArrays,
                y: np.ndarray, held: list[np.ndarray], blend_loss: float, plan: list[Any]) -> StackedModel | None:
    """The stacked model when `model.stack` asks for it (auto: preset best), the parts were bagged
    (`held`: the folds) and it validates better than the weighted ensemble (`blend_loss`); the plan
    says what happened either way."""
    from waypost.plan import Decision

    asked = cfg.model.stack
    if asked is False or (asked == "auto" and cfg.preset != "best"):
        return None
    why = "model.stack: true" if asked is True else "preset best"
    if not held or len(trained.raws) < 2:
        plan.append(Decision("selection", "stack", "not trained",
                             f"{why}, but it learns from out-of-fold predictions of two or more parts: "
                             + ("the parts were not bagged (training.bagging)" if not held else "one part trained")))
        return None
    stack = StackedModel(task=task.name, n_classes=n_classes, cardinalities=cardinalities,
                         members={f: trained.members[f] for f in trained.raws})
    stack.fit(trained.raws, x, y, held).attach(trained.parts)
    kept = stack.loss_ < blend_loss - 1e-12
    plan.append(Decision(
        "selection", "stack", "kept" if kept else "not kept",
        f"{why}: a linear model (penalty {stack.strength_:g}, chosen by {len(held)}-fold cross-validation) on the "
        f"{len(stack.members)} parts' out-of-fold outputs and the row's features; out-of-fold "
        f"{task.validation_loss_name} {stack.loss_:.4f} vs the weighted ensemble's {blend_loss:.4f}"))
    return stack if kept else None

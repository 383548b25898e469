"""Entity embeddings into a GBM: the MLP's learned category embeddings as extra GBM features.

Why (Guo & Berkhahn 2016, "Entity embeddings of categorical variables"; the roadmap's "tabular
features via XGBoost, embeddings via DL"): a category's code is an arbitrary number and LightGBM's
native categorical splits must find groups of levels from counts alone; the MLP's embedding places
levels that behave alike close together, so a tree can split many levels at once on one embedding
dimension. It only pays for categories with more than two levels (a binary column's embedding is a
monotone map of its code), which is when the candidates offer it.

The part is the configured GBM (`model.gbm`) on the GBM view plus, per category column, the rows of
that column's embedding table for its codes. The tables are copied from the MLP of the same rows
(the same fold under bagging: the embeddings never saw the rows this part early-stops on), so the
part stands alone: saved beside its booster (safetensors), and in its ONNX graph a `Gather` per
column feeds the trees, so bundles stay torch-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from waypost.data.preprocess import TabularArrays
from waypost.data.types import TABULAR_TYPES
from waypost.errors import ModelFileError, NotFittedError
from waypost.models.gbm import GBMModel, safe_names
from waypost.models.registry import register

TABLES = "entity_embeddings.safetensors"
#: category columns with at most this many embedding rows (levels + the unknown bucket) gain nothing
MIN_ROWS = 4


def useful_columns(cardinalities: list[int]) -> list[int]:
    """Indices of the category columns whose embedding can say more than their code."""
    return [i for i, c in enumerate(cardinalities) if c >= MIN_ROWS]


class EntityGBM(GBMModel):
    """A GBM on the GBM view + the MLP's category embeddings (`attach` copies them in before `fit`)."""

    kind = "entity_gbm"
    #: the part family whose fitted model of the same rows `attach` receives (`pipelines.train_parts`)
    uses = "mlp"

    def attach(self, mlp: Any) -> EntityGBM:
        """Copy a fitted MLP part's embedding tables of the category columns with more than two levels
        (`columns_`: their positions in the categorical view)."""
        if not hasattr(mlp, "net_"):
            raise NotFittedError("EntityGBM.attach needs a fitted MLP part")
        tables = [e.weight.detach().cpu().numpy().astype(np.float32) for e in mlp.net_.embeddings]
        self.columns_ = useful_columns([len(t) for t in tables])
        self.tables_ = [tables[i].copy() for i in self.columns_]
        return self

    def _augment(self, arrays: TabularArrays) -> TabularArrays:
        if not hasattr(self, "tables_"):
            raise NotFittedError("EntityGBM has no embeddings: attach() a fitted MLP, then fit()")
        extra = [t[arrays.categorical[:, c]] for c, t in zip(self.columns_, self.tables_)]
        return TabularArrays(arrays.numeric, arrays.categorical,
                             np.column_stack([arrays.gbm.astype(np.float32), *extra]).astype(np.float32))

    def _names(self, X: np.ndarray) -> list[str]:
        base = self.feature_names or [f"f{i}" for i in range(X.shape[1] - self.n_embedded)]

        def column(c: int) -> str:  # categorical-view column c sits at GBM column categorical[c]
            return base[self.categorical[c]] if c < len(self.categorical) else f"cat{c}"

        extra = [f"{column(c)}_emb{j}" for c, t in zip(self.columns_, self.tables_) for j in range(t.shape[1])]
        return safe_names(base + extra)

    @property
    def n_embedded(self) -> int:
        return sum(t.shape[1] for t in self.tables_)

    def fit(self, train: TabularArrays, y_train: np.ndarray, valid: TabularArrays, y_valid: np.ndarray,
            **kwargs: Any) -> EntityGBM:
        super().fit(self._augment(train), y_train, self._augment(valid), y_valid, **kwargs)
        return self

    def predict_raw(self, arrays: TabularArrays) -> np.ndarray:
        if not hasattr(self, "booster_"):
            raise NotFittedError("EntityGBM is not fitted: call fit() first")
        return super().predict_raw(self._augment(arrays))

    def to_onnx(self, sample: TabularArrays) -> Any:
        """The trees behind a `Gather` of each column's embedding: inputs `gbm` and `categorical`."""
        from waypost.deploy.gbm_onnx import gbm_model
        from waypost.deploy.onnx_graph import OPSET

        n_base, n_columns = sample.gbm.shape[1], sample.categorical.shape[1]
        return with_embedded_categories(gbm_model(self, n_base + self.n_embedded, OPSET), self.tables_,
                                        self.columns_, n_base, n_columns)

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.numpy import save_file

        entry = super().save(directory)
        save_file({f"table_{i}": np.ascontiguousarray(t) for i, t in enumerate(self.tables_)}, str(directory / TABLES))
        return {**entry, "kind": self.kind, "tables": TABLES, "columns": self.columns_}

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> EntityGBM:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        model = super().load(directory, entry)
        path = Path(directory) / entry["tables"]
        if not path.is_file():
            raise ModelFileError(f"model file missing: {path}")
        try:
            tables = load_file(str(path))
            model.columns_ = [int(c) for c in entry["columns"]]
            model.tables_ = [tables[f"table_{i}"] for i in range(len(model.columns_))]
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{path}: not the embedding tables the manifest names ({exc})") from None
        return model


def with_embedded_categories(trees: Any, tables: list[np.ndarray], columns: list[int], n_base: int,
                             n_columns: int) -> Any:
    """A tree graph that reads `gbm` (n, n_base + embedded) turned into one reading `gbm` (n, n_base)
    and `categorical` (n, n_columns): column `columns[i]`'s code picks its row of `tables[i]`
    (`Gather`), and the rows are concatenated after the GBM view, as `EntityGBM._augment` does."""
    from onnx import TensorProto, helper, numpy_helper

    from waypost.deploy.gbm_onnx import with_features_in_front

    joined = "entity/gbm"
    nodes, inits, concat = [], [], ["gbm"]
    for i, (column, table) in enumerate(zip(columns, tables)):
        inits.append(numpy_helper.from_array(table.astype(np.float32), f"entity/table_{i}"))
        inits.append(numpy_helper.from_array(np.array(column, dtype=np.int64), f"entity/col_{i}"))
        nodes.append(helper.make_node("Gather", ["categorical", f"entity/col_{i}"], [f"entity/code_{i}"], axis=1,
                                      name=f"entity/code_{i}"))
        nodes.append(helper.make_node("Gather", [f"entity/table_{i}", f"entity/code_{i}"], [f"entity/emb_{i}"],
                                      axis=0, name=f"entity/emb_{i}"))
        concat.append(f"entity/emb_{i}")
    nodes.append(helper.make_node("Concat", concat, [joined], axis=1, name="entity/concat"))
    inputs = [helper.make_tensor_value_info("gbm", TensorProto.FLOAT, ["batch", n_base]),
              helper.make_tensor_value_info("categorical", TensorProto.INT64, ["batch", n_columns])]
    return with_features_in_front(trees, nodes, inits, inputs, joined)


@register(
    "entity_gbm",
    data_types=TABULAR_TYPES,
    requires=("torch", "lightgbm"),
    reason="the GBM on the table plus the MLP's learned category embeddings (entity embeddings): levels that "
           "behave alike sit close, so one split can group many of them",
    when="tables with a category column of more than two levels (preset best), after the MLP has trained",
)
def build_entity_gbm(**kwargs: Any) -> EntityGBM:
    return EntityGBM(**kwargs)

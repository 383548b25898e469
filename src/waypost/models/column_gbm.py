"""DL embeddings into a GBM: a GBM on the table's tabular columns plus the fine-tuned network's
embedding of its image or text column, ensembled with that network.

Why (the roadmap's "tabular features via XGBoost, embeddings via DL, final model ensemble"): the
fused network learns the column well but handles the numbers and categories only as well as an MLP
does, where boosted trees are stronger; the trees cannot read pixels or words. Giving the trees the
network's view of the column, reduced by PCA to at most `N_COMPONENTS` dimensions (fitted on the
training rows only), lets each side do what it is good at, and the greedy ensemble keeps the GBM,
the network or both by validation loss.

The embedding is the column encoder's output (what the fusion head reads) from the network trained
on the same rows. In a bundle it is computed once: the network's graph outputs its features beside
its answer, and the PCA and the trees hang off that output (`hybrid_graph`). The part keeps a
reference to its network (`attach`; persistence re-attaches it after loading) and saves only its
booster and the PCA (safetensors).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from waypost.data.preprocess import TabularArrays
from waypost.errors import ModelFileError, NotFittedError
from waypost.models.gbm import GBMModel, safe_names
from waypost.models.registry import register

N_COMPONENTS = 32
PCA_FILE = "column_pca.safetensors"
FEATURES = "column_features"  # the network graph's second output, the GBM graph's input


class ColumnGBM(GBMModel):
    """A GBM on the GBM view + PCA(the network's column features). `uses`: the network's part name."""

    kind = "column_gbm"

    def __init__(self, *, uses: str = "", column: str = "", **gbm: Any) -> None:
        super().__init__(**gbm)
        self.uses = uses
        self.column = column

    @property
    def reads(self) -> str:
        """The part it computes features with at predict time (kept in the model, re-attached on load)."""
        return self.uses

    def attach(self, network: Any) -> ColumnGBM:
        if not hasattr(network, "features"):
            raise NotFittedError(f"ColumnGBM.attach needs a fitted column network, got {type(network).__name__}")
        self.network_ = network
        return self

    def _augment(self, inputs: Any, features: np.ndarray | None = None) -> TabularArrays:
        """The GBM view widened by the principal components of the network's features (`features`:
        already computed for these rows)."""
        if not hasattr(self, "network_"):
            raise NotFittedError("ColumnGBM has no network: attach() the fitted column network, then fit()")
        features = self.network_.features(inputs) if features is None else features
        z = (features - self.pca_mean_) @ self.pca_components_.T
        tab = inputs.tabular
        return TabularArrays(tab.numeric, tab.categorical,
                             np.column_stack([tab.gbm.astype(np.float32), z.astype(np.float32)]))

    def _names(self, X: np.ndarray) -> list[str]:
        n_pc = len(self.pca_components_)
        base = self.feature_names or [f"f{i}" for i in range(X.shape[1] - n_pc)]
        return safe_names(base + [f"{self.column or 'column'}_pc{j}" for j in range(n_pc)])

    def fit(self, train: Any, y_train: np.ndarray, valid: Any, y_valid: np.ndarray, **kwargs: Any) -> ColumnGBM:
        from sklearn.decomposition import PCA

        if not hasattr(self, "network_"):
            raise NotFittedError("ColumnGBM has no network: attach() the fitted column network, then fit()")
        feats = self.network_.features(train)
        k = int(min(N_COMPONENTS, feats.shape[1], len(feats) - 1))
        pca = PCA(k, random_state=self.seed).fit(feats)  # the training rows only
        self.pca_mean_ = pca.mean_.astype(np.float32)
        self.pca_components_ = pca.components_.astype(np.float32)
        self.explained_ = float(pca.explained_variance_ratio_.sum())
        super().fit(self._augment(train, feats), y_train, self._augment(valid), y_valid, **kwargs)
        return self

    def predict_raw(self, inputs: Any) -> np.ndarray:
        if not hasattr(self, "booster_"):
            raise NotFittedError("ColumnGBM is not fitted: call fit() first")
        return super().predict_raw(self._augment(inputs))

    def to_onnx(self, sample: Any) -> Any:
        """The PCA and the trees: inputs `column_features` (the network graph's second output) and
        `gbm`, output the trees' (`gbm_out`). `hybrid_graph` joins it to the network's graph."""
        from onnx import TensorProto, helper, numpy_helper

        from waypost.deploy.gbm_onnx import gbm_model, with_features_in_front
        from waypost.deploy.onnx_graph import OPSET

        n_base, n_pc = sample.tabular.gbm.shape[1], len(self.pca_components_)
        joined = "column_gbm/x"
        inits = [numpy_helper.from_array(self.pca_mean_, "column_gbm/pca_mean"),
                 numpy_helper.from_array(np.ascontiguousarray(self.pca_components_.T), "column_gbm/pca")]
        nodes = [helper.make_node("Sub", [FEATURES, "column_gbm/pca_mean"], ["column_gbm/centred"], name="column_gbm/sub"),
                 helper.make_node("MatMul", ["column_gbm/centred", "column_gbm/pca"], ["column_gbm/pcs"],
                                  name="column_gbm/pca"),
                 helper.make_node("Concat", ["gbm", "column_gbm/pcs"], [joined], axis=1, name="column_gbm/concat")]
        inputs = [helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["batch", len(self.pca_mean_)]),
                  helper.make_tensor_value_info("gbm", TensorProto.FLOAT, ["batch", n_base])]
        return with_features_in_front(gbm_model(self, n_base + n_pc, OPSET), nodes, inits, inputs, joined)

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.numpy import save_file

        entry = super().save(directory)
        # C order: safetensors writes the buffer as it lies, and PCA's components come Fortran-ordered
        save_file({"mean": np.ascontiguousarray(self.pca_mean_), "components": np.ascontiguousarray(self.pca_components_)},
                  str(directory / PCA_FILE))
        return {**entry, "kind": self.kind, "pca": PCA_FILE, "uses": self.uses, "column": self.column}

    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any]) -> ColumnGBM:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        model = super().load(directory, entry)
        model.uses, model.column = entry["uses"], entry.get("column", "")
        path = Path(directory) / entry["pca"]
        if not path.is_file():
            raise ModelFileError(f"model file missing: {path}")
        try:
            pca = load_file(str(path))
            model.pca_mean_, model.pca_components_ = pca["mean"], pca["components"]
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{path}: not the PCA the manifest names ({exc})") from None
        return model


def hybrid_graph(network: Any, column_gbm: Any, weights: dict[str, float], names: dict[str, str],
                 sample: Any) -> Any:
    """One graph for a column network and the GBM on its features: the network exported with its
    features as a second output, the GBM's PCA and trees reading it, and the ensemble's weighted sum
    (`deploy.onnx_graph.blend_nodes`) as `output`. `names`: the part name of each
    ({"network": ..., "gbm": ...}), for the weights."""
    import onnx
    from onnx import TensorProto, compose, helper

    from waypost.deploy.onnx_graph import OUTPUT, blend_nodes

    net = network.to_onnx(sample, output="network_out", features=FEATURES)
    # every name of the trees' graph prefixed but its inputs (the features edge and the GBM view)
    trees = compose.add_prefix(column_gbm.to_onnx(sample), "column_gbm/", rename_inputs=False)
    merged = onnx.ModelProto()
    merged.CopyFrom(net)
    graph = merged.graph
    have = {i.name for i in graph.input} | {FEATURES}  # the features come from the network, not the caller
    graph.input.extend([i for i in trees.graph.input if i.name not in have])
    graph.node.extend(trees.graph.node)
    graph.initializer.extend(trees.graph.initializer)
    domains = {o.domain for o in merged.opset_import}
    merged.opset_import.extend([op for op in trees.opset_import if op.domain not in domains])
    graph.node.extend(blend_nodes({names["network"]: "network_out", names["gbm"]: trees.graph.output[0].name}, weights))
    width = net.graph.output[0].type.tensor_type.shape.dim[-1]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", width.dim_value or "k"]))
    onnx.checker.check_model(merged)
    return merged


@register(
    "column_gbm",
    data_types={"image", "text"},
    requires=("lightgbm",),
    reason="the GBM on the tabular columns plus the fine-tuned network's embedding of the image/text column "
           "(PCA to at most 32 dims, fitted on training rows), ensembled with the network",
    when="one image or text column beside tabular columns (preset best, or model.column_gbm: true)",
)
def build_column_gbm(**kwargs: Any) -> ColumnGBM:
    return ColumnGBM(**kwargs)

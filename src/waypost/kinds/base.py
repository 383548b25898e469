"""What every column kind provides. A new kind subclasses `Kind` in its own module and ends with
`register_kind(MyKind())`; `tests/test_conformance.py` runs every registered kind through the same
checks, so a kind that forgets a method fails there, not in a user's export.

Two families:
- tabular kinds (numeric, category, binary, datetime) share one set of views (the MLP's numeric and
  categorical inputs, the GBM's matrix) built by `waypost.data.preprocess.TabularPreprocessor`;
- encoder kinds (image, text; later sequence, audio, video) are each turned into arrays by a
  preprocessor of their own and read by an encoder network chosen for them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from waypost.errors import ConfigError


class Kind:
    name: str = ""
    #: trained by an encoder network of its own (else: part of the shared tabular views)
    encoder: bool = False
    #: the runtime pip extra its decoder needs (tokenizers for text)
    runtime_extra: str = "runtime"
    #: an encoder kind's graph inputs (base name -> ONNX element type), in the order it feeds them
    input_types: dict[str, str] = {}
    #: a Transformer-sized cost per row: the export times fewer rows
    costly: bool = False
    #: its cells are media files (paths or bytes) decoded to arrays: a folder of such files can feed
    #: the model, batch prediction reads them in small chunks and may skip unreadable ones, and JSON
    #: requests carry them as base64 (decoded and checked by the server, logged as digests, never
    #: passed on as strings: a string would reach the runtime as a path)
    media: bool = False
    #: the Arrow types a request column of it may have, in words (for the 422 when it has another)
    arrow_expected: str = ""
    # The server's request field and Arrow rule for a kind live beside the server's code, named by the
    # kind (`waypost.serve.fields.<kind>_contract`, `waypost.serve.columnar.arrow_<kind>`), so kinds
    # never import the server; a kind without them is refused by `waypost serve` with that message.
    #: the numpy dtype a JSON column of it becomes in the server (None: kept as Python values)
    column_dtype: str | None = None

    #: when `recognise` is asked, among the kinds and the drop rules (`waypost.kinds.recognise`)
    recognise_order: int = 100

    def _unsupported(self, what: str) -> ConfigError:
        return ConfigError(f"column kind {self.name!r} does not provide {what}")

    # ---- planning ----------------------------------------------------------------------------
    def recognise(self, profile: Any) -> str | None:
        """The reason this column is of this kind, or None. `profile` is a
        `waypost.kinds.recognise.ColumnProfile`: its statistics are computed once, on first use."""
        return None

    def choose_encoder(self, column: Any, task: Any, cfg: Any, requested: str = "auto") -> Any:
        """The Decision naming the registered architecture for this column (encoder kinds);
        `requested`: a name from the config, checked to take this kind."""
        raise self._unsupported("an encoder choice")

    def requested_encoder(self, requested: str) -> Any:
        """The Decision for an architecture named in the config, checked to take this kind; None
        when the choice is left to waypost ("auto")."""
        from waypost.models.registry import get
        from waypost.plan import Decision

        if requested == "auto":
            return None
        arch = get(requested)
        if self.name not in arch.data_types:
            raise ConfigError(f"model.architecture {requested!r} does not take {self.name} columns")
        return Decision("architecture", "architecture", requested, f"requested in the config; {arch.reason}")

    # ---- training ----------------------------------------------------------------------------
    def fit_preprocessor(self, cfg: Any, name: str, column: Any, arch: str | None = None) -> Any:
        """A fitted column preprocessor: `transform(series, **policy) -> (arrays, kept, skipped)`,
        `to_state()`, `decision_` (encoder kinds); `arch`: the column's chosen encoder (a pretrained
        text encoder brings its own tokenizer)."""
        raise self._unsupported("a preprocessor")

    def preprocessor_from_state(self, state: dict[str, Any]) -> Any:
        raise self._unsupported("a preprocessor")

    def bad_cell_policy(self, cfg: Any) -> dict[str, Any]:
        """Keyword options for the preprocessor's `transform` at fit time (e.g. skip bad images)."""
        return {}

    def augment_rows(self, train_df: Any, name: str, cfg: Any, plan: list[Any]) -> Any:
        """Training rows with augmented copies of this column, when the kind augments rows."""
        return train_df

    def build_part(self, cfg: Any, pre: Any, **common: Any) -> Any:
        """The one-column model (its encoder + head, fused with the tabular columns when any)."""
        raise self._unsupported("a model")

    def column_spec(self, cfg: Any, pre: Any, arch: str) -> dict[str, Any]:
        """This column's entry for the multi-column model (`waypost.models.multi_column`)."""
        raise self._unsupported("a multi-column encoder")

    def after_fit(self, pre: Any, part: Any, name: str) -> None:
        """Copy into column `name`'s preprocessor what the trained part decided (e.g. an image
        normalisation)."""

    # ---- export and runtime -------------------------------------------------------------------
    def export_graph(self, part: Any, inputs: Any, optimize: str, calibration: Any) -> tuple[Any, Any]:
        """(fp32 ONNX graph, the optimised one) of the one-column model."""
        raise self._unsupported("an ONNX export")

    def runtime_transform(self, entry: dict[str, Any]) -> Any:
        """A callable (columns, n) -> {graph input: array} from the column's fitted state (numpy and
        the kind's decoder only: the runtime's rule)."""
        raise self._unsupported("a runtime transform")

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        """`n` values built from the fitted state alone: for the export's trace, parity and latency."""
        raise self._unsupported("synthetic values")

    def probe_value(self, entry: dict[str, Any]) -> Any:
        """One valid value for the bundle's self-test prediction."""
        raise self._unsupported("a probe value")

    def example_value(self, entry: dict[str, Any]) -> Any:
        """The value a JSON example record holds (None where the caller must supply one)."""
        return None

    def digest_key(self, value: Any) -> Any:
        """A hashable stand-in for a cell in the data digest (lineage)."""
        return value

    def __repr__(self) -> str:
        return f"<kind {self.name}>"

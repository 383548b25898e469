"""Text for the torch-free runtime: the tokenizer's own JSON + numpy, shared with training.

Training (`waypost.data.text_preprocess`) and the bundle both tokenize through `encode`, so the ids
the ONNX graph sees are the ids the network trained on. Only `tokenizers` (a ~3 MB Rust wheel) is
needed; no transformers, no torch.

Padding: a batch is padded to its longest text (at most `max_length`), not to `max_length`: most
texts are short, and a Transformer's cost grows with the padded length. The graph's sequence axis is
dynamic, and the attention mask makes the padding invisible to the pooled output.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from waypost.errors import ConfigError, DataError


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


@lru_cache(maxsize=8)
def load_tokenizer(tokenizer_json: str, max_length: int) -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - the runtime extra without tokenizers
        raise ConfigError("text bundles need the tokenizers package: pip install 'waypost[runtime-text]'") from exc
    tok = Tokenizer.from_str(tokenizer_json)
    tok.enable_truncation(max_length)
    tok.no_padding()
    return tok


def pad_id(tok: Any) -> int:
    for token in ("[PAD]", "<pad>", "<PAD>"):
        idx = tok.token_to_id(token)
        if idx is not None:
            return int(idx)
    return 0


def encode(tok: Any, values: Any, *, column: str, pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids int64 (n, L), attention_mask int64 (n, L)). Missing values are empty texts; a
    value that is not a string is an error naming the row and column."""
    texts = []
    for i, v in enumerate(values):
        if _missing(v):
            texts.append("")
        elif isinstance(v, str):
            texts.append(v)
        else:
            raise DataError(f"row {i}, column '{column}': expected text (a string), got {type(v).__name__} {v!r:.60}")
    encodings = tok.encode_batch(texts)
    length = pad_to or max(1, max((len(e.ids) for e in encodings), default=1))
    ids = np.full((len(texts), length), pad_id(tok), dtype=np.int64)
    mask = np.zeros((len(texts), length), dtype=np.int64)
    for row, e in enumerate(encodings):
        n = min(len(e.ids), length)
        ids[row, :n] = e.ids[:n]
        mask[row, :n] = 1
    return ids, mask


class TextTransform:
    """A bundle's text column -> the graph's `input_ids` / `attention_mask`."""

    def __init__(self, state: dict[str, Any]) -> None:
        text = state["text"]
        self.column = state["column"]
        self.tokenizer = load_tokenizer(text["tokenizer"], int(text["max_length"]))

    def __call__(self, columns: dict[str, Any], n: int) -> dict[str, np.ndarray]:
        ids, mask = encode(self.tokenizer, columns[self.column], column=self.column)
        return {"input_ids": ids, "attention_mask": mask}

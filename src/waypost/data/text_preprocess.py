"""The preprocessor of one text column: a tokenizer (the pretrained model's, or one trained on the
training texts) and a maximum length chosen from the data, saved as JSON like the others.

Tokenizing goes through `waypost.runtime.text.encode`, shared with the torch-free runtime.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from waypost.errors import DataError, NotFittedError
from waypost.plan import Decision

#: Longest sequence the max-length rule picks: attention costs grow with the square of the length.
MAX_LENGTH_CAP = 256
MIN_LENGTH = 8
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: list[str], vocab_size: int = 8000) -> Any:
    """A BERT-style WordPiece tokenizer (lower-cased, [CLS] ... [SEP]) trained on `texts`.

    WordPiece rather than whole words: unseen words at predict time split into known pieces instead
    of all becoming [UNK], which matters when the training texts are few.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                       show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tok


def choose_max_length(token_counts: np.ndarray, model_limit: int | None = None) -> tuple[int, str]:
    """The 95th percentile of the training texts' token counts, rounded up to a multiple of 8,
    capped: the few longer texts are truncated, and every batch stays short."""
    p95 = int(np.ceil(np.percentile(token_counts, 95))) if len(token_counts) else MIN_LENGTH
    cap = min(MAX_LENGTH_CAP, model_limit or MAX_LENGTH_CAP)
    length = int(min(cap, max(MIN_LENGTH, -(-p95 // 8) * 8)))
    truncated = float(np.mean(token_counts > length)) if len(token_counts) else 0.0
    why = (f"95th percentile of the training texts is {p95} tokens (median {int(np.median(token_counts))}); "
           f"max_length {length} truncates {truncated:.1%} of them")
    if p95 > cap:
        why += f" (capped at {cap})"
    return length, why


class TextPreprocessor:
    kind = "text"

    def __init__(self, name: str, *, tokenizer_json: str | None = None, max_length: int | str = "auto",
                 vocab_size: int = 8000, model_limit: int | None = None) -> None:
        self.name = name
        self.tokenizer_json = tokenizer_json  # the pretrained model's; None: train one on the data
        self.max_length = max_length
        self.vocab_size = vocab_size
        self.model_limit = model_limit

    def fit(self, series: pd.Series) -> TextPreprocessor:
        from waypost.runtime.text import encode, load_tokenizer

        texts = [v for v in series.tolist() if isinstance(v, str) and v.strip()]
        if not texts:
            raise DataError(f"text column {self.name!r} has no non-empty texts in the training data")
        if self.tokenizer_json is None:
            self.tokenizer_ = train_wordpiece(texts, self.vocab_size).to_str()
            source = f"WordPiece tokenizer trained on {len(texts):,} training texts"
        else:
            self.tokenizer_ = self.tokenizer_json
            source = "the pretrained model's tokenizer"
        probe = load_tokenizer(self.tokenizer_, 100_000)
        counts = encode(probe, texts[:5000], column=self.name)[1].sum(1)
        if self.max_length == "auto":
            self.max_length_, why = choose_max_length(counts, self.model_limit)
        else:
            self.max_length_, why = int(self.max_length), "set in the config"
        self.vocab_size_ = int(probe.get_vocab_size())
        self.decision_ = Decision("column", f"column '{self.name}'", f"text, max_length {self.max_length_}",
                                  f"{source} ({self.vocab_size_:,} tokens); {why}")
        return self

    def _tokenizer(self) -> Any:
        from waypost.runtime.text import load_tokenizer

        if not hasattr(self, "tokenizer_"):
            raise NotFittedError(f"TextPreprocessor for column {self.name!r} is not fitted")
        return load_tokenizer(self.tokenizer_, self.max_length_)

    def transform(self, series: pd.Series) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, list[dict[str, Any]]]:
        """((input_ids, attention_mask) padded to max_length; kept positions (all); no skipped rows),
        the shape `ColumnFramePreprocessor` expects from every column preprocessor."""
        from waypost.runtime.text import encode

        arrays = encode(self._tokenizer(), series.tolist(), column=self.name, pad_to=self.max_length_)
        return arrays, np.arange(len(series)), []

    def to_state(self) -> dict[str, Any]:
        self._tokenizer()
        return {"kind": self.kind, "name": self.name, "tokenizer": self.tokenizer_, "max_length": self.max_length_,
                "vocab_size": self.vocab_size_}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TextPreprocessor:
        if state.get("kind") != cls.kind:
            raise DataError(f"preprocessor state has kind {state.get('kind')!r}; expected 'text'")
        obj = cls(state["name"])
        obj.tokenizer_, obj.max_length_, obj.vocab_size_ = state["tokenizer"], int(state["max_length"]), int(state["vocab_size"])
        return obj

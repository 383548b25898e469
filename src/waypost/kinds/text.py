"""The text kind: strings with several tokens -> token ids -> a pretrained or scratch Transformer.

The encoder is chosen by data size, the weights at hand and the latency budget
(`waypost.models.text_encoder.choose_text_architecture`); the tokenizer's own JSON travels in the
bundle and `tokenizers` is the runtime's only extra (`waypost.runtime.text`).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from waypost.kinds import register_kind
from waypost.kinds.base import Kind

#: Free text: at least this many whitespace tokens on average and this share of distinct values ...
TEXT_MIN_TOKENS = 3.0
TEXT_MIN_DISTINCT = 0.5
#: ... or this many tokens on average, whatever the distinct share (long repeated templates).
TEXT_LONG_TOKENS = 5.0

class TextKind(Kind):
    name = "text"
    encoder = True
    arrow_expected = "strings"
    runtime_extra = "runtime-text"
    input_types = {"input_ids": "tensor(int64)", "attention_mask": "tensor(int64)"}
    costly = True
    recognise_order = 40  # after dates and identifiers, before categories

    def recognise(self, p: Any) -> str | None:
        if p.form != "strings":
            return None
        tokens, distinct = p.mean_tokens, p.n_distinct / p.n
        if (tokens >= TEXT_MIN_TOKENS and distinct >= TEXT_MIN_DISTINCT) or tokens >= TEXT_LONG_TOKENS:
            return f"free text: {tokens:.1f} tokens on average, {distinct:.0%} distinct"
        return None

    def choose_encoder(self, column: Any, task: Any, cfg: Any, requested: str = "auto") -> Any:
        from waypost.models.text_encoder import choose_text_architecture, resolve_text_weights
        from waypost.plan import Decision

        fixed = self.requested_encoder(requested)
        if fixed is not None:
            return fixed
        name, reason = choose_text_architecture(int(column.notna().sum()), resolve_text_weights(cfg.model.text.pretrained),
                                                cfg.model.text.latency_budget_ms)
        return Decision("architecture", "architecture", name, reason)

    def _weights(self, cfg: Any, arch: str) -> Any:
        from waypost.models.text_encoder import resolve_text_weights

        return resolve_text_weights(cfg.model.text.pretrained if arch == "pretrained_transformer" else False)

    def fit_preprocessor(self, cfg: Any, name: str, column: Any, arch: str | None = None) -> Any:
        from waypost.data.text_preprocess import TextPreprocessor
        from waypost.plan import Decision

        text = cfg.model.text
        weights = self._weights(cfg, arch or cfg.model.architecture)
        tokenizer_json = weights.tokenizer_json()
        # A WordPiece trained on the data is not reproducible (huggingface/tokenizers#1794: hash-map order
        # decides ties), so a resumed fit must take the interrupted fit's tokenizer from the checkpoint.
        slot, saved = _tokenizer_slot(tokenizer_json, name)
        pre = TextPreprocessor(name, tokenizer_json=saved["tokenizer"] if saved else tokenizer_json,
                               max_length=text.max_length, vocab_size=text.vocab_size,
                               model_limit=weights.length_limit(tokenizer_json)).fit(column)
        if saved:
            pre.decision_ = Decision.from_dict(saved["decision"])
        elif slot is not None:
            slot.write_json(_tokenizer_file(name), {"tokenizer": pre.tokenizer_, "decision": pre.decision_.to_dict()})
        return pre

    def preprocessor_from_state(self, state: dict[str, Any]) -> Any:
        from waypost.data.text_preprocess import TextPreprocessor

        return TextPreprocessor.from_state(state)

    def augment_rows(self, train_df: Any, name: str, cfg: Any, plan: list[Any]) -> Any:
        """Training rows plus `n_aug` augmented copies of each (other columns and label unchanged).
        After the tokenizer and max_length are fitted, so they describe real texts; never the
        validation rows."""
        import pandas as pd

        from waypost.plan import Decision

        aug = cfg.model.text.augment
        if not aug.enabled:
            return train_df
        rows = train_df[train_df[name].map(lambda v: isinstance(v, str) and bool(v.strip()))]
        new = aug.augment(rows[name].tolist(), seed=cfg.training.seed)
        # augment_texts returns the n_aug copies of each text together, text by text
        order = [i for i in range(len(rows)) for _ in range(aug.n_aug)]
        copies = rows.iloc[order].reset_index(drop=True).assign(**{name: new})
        plan.append(Decision("training", "text augmentation", f"+{len(new):,} texts",
                             f"EDA (WordNet synonyms {aug.synonym}, deletion {aug.delete}, swaps {aug.swap}) on "
                             f"{len(rows):,} training texts of '{name}', {aug.n_aug} copy each; validation texts "
                             "untouched"))
        return pd.concat([train_df, copies], ignore_index=True)

    def build_part(self, cfg: Any, pre: Any, **common: Any) -> Any:
        from waypost.models.text_model import TextModel

        return TextModel(vocab_size=pre.vocab_size_, max_length=pre.max_length_, text=cfg.model.text,
                         weights=self._weights(cfg, common["arch"]), **common)

    def column_spec(self, cfg: Any, pre: Any, arch: str) -> dict[str, Any]:
        return {"kind": self.name, "arch": arch, "vocab_size": pre.vocab_size_, "max_length": pre.max_length_,
                "text": cfg.model.text.model_dump(), "weights": self._weights(cfg, arch)}

    def export_graph(self, part: Any, inputs: Any, optimize: str, calibration: Any) -> tuple[Any, Any]:
        """int8: dynamic on the MatMuls, per row (the standard recipe for BERT-like encoders: weights
        dominate, and activation ranges vary per text)."""
        from waypost.deploy.quantize import optimize_model

        fp32 = part.to_onnx(inputs)
        return fp32, optimize_model(fp32, optimize)

    def runtime_transform(self, entry: dict[str, Any]) -> Any:
        from waypost.runtime.text import TextTransform

        transform = TextTransform({"column": entry["name"], "text": entry})
        names = list(entry["inputs"])
        if names == list(self.input_types):
            return transform
        return lambda columns, n: dict(zip(names, transform(columns, n).values()))

    def synthetic_cells(self, entry: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
        vocab = [t for t in json.loads(entry["tokenizer"])["model"].get("vocab", {}) if t.isalpha()] or ["text"]
        return [" ".join(rng.choice(vocab, size=int(rng.integers(3, 40)))) for _ in range(n)]

    def probe_value(self, entry: dict[str, Any]) -> Any:
        return ""

    def example_value(self, entry: dict[str, Any]) -> Any:
        return ""



def _tokenizer_slot(pretrained_tokenizer: str | None, column: str) -> tuple[Any, dict[str, Any] | None]:
    """(the checkpoint slot of a tokenizer trained on the data, its saved state when resuming)."""
    from waypost.train.session import current_session

    session = current_session()
    if pretrained_tokenizer is not None or session is None or session.checkpoints is None:
        return None, None
    slot = session.checkpoints.slot("tokenizer")
    if session.checkpoints.resumed and slot.has(_tokenizer_file(column)):
        return slot, slot.read_json(_tokenizer_file(column))
    return slot, None


def _tokenizer_file(column: str) -> str:
    """One file per text column, named by a digest: column names may hold any character."""
    import hashlib

    return f"tokenizer-{hashlib.sha256(column.encode()).hexdigest()[:12]}.json"


register_kind(TextKind())

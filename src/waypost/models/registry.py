"""Data type -> architecture registry, in the spirit of timm: a string name maps to a constructor
registered beside its code, with the reason it is chosen and the conditions it is chosen under.

A new architecture is one file with one `@register(...)` call; `choose_architecture` reads the
entries, so adding a family never means editing a chain of if-statements here.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

from waypost.data.types import TABULAR_TYPES
from waypost.errors import ConfigError
from waypost.plan import Decision

# Modules whose import registers entries. Imported on first registry use, not at package import.
_MODULES = ("waypost.models.tabular_mlp", "waypost.models.gbm", "waypost.models.linear", "waypost.models.forest",
            "waypost.models.catboost_part", "waypost.models.entity_gbm", "waypost.models.column_gbm",
            "waypost.ensemble.greedy",
            "waypost.models.small_cnn", "waypost.models.image_cnn", "waypost.models.text_encoder", "waypost.models.multi_column")


@dataclass(frozen=True)
class Architecture:
    name: str
    data_types: frozenset[str]
    reason: str
    when: str
    factory: Callable[..., Any]
    requires: tuple[str, ...] = ()
    priority: int = 0  # higher wins among available entries for the same data types
    tags: tuple[str, ...] = field(default_factory=tuple)

    def available(self) -> bool:
        return all(importlib.util.find_spec(pkg) is not None for pkg in self.requires)

    def missing(self) -> list[str]:
        return [pkg for pkg in self.requires if importlib.util.find_spec(pkg) is None]


_REGISTRY: dict[str, Architecture] = {}
_loaded = False


def register(
    name: str,
    *,
    data_types: set[str] | frozenset[str],
    reason: str,
    when: str,
    requires: tuple[str, ...] = (),
    priority: int = 0,
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(
            name, frozenset(data_types), reason, when, factory, requires, priority, tags
        )
        return factory

    return decorator


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        for module in _MODULES:
            importlib.import_module(module)
        _loaded = True


def get(name: str) -> Architecture:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ConfigError(f"model.architecture: unknown architecture {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def list_architectures(data_type: str | None = None) -> list[Architecture]:
    _ensure_loaded()
    entries = [a for a in _REGISTRY.values() if data_type is None or data_type in a.data_types]
    return sorted(entries, key=lambda a: (-a.priority, a.name))


def choose_architecture(feature_types: set[str], requested: str = "auto") -> Decision:
    """Pick the model for the feature types present; a requested name is checked, not second-guessed."""
    _ensure_loaded()
    if requested != "auto":
        arch = get(requested)
        if not arch.available():
            raise ConfigError(
                f"model.architecture: {requested!r} needs {arch.missing()}; "
                f"install them (pip install 'waypost[tabular]') or choose another architecture"
            )
        return Decision("architecture", "architecture", requested, f"requested in the config; {arch.reason}")
    covered = set().union(*(a.data_types for a in _REGISTRY.values()))
    unsupported = feature_types - covered
    if unsupported:
        raise ConfigError(f"no architecture is registered yet for column types {sorted(unsupported)}")
    if feature_types - TABULAR_TYPES:  # an image or text column: its encoder is chosen by pipelines.plan.resolve_job
        raise ConfigError(f"choose_architecture picks tabular models; {sorted(feature_types - TABULAR_TYPES)} "
                          "columns get their encoder from waypost.pipelines.plan.resolve_job")
    candidates = [
        a for a in list_architectures() if feature_types <= a.data_types and "default" in a.tags
    ]
    skipped = []
    for arch in candidates:
        if arch.available():
            note = f" ({'; '.join(skipped)})" if skipped else ""
            return Decision("architecture", "architecture", arch.name, f"{arch.reason}{note}")
        skipped.append(f"{arch.name} skipped: {', '.join(arch.missing())} not installed")
    raise ConfigError(f"no available architecture for {sorted(feature_types)}: {'; '.join(skipped)}")

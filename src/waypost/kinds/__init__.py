"""Column kinds as plug-ins: a kind name -> the `Kind` object that owns everything that differs per
data type (choosing its encoder, its preprocessor, the runtime transform, synthetic rows for the
export check, the graph inputs it feeds, its request field, its digest for the lineage).

Like the architecture registry (and timm's), a name maps to an entry registered beside its code,
and modules are imported on first use: `import waypost.kinds` costs nothing, and the torch-free
runtime can ask a kind for its transform (kind modules import numpy alone at module level).

Outside this package nothing branches on a kind's name: code asks `get_kind(name)` and calls the
object. A name with no registered kind is a ConfigError naming the known ones, never a fall-through
into "the other known kind".
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from waypost.errors import ConfigError

if TYPE_CHECKING:
    from waypost.kinds.base import Kind

#: kind name -> the module whose import registers it
_MODULES = {
    "numeric": "waypost.kinds.tabular", "category": "waypost.kinds.tabular", "binary": "waypost.kinds.tabular",
    "datetime": "waypost.kinds.tabular", "image": "waypost.kinds.image", "text": "waypost.kinds.text",
}
_KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    """Add `kind` under `kind.name` (called at the bottom of the kind's own module)."""
    if kind.name in _KINDS and type(_KINDS[kind.name]) is not type(kind):
        raise ValueError(f"column kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> Kind:
    """The registered kind called `name`; a ConfigError naming the known kinds otherwise."""
    if name not in _KINDS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _KINDS:
        raise ConfigError(f"no column kind {name!r} is registered in this waypost version; "
                          f"known kinds: {list(_MODULES)}")
    return _KINDS[name]


def kind_names() -> tuple[str, ...]:
    return tuple(_MODULES)


def is_registered(name: str) -> bool:
    return name in _MODULES or name in _KINDS


def encoder_kinds() -> tuple[str, ...]:
    """Kinds trained by an encoder network of their own (not through the shared tabular views)."""
    return tuple(n for n in _MODULES if get_kind(n).encoder)

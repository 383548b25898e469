"""waypost: from a table to a tracked, deployed, monitored deep-learning model.

Heavy libraries (torch, lightning, mlflow) load on first use, so `import waypost` stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]

if TYPE_CHECKING:
    from waypost.predictor import Predictor


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from waypost.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'waypost' has no attribute {name!r}")

"""Run a deployed bundle with numpy + onnxruntime only: no torch, pandas or scikit-learn.

    import waypost.runtime as rt
    bundle = rt.load("bundle/")
    bundle.predict([{"balance": 1200.0, "income": 40000.0, "student": "No"}])
"""
from __future__ import annotations

import os

from waypost.runtime.bundle import Bundle

__all__ = ["Bundle", "load"]


def load(path: str | os.PathLike, *, providers: list[str] | None = None,
         intra_op_threads: int | None = None) -> Bundle:
    return Bundle(path, providers=providers, intra_op_threads=intra_op_threads)

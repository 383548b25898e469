"""The preprocessor state of a bundle or model directory, in one layout for every table.

Format 2 (this version) writes `{"kind": "frame", "columns": [...], "tabular": {...} | None}`:
`columns` holds one entry per encoder column (its kind's fitted state, with `name`, `kind` and the
graph `inputs` it feeds), `tabular` the shared tabular views' state (numeric, category, binary and
datetime columns). Format 1 wrote three layouts (`tabular`, `image_frame`, `text_frame`);
`frame_state` reads all of them, so every reader handles one layout and old files keep working.

Plain dicts and no imports beyond the standard library: the torch-free runtime reads this.
"""
from __future__ import annotations

from typing import Any

#: the graph inputs of a format-1 bundle's one encoder column, by its kind
V1_INPUTS = {"image": ["image"], "text": ["input_ids", "attention_mask"]}


def frame_state(state: dict[str, Any]) -> dict[str, Any]:
    """`state` in the format-2 layout (a format-1 state is converted; a format-2 one returned as is)."""
    kind = state.get("kind")
    if kind == "frame":
        return state
    if kind == "tabular":
        return {"kind": "frame", "columns": [], "tabular": state}
    if isinstance(kind, str) and kind.endswith("_frame"):
        part = kind.removesuffix("_frame")
        entry = {**state.get(part, {}), "kind": part, "name": state.get("column"),
                 "inputs": list(V1_INPUTS.get(part, []))}
        return {"kind": "frame", "columns": [entry], "tabular": state.get("tabular")}
    return state  # not a known layout: the manifest check names it


def tabular_state(state: dict[str, Any]) -> dict[str, Any] | None:
    return frame_state(state).get("tabular")


def encoder_columns(state: dict[str, Any]) -> list[dict[str, Any]]:
    return list(frame_state(state).get("columns") or [])


def tabular_columns(state: dict[str, Any]) -> list[dict[str, Any]]:
    tab = tabular_state(state)
    return list((tab or {}).get("columns") or [])

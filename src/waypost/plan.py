"""A run's plan: every decision waypost made, with the reason, in the order it was made.

Kept as plain data so it lands unchanged in waypost.yaml, the model manifest and MLflow.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    step: str  # column | task | architecture | training | selection | data
    subject: str
    choice: str
    reason: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.choice} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Decision:
        return cls(**{k: str(raw[k]) for k in ("step", "subject", "choice", "reason")})


def render_plan(plan: list[Decision]) -> str:
    """Plain-text plan for logs and `waypost info`."""
    width = max((len(d.subject) for d in plan), default=0)
    return "\n".join(f"{d.subject:<{width}}  {d.choice:<14} {d.reason}" for d in plan)

"""Tasks as plug-ins: a task name -> the `Task` object that owns everything that differs per task
(target codec, validation split, loss, validation metrics, headline metric, the output contract).

Like the kinds and the architecture registry, a name maps to an entry registered beside its code,
imported on first use; numpy only at import, so the torch-free runtime answers through it. Outside
this package no code compares a task name: it asks `get_task(name)`. A new task (forecast,
anomaly, recommend) is one module that calls `register_task`, plus its name in `_MODULES`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from waypost.errors import ConfigError

if TYPE_CHECKING:
    from waypost.tasks.base import Task

__all__ = ["get_task", "register_task", "task_names"]

#: task name -> the module whose import registers it
_MODULES = {"binary": "waypost.tasks.classification", "multiclass": "waypost.tasks.classification",
            "regression": "waypost.tasks.regression"}
_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add `task` under its name; a second, different task under a taken name is refused."""
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise ValueError(f"task {task.name!r} is registered twice")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called `name`; a ConfigError naming the known tasks otherwise."""
    if not isinstance(name, str):
        raise ConfigError(f"task must be a name (one of {list(task_names())}), got {name!r}")
    if name not in _TASKS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {list(task_names())}")
    return _TASKS[name]


def task_names() -> tuple[str, ...]:
    """Every task a config may name: ("binary", "multiclass", "regression") plus any registered."""
    return tuple(dict.fromkeys([*_MODULES, *_TASKS]))

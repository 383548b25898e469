"""Exceptions users see. Every message names the column, file or field at fault and what was expected.

They subclass ValueError/FileNotFoundError so callers that already catch the built-ins keep working.
"""
from __future__ import annotations


class WaypostError(Exception):
    """Base of every error waypost raises on purpose."""


class DataError(WaypostError, ValueError):
    """The data does not fit what was asked: a missing column, a bad target, an unreadable table."""


class ConfigError(WaypostError, ValueError):
    """A config file or argument has an unknown key or a bad value."""


class ModelFileError(WaypostError, FileNotFoundError):
    """A saved model directory is missing a file, or a file in it is corrupt or from a newer format."""


class NotFittedError(WaypostError, AttributeError):
    """A method that needs a fitted model was called before `fit`."""

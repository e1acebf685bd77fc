"""The few exception types of nas_meta.

A :class:`NasMetaError` is a *user* mistake (an unknown name, a malformed file, missing data): the
CLI prints its message as one line on stderr and exits with code 2, without a traceback.  Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["NasMetaError", "ConfigError", "DataError", "SpaceError", "StudyError"]


class NasMetaError(Exception):
    """A mistake in what the user asked for; its message names the bad value and the valid choices."""


class ConfigError(NasMetaError):
    """A bad option value or combination of options."""


class DataError(NasMetaError):
    """Missing, unreadable or too small data (paths and class names are in the message)."""


class SpaceError(NasMetaError):
    """A malformed search space file or architecture graph."""


class StudyError(NasMetaError):
    """A study that does not exist, is empty, or does not match the request."""

"""Errors that carry a message meant for the user.

Every layer raises a subclass of :class:`MinetuneError` with one actionable sentence;
the CLI prints it on one line and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class MinetuneError(Exception):
    """Base class for errors whose message can be shown to the user as-is."""


class ConfigError(MinetuneError):
    """Settings are missing or invalid."""


class StoreError(MinetuneError):
    """The store cannot be opened or a record is missing."""


class NotFoundError(StoreError):
    """A named or numbered record does not exist."""


class ModelError(MinetuneError):
    """A model spec is invalid, or a backend cannot be reached or refuses a request."""


class FeedbackError(MinetuneError):
    """A rating or critique is invalid (for example stars outside 1-5)."""

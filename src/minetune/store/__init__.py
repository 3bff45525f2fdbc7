"""Persistence: the schema, migrations and the :class:`Store` repository.

The repository, and with it SQLAlchemy's ORM and the schema, loads on first use of a name below,
so that :mod:`minetune.store.stats` (``minetune stats``) can run on SQLAlchemy Core alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

DEFAULT_PROGRAM = "default"
DEFAULT_USER = "local"

if TYPE_CHECKING:
    from minetune.store.repo import Capture, Store
    from minetune.store.stats import effective_ratings

__all__ = ["DEFAULT_PROGRAM", "DEFAULT_USER", "Capture", "Store", "effective_ratings"]

_LAZY = {
    "Capture": "minetune.store.repo",
    "Store": "minetune.store.repo",
    "effective_ratings": "minetune.store.stats",
}


def __getattr__(name: str) -> Any:
    """``Store``, ``Capture`` and ``effective_ratings``, imported when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value

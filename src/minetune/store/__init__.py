"""Persistence: the schema, migrations and the :class:`Store` repository."""

from minetune.store.repo import DEFAULT_PROGRAM, Capture, Store, effective_ratings

__all__ = ["DEFAULT_PROGRAM", "Capture", "Store", "effective_ratings"]

"""What the running server holds: settings, the database, one Store per user, models and workers."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from minetune.config import Settings
from minetune.models.base import ChatModel
from minetune.store import Store
from minetune.store.db import Database, open_engine


@dataclass
class ServerState:
    """Shared by every request. ``auth_required`` is decided once at start-up."""

    settings: Settings
    db: Database
    auth_required: bool
    model_override: ChatModel | None = None  # tests inject a model; otherwise specs are resolved
    _stores: dict[str, Store] = field(default_factory=dict)
    _models: dict[str, ChatModel] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Re-optimization and training run here so they never hold up a request.
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="minetune-bg")
    )

    @classmethod
    def open(cls, settings: Settings, auth_required: bool, model: ChatModel | None = None) -> ServerState:
        return cls(settings, Database(open_engine(settings.resolved_database_url)), auth_required, model)

    def store(self, user: str) -> Store:
        """The Store bound to ``user``: every query it makes is scoped to that user."""
        with self._lock:
            store = self._stores.get(user)
            if store is None:
                store = self._stores[user] = Store(self.db, user)
            return store

    def model(self, spec: str | None) -> ChatModel:
        """The chat model for ``spec`` (None: settings / auto-detection), built once and reused."""
        if self.model_override is not None:
            return self.model_override
        from minetune.models import resolve_model

        key = spec or ""
        with self._lock:
            model = self._models.get(key)
        if model is None:
            model = resolve_model(self.settings, spec)
            with self._lock:
                self._models.setdefault(key, model)
        return model

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.background.submit(fn, *args, **kwargs)

    def close(self) -> None:
        self.background.shutdown(wait=False, cancel_futures=True)
        self.db.close()

"""What the running server holds: settings, the database, one Store per user, models and workers."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from minetune.config import Settings
from minetune.models.base import ChatModel
from minetune.server.limits import UpstreamPool
from minetune.store import Store
from minetune.store.db import Database, open_engine


@dataclass
class ServerState:
    """Shared by every request. ``auth_mode``: True (tokens always required), False (never:
    ``--no-auth`` on loopback), None (required once any token exists, checked per request: see
    :mod:`minetune.server.auth`)."""

    settings: Settings
    db: Database
    auth_mode: bool | None
    model_override: ChatModel | None = None  # tests inject a model; otherwise specs are resolved
    _stores: dict[str, Store] = field(default_factory=dict)
    _models: dict[tuple[Any, ...], ChatModel] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Small chores off the request path (warming the embedder). Learning, continual updates and
    # training are jobs of minetune.app.jobs instead: rows every process sees, serialised per program.
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="minetune-bg")
    )
    # Model calls and the streams that read them (server/limits.py): a bounded pool of their own,
    # so a slow model never takes the threads that serve pages, logins and feedback.
    upstream: UpstreamPool = field(default_factory=lambda: UpstreamPool(workers=64, per_user=16))

    @classmethod
    def open(
        cls, settings: Settings, auth_required: bool | None, model: ChatModel | None = None
    ) -> ServerState:
        """Open the database and mark jobs and streamed answers whose process died ``interrupted``
        (crash recovery)."""
        from minetune.app.exchange import recover_streams
        from minetune.app.jobs import recover

        db = Database(open_engine(settings.resolved_database_url))
        recover(db)
        recover_streams(db)
        upstream = UpstreamPool(workers=settings.upstream_workers, per_user=settings.user_concurrency)
        return cls(settings, db, auth_required, model, upstream=upstream)

    @property
    def auth_required(self) -> bool:
        """Whether tokens are required right now (the mode, or whether any token exists)."""
        if self.auth_mode is not None:
            return self.auth_mode
        from minetune.store.users import any_tokens

        return any_tokens(self.db)

    def store(self, user: str) -> Store:
        """The Store bound to ``user``: every query it makes is scoped to that user."""
        with self._lock:
            store = self._stores.get(user)
            if store is None:
                store = self._stores[user] = Store(self.db, user)
            return store

    def model(self, spec: str | None, store: Store | None = None, program: str | None = None) -> ChatModel:
        """The chat model for ``spec`` (None: settings / auto-detection), built once and reused.

        A routed spec (``…?route``) routes between one program's domain adapters, so it needs the
        ``store`` and ``program``; it is rebuilt when the program's active version changes."""
        if self.model_override is not None:
            return self.model_override
        from minetune.models.spec import is_routed

        routed = is_routed(spec)
        if routed and (store is None or program is None):
            from minetune.errors import ModelError

            raise ModelError(f"{spec} routes between a program's adapters; it needs the program.")
        key: tuple[Any, ...] = (spec or "",)
        if routed:
            assert store is not None and program is not None
            key = (spec, store.user_id, program, store.active_version(program).id)
        with self._lock:
            model = self._models.get(key)
        if model is None:
            if routed:
                from minetune.train.adapters import routed_model

                model = routed_model(store, self.settings, program, spec)  # type: ignore[arg-type]
            else:
                from minetune.models import resolve_model

                model = resolve_model(self.settings, spec)
            with self._lock:
                model = self._models.setdefault(key, model)
        return model

    def use_default_model(self, spec: str) -> None:
        """From the next request on, answer with ``spec`` for programs without a model of their
        own (the cached default model is dropped)."""
        from dataclasses import replace

        with self._lock:
            self.settings = replace(self.settings, model=spec)
            self._models.pop(("",), None)

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run a chore in the background. Not for learning or training: use
        :func:`minetune.app.jobs.submit_learning` / :func:`minetune.app.jobs.submit`."""
        return self.background.submit(fn, *args, **kwargs)

    def close(self) -> None:
        self.background.shutdown(wait=False, cancel_futures=True)
        self.upstream.close()
        self.db.close()

"""Two users with tokens talking to a real minetune server on loopback (for web isolation tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from minetune.config import Settings
from minetune.models.base import ChatModel
from minetune.server.app import create_app
from minetune.store import Store
from minetune.store.users import issue_token
from serverutil import serve_app

JSON = {"Accept": "application/json"}


@dataclass
class TwoUsers:
    """``a`` and ``b`` are HTTP clients authenticated as alice and bob; ``store_a``/``store_b``
    read the same database directly (to check what changed)."""

    base_url: str
    a: httpx.Client
    b: httpx.Client
    anonymous: httpx.Client
    store_a: Store
    store_b: Store
    app: Any


@contextmanager
def two_users(settings: Settings, model: ChatModel | None = None) -> Iterator[TwoUsers]:
    """Serve the app with authentication on, for users alice and bob."""
    store_a = Store.open(settings, "alice")
    store_b = Store(store_a.db, "bob")
    token_a, token_b = issue_token(store_a.db, "alice"), issue_token(store_a.db, "bob")
    app = create_app(settings, require_auth=True, model=model)
    with serve_app(app) as url:
        clients = [
            httpx.Client(base_url=url, headers=JSON | {"Authorization": f"Bearer {token}"}, timeout=60)
            for token in (token_a, token_b)
        ]
        anonymous = httpx.Client(base_url=url, headers=JSON, timeout=60)
        try:
            yield TwoUsers(url, clients[0], clients[1], anonymous, store_a, store_b, app)
        finally:
            for client in [*clients, anonymous]:
                client.close()
            store_a.close()


def error(response: httpx.Response) -> str:
    """The message of an error response (the OpenAI error shape)."""
    return str(response.json()["error"]["message"])

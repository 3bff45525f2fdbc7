"""A real minetune server on loopback for the web tests: for the single local user (:func:`served`)
or for two users with tokens (:func:`two_users`), with clients that ask for JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from fakes import FakeOpenAI
from minetune.config import Settings
from minetune.models import resolve_model
from minetune.server.app import create_app
from minetune.store import Store
from minetune.store.users import issue_token
from serverutil import serve_app
from webchat import fake_spec, web_settings

JSON = {"Accept": "application/json"}


def client(url: str, token: str | None = None) -> httpx.Client:
    """An HTTP client for the server at ``url`` that asks for JSON (as ``token``'s user if given)."""
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=JSON | auth, timeout=60)


def csrf_token(http: httpx.Client, page: str = "/rules") -> str:
    """The CSRF token rendered into ``page``'s forms (the client keeps the cookie that goes with it)."""
    html = http.get(page, headers={"Accept": "text/html"}).text
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found, html
    return found.group(1)


def error(response: httpx.Response) -> str:
    """The message of an error response (the OpenAI error shape)."""
    return str(response.json()["error"]["message"])


@contextmanager
def rows_unchanged(store: Store) -> Iterator[None]:
    """Assert that no table gained or lost a row within the block."""
    before = store.row_counts()
    yield
    assert store.row_counts() == before


@dataclass
class Served:
    client: httpx.Client
    store: Store
    base_url: str


@contextmanager
def served(settings: Settings) -> Iterator[Served]:
    """The app for the single local user (no auth) on loopback, and a Store on the same database."""
    store = Store.open(settings)
    app = create_app(settings)
    try:
        with serve_app(app) as url, client(url) as http:
            yield Served(http, store, url)
    finally:
        store.close()


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
def two_users(settings: Settings | None = None, fake: FakeOpenAI | None = None) -> Iterator[TwoUsers]:
    """Serve the app with authentication on, for users alice and bob. ``settings`` default to
    re-optimization off; with ``fake``, every program's answers come from it."""
    settings = settings or web_settings(None)
    model = resolve_model(settings, fake_spec(fake)) if fake is not None else None
    store_a = Store.open(settings, "alice")
    store_b = Store(store_a.db, "bob")
    token_a, token_b = issue_token(store_a.db, "alice"), issue_token(store_a.db, "bob")
    app = create_app(settings, require_auth=True, model=model)
    with serve_app(app) as url:
        a, b, anonymous = client(url, token_a), client(url, token_b), client(url)
        try:
            yield TwoUsers(url, a, b, anonymous, store_a, store_b, app)
        finally:
            for http in (a, b, anonymous):
                http.close()
            store_a.close()

"""Auth takes effect at once: a server started with no tokens (single local user on loopback) asks
for a token on the very next request after `minetune user add`, refuses a revoked token on the
next request, and the first user added takes over the single-user data (saying so)."""

from __future__ import annotations

import os
import subprocess
import sys

from minetune.config import load_settings
from minetune.server.app import create_app
from minetune.store import Store
from minetune.store.db import Database, open_engine
from minetune.store.users import issue_token, revoke_tokens
from serverutil import serve_app
from webchat import web_settings
from webusers import client, csrf_token


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minetune.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "40"},
        timeout=120,
    )


def test_tokens_added_and_revoked_while_serving_count_on_the_next_request(database_url: str) -> None:
    settings = web_settings(None)
    db = Database(open_engine(settings.resolved_database_url))
    app = create_app(settings)
    try:
        with serve_app(app) as url, client(url) as anonymous, client(url, "sk-placeholder") as placeholder:
            assert anonymous.get("/v1/models").status_code == 200  # no token exists yet
            assert placeholder.get("/v1/models").status_code == 200  # a client's dummy key is fine
            alice_token = issue_token(db, "alice")  # as `minetune user add alice` in another process
            refused = anonymous.get("/v1/models")
            assert refused.status_code == 401
            assert "Authentication required" in refused.json()["error"]["message"]
            assert placeholder.get("/v1/models").status_code == 401
            bob_token = issue_token(db, "bob")
            with client(url, alice_token) as alice, client(url, bob_token) as bob:
                assert alice.get("/v1/models").status_code == 200
                assert bob.get("/v1/models").status_code == 200
                assert revoke_tokens(db, "bob") == 1
                revoked = bob.get("/v1/models")
                assert revoked.status_code == 401
                assert revoked.json()["error"]["message"] == "Invalid token."
                assert alice.get("/v1/models").status_code == 200
                # pages: a browser without a login cookie is sent to the login page
                page = anonymous.get("/", headers={"Accept": "text/html"})
                assert page.status_code == 303 and page.headers["location"].startswith("/login")
    finally:
        db.close()


def test_login_form_works_for_a_token_added_after_start(database_url: str) -> None:
    settings = web_settings(None)
    db = Database(open_engine(settings.resolved_database_url))
    app = create_app(settings)
    try:
        with serve_app(app) as url, client(url) as browser:
            token = issue_token(db, "carol")
            form = {"token": token, "next": "/", "csrf_token": csrf_token(browser, "/login")}
            response = browser.post("/login", data=form, headers={"Accept": "text/html"})
            assert response.status_code == 303
            assert browser.get("/v1/models").status_code == 200  # the login cookie is the token
    finally:
        db.close()


def test_first_user_added_adopts_the_single_user_data_and_says_so(database_url: str) -> None:
    store = Store.open(load_settings())
    try:
        store.create_program("support", "You help.", None)
    finally:
        store.close()
    added = cli("user", "add", "alice")
    assert added.returncode == 0, added.stderr
    stderr = " ".join(added.stderr.split())
    assert "alice now owns the 1 program(s) made before tokens existed" in stderr
    alice = Store.open(load_settings(), "alice")
    try:
        assert {p.name for p in alice.programs()} >= {"support"}
    finally:
        alice.close()
    second = cli("user", "add", "bob")
    assert second.returncode == 0, second.stderr
    assert "now owns" not in second.stderr
    bob = Store.open(load_settings(), "bob")
    try:
        assert "support" not in {p.name for p in bob.programs()}
    finally:
        bob.close()


def test_keep_local_leaves_the_data_with_the_local_user(database_url: str) -> None:
    store = Store.open(load_settings())
    try:
        store.create_program("support", "You help.", None)
    finally:
        store.close()
    added = cli("user", "add", "alice", "--keep-local")
    assert added.returncode == 0, added.stderr
    assert "stay with the hidden user 'local'" in " ".join(added.stderr.split())
    alice = Store.open(load_settings(), "alice")
    try:
        assert "support" not in {p.name for p in alice.programs()}
    finally:
        alice.close()

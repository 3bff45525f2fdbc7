"""Cross-site and DNS-rebinding guards over real HTTP on 127.0.0.1: foreign Host names, foreign
origins (another site, another localhost port, ``null``), non-JSON bodies to JSON APIs, form posts
without a CSRF token, CORS preflights, API docs behind auth, and ``serve --no-auth`` off loopback.
Every refusal leaves the store's row counts as they were."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from fakes import FakeOpenAI
from minetune.config import load_settings
from minetune.errors import ConfigError, MinetuneError
from minetune.server.app import create_app
from minetune.server.guards import Guards
from minetune.store import Store
from minetune.store.users import issue_token
from serverutil import serve_app
from webchat import done, ndjson, web_settings
from webusers import Served, csrf_token, error, served, two_users

EVIL = "http://evil.example"
CANARY = "The canary's name is Pumpernickel."


@pytest.fixture
def web(fake_llm: FakeOpenAI) -> Iterator[Served]:
    """The single-user (no tokens) server with one stored exchange whose answer is the canary."""
    fake_llm.queue(CANARY)
    with served(web_settings(fake_llm)) as web:
        done(ndjson(web.client, "/api/chat", {"message": "What is the canary's name?"}))
        yield web


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _other_port(url: str) -> str:
    """Another port on the same loopback host: a different origin."""
    return f"http://127.0.0.1:{_port(url) + 1 if _port(url) < 65535 else 1024}"


def _refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in error(response), error(response)
    assert "\n" not in response.text


def _browser(url: str) -> httpx.Client:
    """A client that behaves like a browser: cookies, no bearer token, asks for JSON replies."""
    return httpx.Client(base_url=url, headers={"Accept": "application/json"}, timeout=60)


def test_cross_site_posts_are_refused_and_store_nothing(web: Served, fake_llm: FakeOpenAI) -> None:
    before = web.store.row_counts()
    requests = len(fake_llm.requests)
    attempt = web.store.row_counts()["attempts"]
    text = {"Content-Type": "text/plain"}
    chat = '{"model": "minetune/default", "messages": [{"role": "user", "content": "hi"}]}'
    feedback = f'{{"response_id": "mt-{attempt}", "stars": 1, "critique": "planted"}}'
    cases = [
        # text/plain from another site: the "simple request" that needs no preflight.
        ("/v1/chat/completions", chat, text | {"Origin": EVIL}),
        ("/v1/feedback", feedback, text | {"Origin": EVIL}),
        # another port on the same machine is another origin
        ("/v1/feedback", feedback, text | {"Origin": _other_port(web.base_url)}),
        ("/api/chat", '{"message": "hi"}', {"Content-Type": "application/json", "Origin": "http://localhost:1"}),
        # without Origin, the Referer decides; a sandboxed page sends Origin: null
        ("/v1/feedback", feedback, text | {"Referer": f"{EVIL}/page.html"}),
        ("/api/chat", '{"message": "hi"}', {"Content-Type": "application/json", "Origin": "null"}),
    ]
    for path, body, headers in cases:
        _refused(web.client.post(path, content=body, headers=headers), 403, "Cross-origin request refused")
    assert web.store.row_counts() == before
    assert len(fake_llm.requests) == requests


def test_json_apis_take_only_json_bodies(web: Served, fake_llm: FakeOpenAI) -> None:
    before = web.store.row_counts()
    attempt = web.store.row_counts()["attempts"]
    feedback = f'{{"response_id": "mt-{attempt}", "stars": 1}}'
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = web.client.post("/v1/feedback", content=feedback, headers={"Content-Type": media})
        _refused(response, 415, "Send the body as JSON")
    untyped = web.client.post("/v1/feedback", content=feedback)  # httpx sends no Content-Type here
    _refused(untyped, 415, "not no Content-Type")
    assert web.store.row_counts() == before
    # The same body as JSON, from a client that sends no Origin (curl, the openai SDK), works.
    as_json = {"Content-Type": "application/json"}
    assert web.client.post("/v1/feedback", content=feedback, headers=as_json).is_success
    assert web.store.row_counts()["feedback"] == before["feedback"] + 1


def test_form_posts_need_the_pages_csrf_token(web: Served) -> None:
    before = web.store.row_counts()
    own = {"Origin": web.base_url}
    with _browser(web.base_url) as browser:
        planted = {"text": "Planted."}
        _refused(browser.post("/rules/add", data=planted, headers={"Origin": EVIL}), 403, "Cross")
        _refused(browser.post("/rules/add", data=planted, headers=own), 403, "CSRF token")
        token = csrf_token(browser)
        forged = {"text": "Planted.", "csrf_token": "0" * 64}
        _refused(browser.post("/rules/add", data=forged, headers=own), 403, "CSRF token")
        # A cookie planted by another localhost app does not go with the page's token.
        with _browser(web.base_url) as other:
            _refused(other.post("/rules/add", data={"text": "Planted.", "csrf_token": token}), 403, "CSRF")
        # JSON to a form route is not a way around the token either.
        _refused(browser.post("/rules/add", json={"text": "Planted."}, headers=own), 415, "as a form")
        assert web.store.row_counts() == before
        added = browser.post("/rules/add", data={"text": "Be brief.", "csrf_token": token}, headers=own)
        assert added.status_code == 200, added.text
    assert [lesson.text for lesson in web.store.lessons()] == ["Be brief."]


def test_foreign_host_is_refused_even_for_reads(web: Served) -> None:
    port = _port(web.base_url)
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost@evil"):
        response = web.client.get("/api/dataset", headers={"Host": host})
        _refused(response, 400, "is not allowed")
        assert "Pumpernickel" not in response.text
    before = web.store.row_counts()
    posted = web.client.post("/api/chat", json={"message": "hi"}, headers={"Host": "evil.example"})
    _refused(posted, 400, "--allowed-host")
    assert web.store.row_counts() == before
    for host in (f"localhost:{port}", f"[::1]:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
        assert "Pumpernickel" in web.client.get("/api/dataset", headers={"Host": host}).text, host


def test_allowed_hosts_and_origins(fake_llm: FakeOpenAI) -> None:
    settings = web_settings(fake_llm)
    store = Store.open(settings)
    app = create_app(settings, allowed_hosts=["minetune.lan"], allowed_origins=["https://app.lan"])
    try:
        with serve_app(app) as url, _browser(url) as http:
            assert http.get("/api/dataset", headers={"Host": "minetune.lan:8000"}).status_code == 200
            assert http.get("/api/dataset", headers={"Host": "other.lan"}).status_code == 400
            # Preflights: answered for the allowed origin only.
            ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
            allowed = http.options("/v1/feedback", headers=ask | {"Origin": "https://app.lan"})
            assert allowed.status_code == 204
            assert allowed.headers["access-control-allow-origin"] == "https://app.lan"
            assert "credentials" not in str(allowed.headers).lower()
            for origin in (EVIL, "https://app.lan:8443", _other_port(url)):
                refused = http.options("/v1/feedback", headers=ask | {"Origin": origin})
                assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
            # The allowed origin may post JSON and read the reply; others may not post.
            before = store.row_counts()
            body = {"response_id": "mt-1", "stars": 5}
            reply = http.post("/v1/feedback", json=body, headers={"Origin": "https://app.lan"})
            assert reply.status_code == 404 and reply.headers["access-control-allow-origin"] == "https://app.lan"
            assert http.post("/v1/feedback", json=body, headers={"Origin": EVIL}).status_code == 403
            assert store.row_counts() == before
    finally:
        store.close()


def test_with_tokens_the_login_cookie_needs_same_origin_andcsrf_token(fake_llm: FakeOpenAI) -> None:
    with two_users() as web:
        token = issue_token(web.store_a.db, "alice")
        with _browser(web.base_url) as browser:
            login_csrf = csrf_token(browser, "/login")
            assert browser.post("/login", data={"token": token}).status_code == 403  # login CSRF
            logged_in = browser.post("/login", data={"token": token, "csrf_token": login_csrf})
            assert logged_in.status_code == 303 and browser.cookies.get("minetune_token")
            csrf = csrf_token(browser)
            before = web.store_a.row_counts()
            for origin in (_other_port(web.base_url), f"http://localhost:{_port(web.base_url)}", EVIL):
                planted = {"text": "Planted.", "csrf_token": csrf}
                _refused(browser.post("/rules/add", data=planted, headers={"Origin": origin}), 403, "Cross")
            _refused(browser.post("/rules/add", data={"text": "Planted."}), 403, "CSRF token")
            assert web.store_a.row_counts() == before
            own = {"Origin": web.base_url}
            mine = browser.post("/rules/add", data={"text": "Mine.", "csrf_token": csrf}, headers=own)
            assert mine.is_success, mine.text
        # Bearer-token clients need no CSRF token (a browser cannot send that header cross-site).
        assert web.b.post("/rules/add", data={"text": "Bob's."}).status_code == 200
        assert [lesson.text for lesson in web.store_a.lessons()] == ["Mine."]
        assert [lesson.text for lesson in web.store_b.lessons()] == ["Bob's."]


def test_api_docs_need_a_token_when_auth_is_on() -> None:
    with two_users() as web:
        for path in ("/openapi.json", "/api/docs"):
            assert web.anonymous.get(path).status_code == 401, path
        page = web.anonymous.get("/api/docs", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert "/v1/chat/completions" in web.a.get("/openapi.json").json()["paths"]
        assert "swagger" in web.a.get("/api/docs").text.lower()


def test_api_docs_without_auth_on_loopback(web: Served) -> None:
    assert "/api/chat" in web.client.get("/openapi.json").json()["paths"]


def test_no_auth_off_loopback_is_refused() -> None:
    with pytest.raises(MinetuneError, match="Refusing --no-auth on 0.0.0.0"):
        create_app(load_settings(), host="0.0.0.0", require_auth=False)
    result = subprocess.run(
        [sys.executable, "-m", "minetune.cli", "serve", "--host", "0.0.0.0", "--no-auth", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Refusing --no-auth on 0.0.0.0" in lines[0], result.stderr


def test_guards_for_a_bound_address_and_bad_names() -> None:
    guards = Guards.for_bind("192.168.1.5", ["minetune.lan"])
    assert {"192.168.1.5", "minetune.lan", "localhost", "::1"} <= guards.hosts
    assert "0.0.0.0" not in Guards.for_bind("0.0.0.0").hosts
    with pytest.raises(ConfigError, match="Not an origin"):
        Guards.for_bind("127.0.0.1", allowed_origins=["app.lan"])
    with pytest.raises(ConfigError, match="Not a host name"):
        Guards.for_bind("127.0.0.1", ["evil/x"])


def test_allowed_hosts_from_the_environment_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "config.toml").write_text('allowed_hosts = ["box.lan"]\n')
    assert load_settings().allowed_hosts == ("box.lan",)
    monkeypatch.setenv("MINETUNE_ALLOWED_ORIGINS", "https://a.lan, https://b.lan")
    assert load_settings().allowed_origins == ("https://a.lan", "https://b.lan")

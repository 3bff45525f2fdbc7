"""Two users with tokens on one server: the chat, dataset and metrics routes never let one read or
change the other's conversations, turns or attempts (404, rows unchanged); no token is a 401 for
JSON and a redirect to /login for pages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fakes import FakeOpenAI
from minetune.store import browse
from webchat import done, ndjson
from webusers import TwoUsers, error, two_users


def snapshot(web: TwoUsers) -> Any:
    """Everything of alice's that a route could touch, plus every table's row count."""
    turns = [
        (
            turn.id,
            turn.excluded,
            turn.attempts_to_5,
            [(a.id, a.response, [(f.kind, f.stars, f.critique) for f in a.feedback]) for a in turn.attempts],
        )
        for program in web.store_a.programs()
        for turn in browse.program_turns(web.store_a, program.name)
    ]
    return turns, web.store_a.row_counts()


@pytest.fixture
def fake_web(fake_llm: FakeOpenAI) -> Any:
    with two_users(fake=fake_llm) as web:
        yield web


def test_one_user_can_never_read_or_change_anothers_chat_data(
    database_url: str, fake_llm: FakeOpenAI
) -> None:
    with two_users(fake=fake_llm) as web:
        fake_llm.queue("Alice's secret answer.")
        first = done(ndjson(web.a, "/api/chat", {"message": "alice's private question"}))
        conv, attempt, turn = first["conversation_id"], first["attempt_id"], first["turn"]["id"]
        assert web.a.post(f"/api/attempts/{attempt}/rate", json={"stars": 3}).status_code == 200
        web.store_b.program()  # bob's own default program exists (it is created on first use)
        before = snapshot(web)
        requests_before = len(fake_llm.requests)

        attempts: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", f"/api/conversations/{conv}", None),
            ("GET", f"/?c={conv}", None),
            ("POST", f"/api/attempts/{attempt}/rate", {"stars": 1, "critique": "bob was here"}),
            ("POST", f"/api/attempts/{attempt}/retry", {"critique": "bob was here"}),
            ("GET", f"/api/attempts/{attempt}/why", None),
            ("POST", f"/api/turns/{turn}/edit", {"text": "bob's answer"}),
            ("POST", f"/api/turns/{turn}/exclude", {"excluded": True}),
            ("DELETE", f"/api/turns/{turn}", None),
        ]
        for method, path, body in attempts:
            response = web.b.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert "alice" not in response.text.lower() and "secret" not in response.text
        # Posting to alice's conversation from bob starts nothing and leaks nothing.
        sent = web.b.post("/api/chat", json={"message": "hi", "conversation_id": conv})
        assert sent.status_code == 404, sent.text
        assert snapshot(web) == before
        assert len(fake_llm.requests) == requests_before  # no retry ever reached the model

        # Bob's own views do not include alice's data.
        assert web.b.get("/api/conversations").json()["conversations"] == []
        assert web.b.get("/api/dataset").json()["turns"] == []
        for page in ("/", "/dataset", "/metrics"):
            text = web.b.get(page, headers={"Accept": "text/html"}).text
            assert "alice's private question" not in text and "secret answer" not in text, page
        bob_metrics = web.b.get("/api/metrics").json()
        assert bob_metrics["ratings"] == 0 and bob_metrics["usage"] == []
        # Alice still sees all of it.
        assert [c["id"] for c in web.a.get("/api/conversations").json()["conversations"]] == [conv]
        assert web.a.get("/api/metrics").json()["ratings"] == 1


def test_bob_cannot_reach_alices_program_or_conversation_through_his_own_session(fake_web: TwoUsers) -> None:
    fake_web.store_a.create_program("diary")
    done(ndjson(fake_web.a, "/api/chat", {"message": "dear diary", "program": "diary"}))
    fake_web.store_b.program()
    before = snapshot(fake_web)
    for path in (
        "/api/conversations?program=diary",
        "/api/dataset?program=diary",
        "/api/metrics?program=diary",
    ):
        response = fake_web.b.get(path)
        assert response.status_code == 404 and "No program named 'diary'" in error(response), path
    assert fake_web.b.post("/api/chat", json={"message": "hi", "program": "diary"}).status_code == 404
    assert fake_web.b.get("/?program=diary", headers={"Accept": "text/html"}).status_code == 404
    assert snapshot(fake_web) == before


ROUTES = [
    ("GET", "/api/programs", None),
    ("GET", "/api/conversations", None),
    ("GET", "/api/conversations/1", None),
    ("POST", "/api/chat", {"message": "hi"}),
    ("POST", "/api/attempts/1/rate", {"stars": 5}),
    ("POST", "/api/attempts/1/retry", {}),
    ("GET", "/api/attempts/1/why", None),
    ("GET", "/api/dataset", None),
    ("POST", "/api/turns/1/edit", {"text": "x"}),
    ("POST", "/api/turns/1/exclude", {"excluded": True}),
    ("DELETE", "/api/turns/1", None),
    ("GET", "/api/metrics", None),
]


def test_without_a_token_json_is_401_and_pages_redirect_to_login(fake_web: TwoUsers) -> None:
    done(ndjson(fake_web.a, "/api/chat", {"message": "alice's question"}))
    fake_web.store_b.program()
    before = snapshot(fake_web)
    for method, path, body in ROUTES:
        response = fake_web.anonymous.request(method, path, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert json.loads(response.text)["error"]["type"] == "authentication_error"
        bad = fake_web.anonymous.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and error(bad) == "Invalid token."
    for page in ("/", "/dataset", "/metrics", "/?c=1"):
        response = fake_web.anonymous.get(page, headers={"Accept": "text/html"}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=/"), page
    assert snapshot(fake_web) == before

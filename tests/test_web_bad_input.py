"""Bad input to the chat, dataset and metrics routes: a 4xx with a clear message, and nothing
stored changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fakes import FakeOpenAI
from minetune.loop import MAX_MESSAGE_CHARS
from minetune.review import MAX_EDIT_CHARS
from minetune.server.chat import MAX_CRITIQUE_CHARS
from webchat import done, ndjson, web_settings
from webusers import Served, error, served


@pytest.fixture
def web(fake_llm: FakeOpenAI) -> Iterator[tuple[Served, dict[str, Any]]]:
    fake_llm.queue("An answer.")
    with served(web_settings(fake_llm)) as web:
        first = done(ndjson(web.client, "/api/chat", {"message": "A question"}))
        yield web, first


def unchanged(web: Served, before: dict[str, int], response: Any, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert message in error(response), error(response)
    assert web.store.row_counts() == before


@pytest.mark.parametrize(
    ("stars", "status", "message"),
    [
        (0, 400, "Stars must be a whole number from 1 to 5, got '0'"),
        (6, 400, "Stars must be a whole number from 1 to 5, got '6'"),
        ("x", 400, "Stars must be a whole number from 1 to 5, got 'x'"),
        ("", 400, "Stars must be a whole number from 1 to 5"),
        (2.5, 422, "stars"),
        (None, 422, "stars"),
    ],
)
def test_invalid_stars_are_refused(
    web: tuple[Served, dict[str, Any]], stars: Any, status: int, message: str
) -> None:
    served_app, first = web
    before = served_app.store.row_counts()
    response = served_app.client.post(
        f"/api/attempts/{first['attempt_id']}/rate", json={"stars": stars, "critique": "meh"}
    )
    unchanged(served_app, before, response, status, message)


def test_unknown_ids_are_404_for_every_route(web: tuple[Served, dict[str, Any]]) -> None:
    served_app, _first = web
    client = served_app.client
    before = served_app.store.row_counts()
    cases = [
        ("GET", "/api/conversations/999", None, "No conversation with id 999."),
        ("POST", "/api/chat", {"message": "hi", "conversation_id": 999}, "No conversation with id 999."),
        ("POST", "/api/attempts/999/rate", {"stars": 5}, "No attempt with id 999."),
        ("POST", "/api/attempts/999/retry", {}, "No attempt with id 999."),
        ("GET", "/api/attempts/999/why", None, "No attempt with id 999."),
        ("POST", "/api/turns/999/edit", {"text": "x"}, "No turn with id 999."),
        ("POST", "/api/turns/999/exclude", {"excluded": True}, "No turn with id 999."),
        ("DELETE", "/api/turns/999", None, "No turn with id 999."),
        ("GET", "/api/conversations?program=nope", None, "No program named 'nope'"),
        ("POST", "/api/chat", {"message": "hi", "program": "nope"}, "No program named 'nope'"),
        ("GET", "/api/dataset?program=nope", None, "No program named 'nope'"),
        ("GET", "/api/metrics?program=nope", None, "No program named 'nope'"),
        ("GET", "/?c=999", None, "No conversation with id 999."),
        ("GET", "/metrics?program=nope", None, "No program named 'nope'"),
    ]
    for method, path, body, message in cases:
        response = client.request(method, path, json=body)
        unchanged(served_app, before, response, 404, message)
    bad_id = client.post("/api/attempts/abc/rate", json={"stars": 5})
    unchanged(served_app, before, bad_id, 422, "attempt_id")


def test_oversize_and_empty_messages_are_refused(
    web: tuple[Served, dict[str, Any]], fake_llm: FakeOpenAI
) -> None:
    served_app, first = web
    client = served_app.client
    before = served_app.store.row_counts()
    requests = len(fake_llm.requests)
    too_long = "x" * (MAX_MESSAGE_CHARS + 1)
    unchanged(
        served_app, before, client.post("/api/chat", json={"message": too_long}), 400, "the limit is 200,000"
    )
    huge = client.post("/api/chat", json={"message": "x" * (5 * 1024 * 1024)})
    unchanged(served_app, before, huge, 413, "Request body too large")
    unchanged(
        served_app, before, client.post("/api/chat", json={"message": "   "}), 400, "The message is empty"
    )
    unchanged(served_app, before, client.post("/api/chat", json={}), 422, "message")
    as_json = {"Content-Type": "application/json"}
    not_json = client.post("/api/chat", content=b"not json", headers=as_json)
    unchanged(served_app, before, not_json, 422, "Invalid request")
    long_critique = "c" * (MAX_CRITIQUE_CHARS + 1)
    rate = client.post(
        f"/api/attempts/{first['attempt_id']}/rate", json={"stars": 2, "critique": long_critique}
    )
    unchanged(served_app, before, rate, 400, "The critique is 20,001 characters")
    retry = client.post(f"/api/attempts/{first['attempt_id']}/retry", json={"critique": long_critique})
    unchanged(served_app, before, retry, 400, "The critique is 20,001 characters")
    assert len(fake_llm.requests) == requests  # nothing reached the model


def test_bad_edits_and_filters_are_refused(web: tuple[Served, dict[str, Any]]) -> None:
    served_app, first = web
    client = served_app.client
    turn = first["turn"]["id"]
    before = served_app.store.row_counts()
    edit = f"/api/turns/{turn}/edit"
    unchanged(
        served_app, before, client.post(edit, json={"text": "  "}), 400, "An edited answer needs some text."
    )
    too_long = client.post(edit, json={"text": "e" * (MAX_EDIT_CHARS + 1)})
    unchanged(served_app, before, too_long, 400, "the limit is 200,000")
    unchanged(served_app, before, client.post(edit, json={}), 422, "text")
    exclude = client.post(f"/api/turns/{turn}/exclude", json={"excluded": "maybe"})
    unchanged(served_app, before, exclude, 422, "excluded")
    filters: list[tuple[dict[str, str | int], str]] = [
        ({"stars": 9}, "stars must be a whole number from 1 to 5, got 9"),
        ({"min_stars": "abc"}, "min_stars must be a whole number from 1 to 5, got 'abc'"),
        ({"min_stars": 4, "max_stars": 2}, "min_stars (4) is greater than max_stars (2)"),
        ({"stars": 3, "min_stars": 2}, "Give either stars or min_stars/max_stars, not both."),
    ]
    for query, message in filters:
        unchanged(served_app, before, client.get("/api/dataset", params=query), 400, message)
        page = client.get("/dataset", params=query, headers={"Accept": "text/html"})
        unchanged(served_app, before, page, 400, message)
    assert served_app.store.turn(turn).excluded is False

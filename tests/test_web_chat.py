"""The chat page and its JSON API over real HTTP on loopback: streamed answers, ratings, retries
with the critique folded in, praise, background learning, "why this answer", and no model."""

from __future__ import annotations

import json
import threading

import pytest

from fakes import FakeOpenAI
from minetune.learn.reoptimize import Learner
from webchat import done, ndjson, web_settings, word_embedder
from webusers import error, rows_unchanged, served


def test_an_answer_streams_in_pieces_and_is_stored(database_url: str, fake_llm: FakeOpenAI) -> None:
    answer = "Cats sleep for about fifteen hours a day, mostly in short naps through the afternoon."
    fake_llm.queue(answer, "Second answer.")
    with served(web_settings(fake_llm)) as web:
        events = ndjson(web.client, "/api/chat", {"message": "How long do cats sleep?"})
        deltas = [e["text"] for e in events if e["type"] == "delta"]
        assert len(deltas) > 1 and "".join(deltas) == answer
        result = done(events)
        assert fake_llm.last["stream"] is True
        turn = web.store.turn(result["turn"]["id"])
        assert turn.user_message == "How long do cats sleep?" and turn.attempts[0].response == answer
        assert result["turn"]["attempts"][0]["text"] == answer and result["learning"] == "off"

        # The conversation continues with its history, and is listed and readable.
        follow = done(
            ndjson(
                web.client,
                "/api/chat",
                {"message": "And dogs?", "conversation_id": result["conversation_id"]},
            )
        )
        assert follow["conversation_id"] == result["conversation_id"]
        sent = [m["content"] for m in fake_llm.last["messages"]]
        assert "How long do cats sleep?" in sent and answer in sent and sent[-1] == "And dogs?"
        listed = web.client.get("/api/conversations").json()["conversations"]
        assert [(c["id"], c["title"], c["turns"]) for c in listed] == [
            (result["conversation_id"], "How long do cats sleep?", 2)
        ]
        thread = web.client.get(f"/api/conversations/{result['conversation_id']}").json()
        assert [t["user_message"] for t in thread["turns"]] == ["How long do cats sleep?", "And dogs?"]

        page = web.client.get(f"/?c={result['conversation_id']}", headers={"Accept": "text/html"})
        assert page.status_code == 200 and 'src="/static/chat.js"' in page.text
        assert "How long do cats sleep?" in page.text  # in the conversation list
        assert 'src="/static/api.js"' in page.text  # chat.js uses its helpers, so it comes first
        assert page.text.index("/static/api.js") < page.text.index("/static/chat.js")
        assert all(web.client.get(f"/static/{js}").status_code == 200 for js in ("api.js", "chat.js"))


def test_rate_with_critique_then_retry_folds_it_in_then_five_stars(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("A very long rambling answer about tea.", "Green tea.")
    with served(web_settings(fake_llm)) as web:
        first = done(ndjson(web.client, "/api/chat", {"message": "Which tea is healthiest?"}))
        attempt_id = first["attempt_id"]
        rated = web.client.post(
            f"/api/attempts/{attempt_id}/rate", json={"stars": 2, "critique": "too long, one line"}
        )
        assert rated.status_code == 200 and rated.json()["attempt"]["stars"] == 2
        assert rated.json()["attempt"]["critiques"] == ["too long, one line"]

        retry = done(ndjson(web.client, f"/api/attempts/{attempt_id}/retry", {}))
        retry_text = json.dumps(fake_llm.last["messages"])
        assert "too long, one line" in retry_text and "rated 2/5" in retry_text
        assert [a["number"] for a in retry["turn"]["attempts"]] == [1, 2]

        five = web.client.post(f"/api/attempts/{retry['attempt_id']}/rate", json={"stars": "5"})
        assert five.status_code == 200 and five.json()["stars"] == 5
        turn = web.store.turn(first["turn"]["id"])
        assert turn.attempts_to_5 == 2
        assert [(f.kind, f.stars, f.critique) for f in turn.attempts[0].feedback] == [
            ("explicit", 2, "too long, one line")
        ]


def test_a_critique_given_with_retry_is_recorded_on_that_answer(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("Paris is the capital of France, a city of...", "Paris.")
    with served(web_settings(fake_llm)) as web:
        first = done(ndjson(web.client, "/api/chat", {"message": "Capital of France?"}))
        ndjson(web.client, f"/api/attempts/{first['attempt_id']}/retry", {"critique": "just the name"})
        assert "just the name" in json.dumps(fake_llm.last["messages"])
        feedback = web.store.attempt(first["attempt_id"]).feedback
        assert [(f.kind, f.stars, f.critique) for f in feedback] == [("explicit", None, "just the name")]


def test_praise_in_the_next_message_marks_the_previous_answer_five_stars(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("Use a pinch of salt.", "You're welcome!")
    with word_embedder() as embedder, served(web_settings(fake_llm, embedder=embedder)) as web:
        first = done(ndjson(web.client, "/api/chat", {"message": "How do I season pasta water?"}))
        second = done(
            ndjson(
                web.client,
                "/api/chat",
                {"message": "perfect, thanks!", "conversation_id": first["conversation_id"]},
            )
        )
        praise = second["praise"]
        assert praise["phrase"] and praise["attempt"]["id"] == first["attempt_id"]
        assert praise["attempt"]["stars"] == 5 and praise["attempt"]["praised"] is True
        stored = web.store.attempt(first["attempt_id"]).feedback
        assert [(f.kind, f.stars, f.text) for f in stored] == [("praise", 5, "perfect, thanks!")]
        # A plain follow-up is not praise.
        third = done(
            ndjson(
                web.client,
                "/api/chat",
                {"message": "How much salt?", "conversation_id": first["conversation_id"]},
            )
        )
        assert third["praise"] is None


def test_learning_runs_after_the_rating_response_not_before(
    fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rating returns while learning is held back; the lesson appears once it is let go."""
    release, learned = threading.Event(), threading.Event()
    original = Learner.on_feedback

    def held_back(self: Learner, feedback_id: int, model: object = None) -> object:
        assert release.wait(30), "the test never released learning"
        try:
            return original(self, feedback_id, model)  # type: ignore[arg-type]
        finally:
            learned.set()

    monkeypatch.setattr(Learner, "on_feedback", held_back)
    fake_llm.queue("A long answer about knots.")
    fake_llm.reflection_replies.append('{"rule": "Answer in one sentence.", "supersedes": []}')
    with served(web_settings(fake_llm, reoptimize=True)) as web:
        first = done(ndjson(web.client, "/api/chat", {"message": "How do I tie a bowline?"}))
        rated = web.client.post(
            f"/api/attempts/{first['attempt_id']}/rate", json={"stars": 2, "critique": "too long"}
        )
        assert rated.status_code == 200 and rated.json()["learning"] == "queued"
        assert not learned.is_set() and web.store.lessons() == []  # the response did not wait
        release.set()
        assert learned.wait(30)
        assert [lesson.text for lesson in web.store.lessons()] == ["Answer in one sentence."]
        assert web.store.active_version().number == 2
        assert len(fake_llm.reflection_requests) == 1


def test_why_this_answer_shows_version_rules_demos_and_adapter(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("Boil it for seven minutes.", "About seven minutes, then cold water.")
    with word_embedder() as embedder, served(web_settings(fake_llm, embedder=embedder)) as web:
        first = done(ndjson(web.client, "/api/chat", {"message": "How long do I boil an egg?"}))
        web.client.post(f"/api/attempts/{first['attempt_id']}/rate", json={"stars": 5})
        web.store.change_lessons("default", add=[{"text": "Be brief."}], note="added a rule")

        second = done(ndjson(web.client, "/api/chat", {"message": "How long do I boil an egg for salad?"}))
        why = web.client.get(f"/api/attempts/{second['attempt_id']}/why").json()
        assert why["version"]["number"] == 2 and why["rules"] == ["Be brief."]
        assert [(d["attempt_id"], d["user"], d["response"], d["stars"]) for d in why["demos"]] == [
            (first["attempt_id"], "How long do I boil an egg?", "Boil it for seven minutes.", 5)
        ]
        assert web.store.attempt(second["attempt_id"]).demo_attempt_ids == [first["attempt_id"]]
        assert "Be brief." in why["system_prompt"] and "Boil it for seven minutes." in why["system_prompt"]
        assert why["adapter"] is None and why["model"].startswith("openai-compatible:fake@")

        earlier = web.client.get(f"/api/attempts/{first['attempt_id']}/why").json()
        assert earlier["version"]["number"] == 1 and earlier["rules"] == [] and earlier["demos"] == []


def test_without_a_model_the_chat_page_says_so_and_other_pages_work() -> None:
    with served(web_settings(None)) as web:
        page = web.client.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert 'id="no-model"' in page.text and 'href="/setup"' in page.text
        assert 'id="message" name="message" rows="3" disabled' in page.text
        refused = web.client.post("/api/chat", json={"message": "hello?"})
        assert refused.status_code == 503 and "No model configured" in error(refused)
        assert web.store.stats()["turns"] == 0
        for path in ("/dataset", "/metrics", "/setup"):
            assert web.client.get(path, headers={"Accept": "text/html"}).status_code == 200, path


def test_the_retry_limit_is_a_clear_error_and_stores_nothing(fake_llm: FakeOpenAI) -> None:
    with served(web_settings(fake_llm, retry_limit=2)) as web:
        first = done(ndjson(web.client, "/api/chat", {"message": "Tell me a joke"}))
        second = done(ndjson(web.client, f"/api/attempts/{first['attempt_id']}/retry", {}))
        retry = f"/api/attempts/{second['attempt_id']}/retry"
        with rows_unchanged(web.store):
            refused = web.client.post(retry, json={"critique": "funnier"})
        assert refused.status_code == 400 and "retry limit" in error(refused)


def test_a_model_failure_mid_request_is_reported_and_stores_nothing(fake_llm: FakeOpenAI) -> None:
    with served(web_settings(fake_llm)) as web:
        web.store.program()  # the default program exists (it is created on first use)
        fake_llm.fail_next(500, "upstream exploded")
        with rows_unchanged(web.store):
            refused = web.client.post("/api/chat", json={"message": "hello"})
        assert refused.status_code == 502 and error(refused)

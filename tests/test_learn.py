"""Prompt-level learning in the loop: demos chosen by rating, lessons from critiques."""

from __future__ import annotations

import json

import pytest

from fakes import FakeOpenAI
from minetune import Session
from minetune.app.forget import forget
from minetune.config import load_settings
from minetune.learn.demos import Candidate, DemoIndex, accepted_candidates
from minetune.learn.lessons import ReflectionError, parse_reflection
from minetune.store import Store


def _session(fake: FakeOpenAI, **overrides: object) -> Session:
    settings = load_settings(**overrides)
    return Session(Store.open(settings), settings, model=f"openai-compatible:fake@{fake.base_url}")


def _system(body: dict) -> str:
    return body["messages"][0]["content"]


def test_five_star_answer_becomes_a_demo_for_a_similar_question(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("Your cat is called Winston.", "I think it's Garfield.", "Winston!")
    with _session(fake_llm) as chat:
        good = chat.send("What's my cat's name?")
        chat.rate(5)
        chat.send("Who is my favourite cat?")  # same conversation: its turns are history, not demos
        chat.rate(1)
    with _session(fake_llm) as chat:  # a new session and conversation
        reply = chat.send("What is the name of my cat?")
        system = _system(fake_llm.last)
        assert "User: What's my cat's name?\nAssistant: Your cat is called Winston." in system
        assert "Garfield" not in system  # a 1-star answer never becomes a demo
        attempt = chat.store.attempt(reply.attempt_id)
        assert attempt.demo_attempt_ids == [good.attempt_id]
        assert chat.store.turn_embeddings([good.turn_id], chat.settings.embedder)  # embedded once, stored


def test_unrelated_questions_get_no_demos(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm) as chat:
        chat.send("What's my cat's name?")
        chat.rate(5)
    with _session(fake_llm) as chat:
        chat.send("Explain how TCP congestion control works")
        assert "Examples of answers" not in _system(fake_llm.last)


def test_forgetting_the_source_turn_removes_the_demo(fake_llm: FakeOpenAI) -> None:
    fake_llm.queue("Winston.")
    with _session(fake_llm) as chat:
        good = chat.send("What's my cat's name?")
        chat.rate(5)
    with _session(fake_llm) as chat:
        chat.send("What is the name of my cat?")
        assert "Winston." in _system(fake_llm.last)
        forget(chat.store, chat.settings, turns=[good.turn_id])
        chat.send("What is my cat called?")
        assert "Winston." not in _system(fake_llm.last)
    # Deleted by another process while this one's index still holds it: still not shown.
    fake_llm.queue("Tom.")
    with _session(fake_llm) as chat:
        other = chat.send("What's my dog's name?")
        chat.rate(5)
        chat.new_conversation()
        chat.send("Name of my dog?")
        assert "Tom." in _system(fake_llm.last)
        Store.open(load_settings()).delete_turn(other.turn_id)
        chat.retry()
        assert "Tom." not in _system(fake_llm.last)


def test_the_label_is_the_rated_response_and_best_attempt_wins() -> None:
    rows = [
        (1, 10, 1, "q", "first try", "explicit", 2),
        (2, 10, 1, "q", "second try", "explicit", 5),
        (3, 11, 1, "p", "praised", "praise", 5),
        (4, 12, 1, "r", "rated then praised", "explicit", 2),
        (4, 12, 1, "r", "rated then praised", "praise", None),
    ]
    chosen = accepted_candidates(rows, min_stars=4)
    assert [(c.attempt_id, c.response, c.stars) for c in chosen] == [(2, "second try", 5), (3, "praised", 5)]


def test_mmr_prefers_diverse_demos_within_budget() -> None:
    import numpy as np

    index = DemoIndex()
    a = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    near_a = np.array([0.99, 0.141, 0.0], dtype=np.float32)
    b = np.array([0.6, 0.0, 0.8], dtype=np.float32)
    for turn, vec, stars in ((1, a, 5), (2, near_a, 5), (3, b, 4)):
        index.upsert(Candidate(turn, turn, 1, f"u{turn}", f"r{turn}", stars), vec)
    # stars / 5 weights (credit off), so only similarity and diversity decide (recency is tested
    # in tests/test_demo_drift.py)
    policy = {"k": 2, "min_similarity": 0.0, "mmr_lambda": 0.3, "token_budget": 100, "credit": False}
    chosen = index.select(a, policy)
    assert [d.turn_id for d in chosen] == [1, 3]  # the near-duplicate loses to the diverse one
    assert [d.turn_id for d in index.select(a, policy | {"mmr_lambda": 1.0})] == [1, 2]
    assert index.select(a, policy | {"token_budget": 1}) == []  # each demo costs 2 tokens
    index.remove_turn(1)
    assert [d.turn_id for d in index.select(a, policy)][0] == 2


def test_critique_becomes_a_rule_in_the_next_request(fake_llm: FakeOpenAI) -> None:
    fake_llm.reflection_replies.append(
        json.dumps({"rule": "Keep answers to two sentences.", "supersedes": []})
    )
    with _session(fake_llm) as chat:
        chat.send("Tell me about the moon")
        before = chat.version.number
        chat.rate(2, "too long, keep it to two sentences")
        assert chat.last_learning is not None and chat.last_learning.rule == "Keep answers to two sentences."
        reflection = fake_llm.reflection_requests[0]["messages"][1]["content"]
        assert "too long, keep it to two sentences" in reflection and "Tell me about the moon" in reflection
        lessons = chat.store.lessons()
        assert [(lesson.text, lesson.origin) for lesson in lessons] == [
            ("Keep answers to two sentences.", "reflection")
        ]
        feedback = chat.store.feedback(lessons[0].feedback_id)
        assert feedback.critique == "too long, keep it to two sentences"
        assert chat.version.number == before + 1
        assert chat.version.sources["feedback_id"] == feedback.id
        chat.send("Tell me about the sun")
        assert "- Keep answers to two sentences." in _system(fake_llm.last)


def test_contradicting_critique_supersedes_the_old_rule(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm) as chat:
        chat.send("Describe Paris")
        fake_llm.reflection_replies.append('{"rule": "Answer in one sentence.", "supersedes": []}')
        chat.rate(2, "too long")
        old = chat.store.lessons()[0]
        chat.send("Describe Rome")
        fake_llm.reflection_replies.append(
            json.dumps({"rule": "Give detailed answers.", "supersedes": [old.id]})
        )
        chat.rate(2, "too short, I want details now")
        assert (
            f"[{old.id}] Answer in one sentence." in fake_llm.reflection_requests[1]["messages"][1]["content"]
        )
        every = {lesson.text: lesson for lesson in chat.store.lessons(include_inactive=True)}
        assert every["Answer in one sentence."].status == "superseded"
        assert every["Answer in one sentence."].superseded_by_id == every["Give detailed answers."].id
        chat.send("Describe Oslo")
        system = _system(fake_llm.last)
        assert "Give detailed answers." in system and "Answer in one sentence." not in system


@pytest.mark.parametrize(
    "reply", ["not json at all", '{"rule": 42}', '{"nope": 1}', '{"rule": "' + "x" * 300 + '"}']
)
def test_bad_reflection_keeps_the_rating_and_the_version(fake_llm: FakeOpenAI, reply: str) -> None:
    with _session(fake_llm) as chat:
        chat.send("Hello")
        version = chat.version.id
        fake_llm.reflection_replies.append(reply)
        chat.rate(3, "be warmer")
        assert chat.last_learning is not None and chat.last_learning.warnings
        assert chat.version.id == version
        assert chat.store.stats()["ratings"]["3"] == 1
        assert chat.store.lessons() == []


def test_reflection_failure_over_http_is_a_warning(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm, reflection_model="openai-compatible:x@http://127.0.0.1:9/v1") as chat:
        chat.send("Hello")
        chat.rate(2, "too long")
        assert chat.last_learning is not None
        assert "No lesson learned" in chat.last_learning.warnings[0]
        assert chat.store.stats()["ratings"]["2"] == 1


def test_parse_reflection_ignores_unknown_ids() -> None:
    assert parse_reflection('Sure! {"rule": "Be brief.", "supersedes": [1, 99]}', {1}).supersedes == [1]
    with pytest.raises(ReflectionError):
        parse_reflection('{"rule": "x", "supersedes": "1"}', set())


def test_reoptimize_can_be_turned_off(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm, reoptimize=False) as chat:
        chat.send("Hello")
        chat.rate(2, "too long")
        assert chat.last_learning is None and fake_llm.reflection_requests == []


def test_with_reoptimize_off_new_ratings_leave_the_prompt_unchanged_until_optimize(
    fake_llm: FakeOpenAI,
) -> None:
    from minetune.app.exchange import refresh_demos

    fake_llm.queue("Your cat is called Winston.")
    with _session(fake_llm, reoptimize=False) as chat:
        chat.send("What's my cat's name?")
        chat.rate(5)  # an accepted answer that would be a demo with re-optimization on
        before = chat.version.number
        chat.new_conversation()
        chat.send("What is the name of my cat?")
        frozen = fake_llm.last["messages"]
        chat.new_conversation()
        chat.send("What is the name of my cat?")  # again, after more time and a fresh index
        assert fake_llm.last["messages"] == frozen and "Winston" not in _system(fake_llm.last)
        assert chat.version.number == before
        # `minetune optimize` applies what was learned, explicitly, as a new version.
        _, version = refresh_demos(chat.store, chat.settings, chat.program)
        assert version is not None and chat.version.number == before + 1
        chat.new_conversation()
        chat.send("What is the name of my cat?")
        assert "User: What's my cat's name?\nAssistant: Your cat is called Winston." in _system(fake_llm.last)
    with _session(fake_llm, reoptimize=False) as chat:  # another process: the same frozen prompt
        chat.send("What is the name of my cat?")
        assert "Winston" in _system(fake_llm.last)


def test_judge_learns_ratings_and_picks_best_of_n(fake_llm: FakeOpenAI) -> None:
    short = ["Paris.", "Four.", "Blue.", "Yes.", "Tokyo.", "Seven.", "Green.", "No."]
    long = [
        "Well, that is a long story that begins many centuries ago with a great deal of history, "
        "context and nuance that I will now explain at considerable length, paragraph after paragraph.",
        "There are many perspectives to consider here, and before answering I would like to walk "
        "through each of them carefully, one by one, with several examples and lengthy caveats.",
    ]
    questions = [
        "Capital of France?",
        "Two plus two?",
        "Colour of the sky?",
        "Is water wet?",
        "Capital of Japan?",
        "Three plus four?",
        "Colour of grass?",
        "Is fire cold?",
    ]
    with _session(fake_llm) as chat:
        assert "too little data" in chat.learner.judge_report().summary()
        for i, question in enumerate(questions):
            fake_llm.queue(short[i])
            chat.send(question)
            chat.rate(5)
            fake_llm.queue(long[i % 2])
            chat.retry()
            chat.rate(1)
        report = chat.learner.judge_report()
        assert report.n_ratings == 16 and report.pairwise_accuracy is not None
        assert "Spearman" in report.summary()
        # re-rating an answer replaces its old rating instead of adding a second one
        chat.rate(2)
        assert chat.learner.judge().n_ratings == 16
        chat.new_conversation()
        fake_llm.queue(long[0], "Rome.", long[1])
        reply = chat.send("Capital of Italy?", best_of=3)
        assert reply.text == "Rome."
        assert reply.note is not None and "picked sample 2" in reply.note and "Spearman" in reply.note
        assert len(fake_llm.requests) == 16 + 3


def test_best_of_n_without_enough_ratings_says_so(fake_llm: FakeOpenAI) -> None:
    with _session(fake_llm) as chat:
        fake_llm.queue("a", "b")
        reply = chat.send("hi", best_of=2)
        assert reply.text == "a" and reply.note is not None and "judge not used" in reply.note

"""Concurrent writers: 8 threads × 100 mixed operations (send, rate, retry, praise, forget) on one
store. No operation may fail, nothing acknowledged may be lost, and numbering stays gap-free."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from fakes import FakeOpenAI
from minetune import Session
from minetune.app.forget import forget
from minetune.config import load_settings
from minetune.store import Store
from minetune.store.schema import Attempt, Conversation, Feedback, ProgramVersion, Turn
from webchat import fake_spec, word_embedder

THREADS = 8
OPERATIONS = 100


@pytest.fixture(autouse=True)
def words() -> Iterator[str]:
    with word_embedder() as name:
        yield name


@dataclass
class Ledger:
    """What one thread was told was stored, and what it forgot."""

    attempts: set[int] = field(default_factory=set)
    feedback: dict[int, int] = field(default_factory=dict)  # feedback count per attempt
    forgotten_turns: set[int] = field(default_factory=set)
    turns: dict[int, set[int]] = field(default_factory=dict)  # turn -> its attempts
    errors: list[BaseException] = field(default_factory=list)


def _worker(session: Session, seed: int, ledger: Ledger) -> None:
    rng = random.Random(seed)
    try:
        for step in range(OPERATIONS):
            op = rng.choice(["send", "send", "rate", "rate", "retry", "praise", "forget"])
            last = session.last
            if op == "send" or last is None:
                if rng.random() < 0.3:
                    session.new_conversation()
                response = session.send(f"thread {seed} question {step} about cats and dogs")
            elif op == "rate":
                critique = "be brief" if rng.random() < 0.3 else None
                session.rate(rng.randint(1, 5), critique)
                ledger.feedback[last.attempt_id] = ledger.feedback.get(last.attempt_id, 0) + 1
                continue
            elif op == "retry":
                response = session.retry()
            elif op == "praise":
                response = session.send("Perfect, thanks!")
                assert session.last_praise, "the praise step must record praise"
                if session.last_praise:
                    ledger.feedback[last.attempt_id] = ledger.feedback.get(last.attempt_id, 0) + 1
            else:  # forget one of this thread's earlier turns, never the one it is on
                candidates = sorted(set(ledger.turns) - ledger.forgotten_turns - {last.turn_id})
                if not candidates:
                    continue
                turn_id = rng.choice(candidates)
                forget(session.store, session.settings, turns=[turn_id])
                ledger.forgotten_turns.add(turn_id)
                continue
            ledger.attempts.add(response.attempt_id)
            ledger.turns.setdefault(response.turn_id, set()).add(response.attempt_id)
    except BaseException as exc:  # reported by the test, with the thread that raised it
        ledger.errors.append(exc)


def test_eight_threads_of_mixed_operations_lose_nothing_and_number_in_order(
    fake_llm: FakeOpenAI, database_url: str
) -> None:
    fake_llm.reflection_default = '{"rule": "Be brief.", "supersedes": []}'
    settings = load_settings(
        database_url=database_url, model=fake_spec(fake_llm), embedder="test-words", retry_limit=1000
    )
    store = Store.open(settings)
    sessions = [Session(store, settings) for _ in range(THREADS)]
    ledgers = [Ledger() for _ in range(THREADS)]
    threads = [
        threading.Thread(target=_worker, args=(session, seed, ledger))
        for seed, (session, ledger) in enumerate(zip(sessions, ledgers, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    assert [repr(e) for ledger in ledgers for e in ledger.errors] == []

    with store.db.transaction() as s:
        attempts = {a.id: a for a in s.scalars(select(Attempt))}
        turns = {t.id: t for t in s.scalars(select(Turn))}
        feedback = list(s.scalars(select(Feedback)))
        conversations = set(s.scalars(select(Conversation.id)))
        versions = sorted(s.scalars(select(ProgramVersion.number)))
    forgotten = set().union(*(ledger.forgotten_turns for ledger in ledgers))
    kept_attempts = {
        a for ledger in ledgers for t, ids in ledger.turns.items() if t not in forgotten for a in ids
    }
    # Nothing acknowledged is lost; nothing forgotten survives.
    assert kept_attempts <= set(attempts)
    assert not forgotten & set(turns)
    assert set(attempts) == kept_attempts
    expected_feedback = {
        attempt: count
        for ledger in ledgers
        for attempt, count in ledger.feedback.items()
        if attempt in kept_attempts
    }
    stored_feedback: dict[int, int] = {}
    for fb in feedback:
        stored_feedback[fb.attempt_id] = stored_feedback.get(fb.attempt_id, 0) + 1
    assert stored_feedback == expected_feedback
    # Attempt numbers run 1..n in every turn; turn indexes are unique and increasing per conversation.
    by_turn: dict[int, list[int]] = {}
    for attempt in attempts.values():
        by_turn.setdefault(attempt.turn_id, []).append(attempt.number)
    assert all(sorted(numbers) == list(range(1, len(numbers) + 1)) for numbers in by_turn.values())
    by_conversation: dict[int, list[int]] = {}
    for turn in turns.values():
        by_conversation.setdefault(turn.conversation_id, []).append(turn.index)
    assert all(len(set(indexes)) == len(indexes) for indexes in by_conversation.values())
    assert set(by_conversation) <= conversations
    # Each critique published a version: version numbers run 1..n with no gaps or repeats.
    assert versions == list(range(1, len(versions) + 1)) and len(versions) > 1
    store.close()


def test_first_use_by_many_threads_at_once_creates_one_user_and_one_default_program(
    database_url: str,
) -> None:
    settings = load_settings(database_url=database_url)
    first = Store.open(settings)
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def first_request() -> None:
        try:
            barrier.wait(10)
            Store(first.db, "newcomer").program()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_request) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [repr(e) for e in errors] == []
    programs = Store(first.db, "newcomer").programs()
    assert [(p.name, p.active_version_id is not None) for p in programs] == [("default", True)]
    first.close()

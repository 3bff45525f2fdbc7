"""Drift-aware demo selection: a demo's weight follows how the answers shown it were rated.

A taste-change scenario through the real Session with ratings only (no critiques), against a
steerable stand-in on the loopback fake: it imitates the style of the first demo in its prompt
most of the time and otherwise picks a style at random (seeded). The simulated user first likes
formal answers, then casual ones.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

import pytest

from fakes import FakeOpenAI
from minetune import Session
from minetune.app.forget import forget
from minetune.config import load_settings
from minetune.learn import reoptimize
from minetune.learn.demos import Candidate, DemoIndex, DemoStats, credit_of, posterior_weight
from minetune.store import Store

FORMAL, CASUAL = "Formally:", "Casually:"
WORDING = {  # a style shows in many words, as it does in real answers
    FORMAL: "I would respectfully recommend a regular watering schedule, as is customary.",
    CASUAL: "hey, just splash some water on it whenever the soil feels dry, no biggie!",
}
PLANTS = ["basil", "tomato plant", "fern", "orchid", "cactus", "rose bush", "lemon tree", "mint"]
ASKS = ["How often should I water my {p}?", "How much water does my {p} need?"]


@pytest.fixture(autouse=True)
def fresh_indexes() -> Iterator[None]:
    """Each PostgreSQL test reuses the same URL with a fresh schema: start with no cached index."""
    with reoptimize._LOCK:
        reoptimize._INDEXES.clear()
    yield
    with reoptimize._LOCK:
        reoptimize._INDEXES.clear()


def steerable(seed: int, imitate: float = 0.85) -> Any:
    """A model that answers in the style of the first demo shown (with probability ``imitate``),
    else in a random style."""
    rng = random.Random(seed)

    def respond(body: dict[str, Any]) -> str:
        system = str(body["messages"][0]["content"])
        shown = re.findall(r"^Assistant: (\w+:)", system, flags=re.MULTILINE)
        style = shown[0] if shown and rng.random() < imitate else rng.choice([FORMAL, CASUAL])
        return f"{style} {WORDING[style]}"

    return respond


def _session(fake: FakeOpenAI) -> Session:
    settings = load_settings()
    return Session(Store.open(settings), settings, model=f"openai-compatible:fake@{fake.base_url}")


def _run(chat: Session, turns: int, liked: str, rng: random.Random) -> list[int]:
    """``turns`` new conversations of one question each, rated 5 when the style is ``liked`` else 1;
    the attempt ids."""
    ids = []
    for _ in range(turns):
        chat.new_conversation()
        reply = chat.send(rng.choice(ASKS).format(p=rng.choice(PLANTS)))
        chat.rate(5 if reply.text.startswith(liked) else 1)
        ids.append(reply.attempt_id)
    return ids


def _shown(chat: Session, attempt_ids: list[int]) -> list[int]:
    return [int(d) for a in attempt_ids for d in chat.store.attempt(a).demo_attempt_ids]


def _taste_change(fake: FakeOpenAI, credit: bool) -> tuple[Session, list[int], list[int], list[int]]:
    fake.responder = steerable(seed=5)
    rng = random.Random(11)
    chat = _session(fake)
    if not credit:
        chat.store.add_version(chat.program, note="the old policy", demo_policy={"credit": False})
    before = _run(chat, 14, FORMAL, rng)
    after = _run(chat, 26, CASUAL, rng)
    return chat, before, after, _shown(chat, after[-8:])


def _stats(index: DemoIndex, attempt_id: int) -> DemoStats:
    stats = index.stats(attempt_id)
    assert stats is not None
    return stats


def _style(chat: Session, attempt_id: int) -> str:
    return chat.store.attempt(attempt_id).response.split(" ", 1)[0]


def test_after_a_taste_change_rated_down_demos_stop_being_chosen(
    fake_llm: FakeOpenAI, database_url: str
) -> None:
    chat, before, after, late = _taste_change(fake_llm, credit=True)
    with chat:
        early = _shown(chat, after[:2])
        assert early and all(_style(chat, d) == FORMAL for d in early)  # the trap: old 5★ answers
        formal_demos = {d for d in _shown(chat, before + after) if _style(chat, d) == FORMAL}
        assert formal_demos
        # The old demos were rated down through their imitations: they are no longer chosen ...
        assert late and not set(late) & formal_demos
        # ... and the answers the user rated 5★ after the change replaced them.
        assert all(d > max(before) and _style(chat, d) == CASUAL for d in late)
        index = next(iter(reoptimize._INDEXES.values())).index
        tried = {d for d in _shown(chat, after) if d in formal_demos}
        assert all(_stats(index, d).failures > 0 for d in tried)
        assert max(_stats(index, d).weight for d in formal_demos) < min(_stats(index, d).weight for d in late)
        # The user now mostly gets what they like on the first attempt.
        liked = [chat.store.attempt(a).response.startswith(CASUAL) for a in after[-8:]]
        assert sum(liked) >= 6


def test_without_credit_the_old_answers_keep_being_chosen(fake_llm: FakeOpenAI) -> None:
    """The same scenario with ``credit`` off (weight = stars / 5): the trap the issue describes."""
    chat, _, _, late = _taste_change(fake_llm, credit=False)
    with chat:
        assert sum(_style(chat, d) == FORMAL for d in late) >= 4


def test_forgetting_an_imitation_takes_back_its_credit(fake_llm: FakeOpenAI, database_url: str) -> None:
    fake_llm.responder = steerable(seed=5, imitate=1.0)
    with _session(fake_llm) as chat:
        chat.new_conversation()
        chat.send("How often should I water my basil?")
        chat.rate(5)
        demo = chat.last.attempt_id if chat.last else 0
        imitations = []
        for plant in ["fern", "orchid"]:
            chat.new_conversation()
            reply = chat.send(f"How often should I water my {plant}?")
            assert chat.store.attempt(reply.attempt_id).demo_attempt_ids == [demo]
            chat.rate(1)  # the user's taste changed: imitations of the demo are rated down
            imitations.append(reply)
        index = next(iter(reoptimize._INDEXES.values())).index
        stats = index.stats(demo)
        assert stats is not None and 1.9 < stats.failures <= 2.0  # two, decayed by 0-1 rated turns
        chat.new_conversation()
        chat.send("How often should I water my mint?")
        assert chat.last is not None and chat.store.attempt(chat.last.attempt_id).demo_attempt_ids == []
        forget(chat.store, chat.settings, turns=[r.turn_id for r in imitations])
        restored = index.stats(demo)
        assert restored is not None and restored.failures == pytest.approx(0.0, abs=1e-9)
        # A fresh process rebuilds the same thing from the store (the forgotten links are gone).
        with reoptimize._LOCK:
            reoptimize._INDEXES.clear()
        chat.new_conversation()
        chat.send("How often should I water my cactus?")
        rebuilt = next(iter(reoptimize._INDEXES.values())).index.stats(demo)
        assert rebuilt is not None and rebuilt.failures == 0.0 and rebuilt.weight == pytest.approx(0.75)


def test_a_rerating_replaces_the_old_credit(fake_llm: FakeOpenAI) -> None:
    fake_llm.responder = steerable(seed=5, imitate=1.0)
    with _session(fake_llm) as chat:
        chat.send("How often should I water my basil?")
        chat.rate(5)
        demo = chat.last.attempt_id if chat.last else 0
        chat.new_conversation()
        chat.send("How often should I water my fern?")
        chat.rate(1)
        index = next(iter(reoptimize._INDEXES.values())).index
        low = index.stats(demo)
        chat.rate(5)  # changed their mind about the same answer
        high = index.stats(demo)
        assert low is not None and high is not None
        assert (low.successes, low.failures) == (0.0, 1.0) and (high.successes, high.failures) == (1.0, 0.0)
        assert high.weight > low.weight
        assert chat.last_learning is not None and chat.last_learning.demos_credited == 1


# -- the posterior and the decay, without a store ------------------------------------------------


def test_credit_of_ratings() -> None:
    assert [credit_of(s) for s in (1, 2, 3, 4, 5)] == [(0, 1), (0, 1), (0.5, 0.5), (1, 0), (1, 0)]


def test_posterior_prior_comes_from_the_demos_own_rating_and_decays_to_uniform() -> None:
    fresh5 = posterior_weight(5, 10, 0, 0, 10, now=10, half_life=50, prior_strength=2)
    fresh4 = posterior_weight(4, 10, 0, 0, 10, now=10, half_life=50, prior_strength=2)
    assert fresh5 == pytest.approx(3 / 4) and fresh4 == pytest.approx(2.5 / 4)
    half = posterior_weight(5, 10, 0, 0, 10, now=60, half_life=50, prior_strength=2)
    assert half == pytest.approx(2 / 3)  # one half-life: the prior counts 1 pseudo-rating
    assert posterior_weight(5, 0, 0, 0, 0, now=10_000, half_life=50, prior_strength=2) == pytest.approx(0.5)
    assert posterior_weight(5, 0, 0, 0, 0, now=10_000, half_life=0, prior_strength=2) == pytest.approx(0.75)


def test_failures_push_a_demo_below_a_newer_one_and_the_floor() -> None:
    old = posterior_weight(5, 1, 5, 0, 20, now=20, half_life=50, prior_strength=2)  # 5 past successes
    new = posterior_weight(5, 20, 0, 0, 20, now=20, half_life=50, prior_strength=2)
    assert old > new
    failed = posterior_weight(5, 1, 5, 8, 20, now=20, half_life=50, prior_strength=2)
    assert failed < new and failed < 0.5


def _index(half_life: float = 10) -> DemoIndex:
    index = DemoIndex(half_life)
    for turn, attempt in [(1, 11), (2, 12)]:
        index.note_turn(turn)
        index.upsert(Candidate(attempt, turn, turn, f"q{turn}", f"a{turn}", 5), [1.0, 0.0])
    return index


def test_evidence_decays_with_rated_turns_and_retracts_exactly() -> None:
    index = _index(half_life=10)
    index.note_turn(3)
    assert index.credit(31, 3, 1, [11])
    first = index.stats(11)
    assert first is not None and first.failures == pytest.approx(1.0)
    for turn in range(4, 14):  # ten more rated turns: one half-life
        index.note_turn(turn)
    later = index.stats(11)
    assert later is not None and later.failures == pytest.approx(0.5)
    assert index.credit(130, 13, 5, [11])  # a newer success, then the old failure is taken back
    assert index.credit(31, 3, None, [11])
    back = index.stats(11)
    assert back is not None and back.failures == pytest.approx(0.0, abs=1e-12)
    assert back.successes == pytest.approx(1.0)
    assert not index.credit(130, 13, 5, [11])  # the same rating again changes nothing


def test_selection_prefers_the_demo_whose_imitations_earn_good_ratings() -> None:
    index = _index()
    policy = {"min_similarity": 0.0, "k": 1}
    assert [d.attempt_id for d in index.select([1.0, 0.0], policy)] == [12]  # newer wins a tie
    index.note_turn(3)
    for attempt in range(30, 33):
        index.credit(attempt, 3, 1, [12])
    chosen = index.select([1.0, 0.0], policy)
    assert [d.attempt_id for d in chosen] == [11] and chosen[0].weight > 0.5
    # With every demo rated down, none is shown rather than a bad one.
    for attempt in range(40, 46):
        index.credit(attempt, 3, 1, [11, 12])
    assert index.select([1.0, 0.0], policy) == []
    assert len(index.select([1.0, 0.0], policy | {"credit": False})) == 1  # stars / 5 ignores it all


def test_forget_turn_removes_its_credit_and_its_evidence() -> None:
    index = _index()
    index.note_turn(3)
    index.attach(31, 3)
    index.credit(31, 3, 1, [11, 12])
    index.forget_turn(3)
    assert all(s is not None and s.failures == 0 for s in (index.stats(11), index.stats(12)))
    index.forget_turn(1)
    assert index.stats(11) is None and len(index) == 1

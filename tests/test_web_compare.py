"""Blind A/B comparisons over real HTTP: the arms are hidden until the pick, the pick is stored,
win rates carry Wilson intervals; past messages as prompts; prompt-only vs adapter; bad input and
other users change nothing; the comparisons table on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from fakes import FakeOpenAI
from minetune.config import load_settings
from minetune.learn import abtest
from minetune.store import Store
from minetune.store import adapters as adapters_db
from minetune.store import comparisons as comparisons_db
from webusers import TwoUsers, error, rows_unchanged, two_users

FRENCH = "Bonjour, je suis là."
ENGLISH = "Hello, I am here."


def reply_by_rules(body: dict[str, Any]) -> str:
    """French when the system prompt carries the French rule, else English (never an arm name)."""
    system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
    return FRENCH if "Answer in French." in system else ENGLISH


@pytest.fixture
def web(fake_llm: FakeOpenAI) -> Iterator[TwoUsers]:
    fake_llm.responder = reply_by_rules
    with two_users(fake=fake_llm) as users:
        users.store_a.change_lessons("default", add=[{"text": "Answer in French."}], note="french")
        yield users


def past_turn(store: Store, message: str, program: str = "default") -> int:
    """An unrated turn (so no demos exist and no embedder is loaded)."""
    conv = store.start_conversation(program)
    turn = store.add_turn(conv.id, message)
    store.add_attempt(turn.id, model_spec="fake", messages=[], response="earlier answer", latency_ms=1.0)
    return turn.id


# -- the Wilson interval ----------------------------------------------------------------------------


def wilson_by_bisection(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The interval's ends as the roots of |p̂ - p| = z·sqrt(p(1-p)/n), found numerically."""
    p_hat = successes / n

    def gap(p: float) -> float:
        return abs(p_hat - p) - z * math.sqrt(p * (1 - p) / n)

    def root(lo: float, hi: float) -> float:
        for _ in range(200):
            mid = (lo + hi) / 2
            if (gap(lo) > 0) == (gap(mid) > 0):
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = 0.0 if gap(0.0) <= 0 else root(0.0, p_hat)
    high = 1.0 if gap(1.0) <= 0 else root(p_hat, 1.0)
    return low, high


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (5, 10, (0.2366, 0.7634)),
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (8, 10, (0.4902, 0.9433)),
        (81, 263, (0.2553, 0.3662)),
        (1, 1, (0.2065, 1.0)),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, n: int, expected: tuple[float, float]
) -> None:
    low, high = abtest.wilson_interval(successes, n)
    assert (round(low, 4), round(high, 4)) == expected
    check_low, check_high = wilson_by_bisection(successes, n)
    assert low == pytest.approx(check_low, abs=1e-9) and high == pytest.approx(check_high, abs=1e-9)


def test_wilson_interval_edges_and_half_wins() -> None:
    assert abtest.wilson_interval(0, 0) == (0.0, 1.0)
    low, high = abtest.wilson_interval(7.5, 12)  # ties count half
    assert (low, high) == pytest.approx(wilson_by_bisection(7.5, 12), abs=1e-9)
    with pytest.raises(ValueError):
        abtest.wilson_interval(11, 10)


# -- blind comparisons --------------------------------------------------------------------------------


def test_answers_are_blind_until_the_pick_then_stored_and_scored(web: TwoUsers, fake_llm: FakeOpenAI) -> None:
    created = web.a.post("/compare", data={"first": 1, "second": 2, "prompt": "Greet me."})
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "url", "redirect"} and body["url"] == f"/compare/{body['id']}"

    # Each arm answered with its own version's prompt.
    systems = sorted(m["content"] for r in fake_llm.requests for m in r["messages"] if m["role"] == "system")
    assert len(systems) == 2 and "Answer in French." in systems[1] and "Answer in French." not in systems[0]

    page = web.a.get(body["url"])
    assert page.status_code == 200
    html = page.text
    assert FRENCH in html and ENGLISH in html and "Greet me." in html
    for hidden in ("v1", "v2", "french", "fake", "arm"):
        assert hidden not in html, hidden
    assert 'name="choice" value="a"' in html and 'name="choice" value="tie"' in html

    row = comparisons_db.get_comparison(web.store_a, body["id"])
    assert row.winner is None and {row.arm_a, row.arm_b} == {"v1", "v2"}
    french_side = "a" if row.answer_a == FRENCH else "b"
    assert (row.arm_a if french_side == "a" else row.arm_b) == "v2"
    french_messages = row.messages_a if french_side == "a" else row.messages_b
    assert "Answer in French." in french_messages[0]["content"]
    assert french_messages[-1] == {"role": "user", "content": "Greet me."}

    picked = web.a.post(f"/compare/{body['id']}/pick", data={"choice": french_side})
    assert picked.status_code == 200 and picked.json()["winner"] == french_side
    stored = comparisons_db.get_comparison(web.store_a, body["id"])
    assert stored.winner == french_side and stored.decided_at is not None
    again = web.a.post(f"/compare/{body['id']}/pick", data={"choice": "tie"})
    assert again.status_code == 409 and "already decided" in error(again)
    assert comparisons_db.get_comparison(web.store_a, body["id"]).winner == french_side

    revealed = web.a.get(body["url"]).text
    assert "You picked" in revealed and "v2" in revealed and 'id="win-rates"' in revealed

    # Two more: v2 wins once more, then a tie. v2: 2.5 of 3, v1: 0.5 of 3.
    for choice_for_french in ("win", "tie"):
        new = web.a.post("/compare", data={"first": 2, "second": 1, "prompt": "Greet me again."}).json()
        row = comparisons_db.get_comparison(web.store_a, new["id"])
        side = "a" if row.answer_a == FRENCH else "b"
        choice = side if choice_for_french == "win" else "tie"
        assert web.a.post(f"/compare/{new['id']}/pick", data={"choice": choice}).status_code == 200
    [matchup] = abtest.matchups(comparisons_db.list_comparisons(web.store_a, "default"))
    v1, v2 = matchup.first, matchup.second
    assert (v1.arm, v1.wins, v1.losses, v1.ties) == ("v1", 0, 2, 1)
    assert (v2.arm, v2.wins, v2.losses, v2.ties) == ("v2", 2, 0, 1)
    low, high = abtest.wilson_interval(2.5, 3)
    results = web.a.get("/compare").text
    assert 'id="win-rates"' in results
    assert f"{2.5 / 3 * 100:.0f}%" in results and f"{low * 100:.0f}–{high * 100:.0f}%" in results
    assert "v2 beat v1" in results


def test_prompt_drawn_from_a_past_turn(web: TwoUsers, fake_llm: FakeOpenAI) -> None:
    turn_id = past_turn(web.store_a, "What's my cat's name?")
    page = web.a.get("/compare").text
    assert f'<option value="{turn_id}">What&#39;s my cat&#39;s name?</option>' in page
    created = web.a.post("/compare", data={"first": 2, "second": 1, "turn_id": turn_id})
    assert created.status_code == 201, created.text
    row = comparisons_db.get_comparison(web.store_a, created.json()["id"])
    assert row.prompt == "What's my cat's name?" and row.turn_id == turn_id
    assert all(r["messages"][-1]["content"] == "What's my cat's name?" for r in fake_llm.requests)

    # Forgetting the turn forgets the comparison made from it.
    web.store_a.delete_turn(turn_id)
    assert comparisons_db.list_comparisons(web.store_a, "default") == []


def test_prompt_only_vs_adapter_is_offered_only_with_an_adapter(web: TwoUsers, tmp_path: Path) -> None:
    page = web.a.get("/compare").text
    assert 'value="adapter" disabled' in page and "has no LoRA adapter" in page
    refused = web.a.post("/compare", data={"mode": "adapter", "prompt": "Hi"})
    assert refused.status_code == 400 and "has no LoRA adapter" in error(refused)

    web.store_a.add_version(note="local base", model_spec="hf:./base-model")
    adapter_dir = tmp_path / "adapter"
    adapter, version = adapters_db.publish_adapter(
        web.store_a,
        "default",
        place=lambda _id: str(adapter_dir),
        serve_spec=lambda path: f"hf:./base-model?adapter={path}",
        method="sft",
        base_model="./base-model",
    )
    prompt_only, with_adapter = abtest.adapter_arms(web.store_a, "default")
    assert prompt_only.model_spec == "hf:./base-model"
    assert with_adapter.model_spec == f"hf:./base-model?adapter={adapter_dir}"
    assert (prompt_only.label, with_adapter.label) == (
        f"v{version.number} prompt-only",
        f"v{version.number} + adapter {adapter.id}",
    )

    page = web.a.get("/compare").text
    assert 'value="adapter" disabled' not in page and 'id="adapter-problem"' not in page
    created = web.a.post("/compare", data={"mode": "adapter", "prompt": "Hi"})
    assert created.status_code == 201, created.text
    row = comparisons_db.get_comparison(web.store_a, created.json()["id"])
    assert {row.arm_a, row.arm_b} == {prompt_only.label, with_adapter.label}
    html = web.a.get(f"/compare/{row.id}").text
    assert "prompt-only" not in html and "adapter" not in html.split("<main>")[1]


def test_bad_input_is_a_clear_4xx_and_stores_nothing(web: TwoUsers) -> None:
    web.store_a.create_program("other")
    other_turn = past_turn(web.store_a, "A message of another program.", "other")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"first": 1, "second": 2, "prompt": "   "}, 400, "The prompt is empty."),
        ({"first": 1, "second": 2, "prompt": "x" * 200_001}, 400, "the limit is 200,000"),
        ({"first": 2, "second": 2, "prompt": "Hi"}, 400, "two different versions"),
        ({"first": 1, "second": 9, "prompt": "Hi"}, 404, "has no version 9"),
        ({"first": 1, "prompt": "Hi"}, 400, "Pick the two versions"),
        ({"first": 0, "second": 1, "prompt": "Hi"}, 422, "first"),
        ({"first": "x", "second": 1, "prompt": "Hi"}, 422, "first"),
        ({"mode": "both", "prompt": "Hi"}, 422, "mode"),
        ({"first": 1, "second": 2, "turn_id": 999_999}, 404, "has no turn 999999"),
        ({"first": 1, "second": 2, "turn_id": other_turn}, 404, f"has no turn {other_turn}"),
        ({"first": 1, "second": 2, "prompt": "Hi", "program": "nope"}, 404, "No program named 'nope'"),
    ]
    with rows_unchanged(web.store_a):
        for data, status, message in cases:
            response = web.a.post("/compare", data=data)
            assert response.status_code == status, (data, response.text[:300])
            assert message in error(response), (data, error(response))
        for path, data, status in [
            ("/compare/1/pick", {"choice": "a"}, 404),
            ("/compare/0/pick", {"choice": "a"}, 422),
            ("/compare/abc/pick", {"choice": "a"}, 422),
        ]:
            assert web.a.post(path, data=data).status_code == status, path
        assert web.a.get("/compare/1").status_code == 404

    created = web.a.post("/compare", data={"first": 1, "second": 2, "prompt": "Hi"}).json()
    for choice in ("c", ""):
        assert web.a.post(f"/compare/{created['id']}/pick", data={"choice": choice}).status_code == 422
    assert comparisons_db.get_comparison(web.store_a, created["id"]).winner is None


def test_another_user_never_sees_or_decides_my_comparisons(web: TwoUsers) -> None:
    turn_id = past_turn(web.store_a, "Alice's private question")
    mine = web.a.post("/compare", data={"first": 1, "second": 2, "turn_id": turn_id}).json()
    decided = web.a.post("/compare", data={"first": 1, "second": 2, "prompt": "Alice's other prompt"}).json()
    web.a.post(f"/compare/{decided['id']}/pick", data={"choice": "tie"})
    web.store_b.program()  # bob's implicit default program exists before the snapshot

    with rows_unchanged(web.store_a):
        for comparison in (mine, decided):
            response = web.b.get(comparison["url"])
            assert response.status_code == 404
            assert f"No comparison with id {comparison['id']}" in error(response)
            assert web.b.post(f"{comparison['url']}/pick", data={"choice": "a"}).status_code == 404
        # Alice's turn as bob's prompt, in bob's program: not found, nothing generated.
        stolen = web.b.post("/compare", data={"first": 1, "second": 2, "turn_id": turn_id})
        assert stolen.status_code == 404
        bob_page = web.b.get("/compare").text
        assert "Alice" not in bob_page and 'id="win-rates"' not in bob_page
    assert comparisons_db.get_comparison(web.store_a, mine["id"]).winner is None
    assert comparisons_db.get_comparison(web.store_a, decided["id"]).winner == "tie"
    assert web.anonymous.get("/compare").status_code == 401


# -- the table on both databases ------------------------------------------------------------------


def test_comparisons_table_scoping_cascade_and_check(database_url: str) -> None:
    store = Store.open(load_settings())
    other_user = Store(store.db, "bob")
    try:
        version = store.active_version()
        turn_id = past_turn(store, "Where is my cat?")
        fields = {
            "arm_a": "v1",
            "arm_b": "v2",
            "version_a_id": version.id,
            "version_b_id": version.id,
            "model_a": "fake",
            "model_b": "fake",
            "messages_a": [{"role": "user", "content": "Where is my cat?"}],
            "messages_b": [],
            "answer_a": "On the sofa.",
            "answer_b": "Outside.",
        }
        from_turn = comparisons_db.create_comparison(
            store, "default", turn_id=turn_id, prompt="Where is my cat?", **fields
        )
        typed = comparisons_db.create_comparison(store, "default", prompt="Typed.", **fields)
        assert typed.id > from_turn.id and from_turn.messages_a[0]["content"] == "Where is my cat?"
        with pytest.raises(Exception, match="has no turn"):
            comparisons_db.create_comparison(other_user, "default", turn_id=turn_id, prompt="x", **fields)
        with pytest.raises(Exception, match="No comparison"):
            comparisons_db.record_pick(other_user, typed.id, "a")
        assert comparisons_db.record_pick(store, typed.id, "b").winner == "b"
        with pytest.raises(IntegrityError), store.db.transaction() as s:
            s.execute(text("UPDATE comparisons SET winner = 'x' WHERE id = :id"), {"id": from_turn.id})
        store.delete_turn(turn_id)
        assert [c.id for c in comparisons_db.list_comparisons(store, "default")] == [typed.id]
        assert comparisons_db.list_comparisons(other_user, "default") == []
    finally:
        store.close()

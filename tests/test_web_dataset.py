"""The dataset review over real HTTP: turns with attempts and stars, the star filter, an edited
answer becoming the preferred one in the training datasets, excluding a turn from datasets and
demos (and bringing it back), and forgetting a turn the way `minetune forget` does."""

from __future__ import annotations

import pytest

from minetune.config import load_settings
from minetune.errors import NotFoundError
from minetune.learn.reoptimize import Learner
from minetune.store import Store
from minetune.store.browse import USER_EDIT_MODEL, add_user_edit
from minetune.train.datasets import build_examples, eligibility_report
from webchat import seed, web_settings, word_embedder
from webusers import error, served

HTML = {"Accept": "text/html"}


def test_the_dataset_lists_turns_with_their_attempts_and_filters_by_stars() -> None:
    with served(web_settings(None)) as web:
        low = seed(web.store, "What is 2+2?", [("5", 1), ("4", 5)])
        mid = seed(web.store, "Name a colour", [("Blue.", 3)])
        unrated = seed(web.store, "Hello?", [("Hi.", None)])

        everything = web.client.get("/api/dataset").json()["turns"]
        assert [t["id"] for t in everything] == [unrated, mid, low]  # newest first
        assert [(a["text"], a["stars"]) for a in everything[2]["attempts"]] == [("5", 1), ("4", 5)]

        def ids(**query: str | int) -> list[int]:
            response = web.client.get("/api/dataset", params=query)
            assert response.status_code == 200, response.text
            return [t["id"] for t in response.json()["turns"]]

        assert ids(stars=5) == [low]
        assert ids(stars=3) == [mid]
        assert ids(min_stars=3) == [mid, low]
        assert ids(max_stars=2) == [low]
        assert ids(min_stars=2, max_stars=4) == [mid]
        assert ids(stars="") == [unrated, mid, low]

        page = web.client.get("/dataset", params={"min_stars": 3}, headers=HTML)
        assert page.status_code == 200
        assert f'id="turn-{mid}"' in page.text and f'id="turn-{low}"' in page.text
        assert f'id="turn-{unrated}"' not in page.text
        assert web.client.get("/static/dataset.js").status_code == 200


def test_an_edited_answer_becomes_the_preferred_answer_for_training(database_url: str) -> None:
    with served(web_settings(None)) as web:
        turn_id = seed(web.store, "Summarise the meeting", [("It was a meeting.", 2)])
        original = web.store.turn(turn_id).attempts[0]
        response = web.client.post(
            f"/api/turns/{turn_id}/edit", json={"text": "We agreed to ship on Friday."}
        )
        assert response.status_code == 200, response.text
        edit = response.json()["attempt"]
        assert edit["user_edit"] is True and edit["stars"] == 5 and edit["number"] == 2

        stored = web.store.attempt(edit["id"])
        assert stored.model_spec == USER_EDIT_MODEL and stored.messages == original.messages
        assert [(f.kind, f.stars) for f in stored.feedback] == [("explicit", 5)]
        assert web.store.turn(turn_id).attempts_to_5 is None  # the model never earned those stars

        sft, _, _ = build_examples(web.store, "default", "sft")
        assert [(ex.response, ex.prompt) for ex in sft] == [
            ("We agreed to ship on Friday.", original.messages)
        ]
        dpo, _, _ = build_examples(web.store, "default", "dpo")
        assert [(ex.chosen, ex.rejected, ex.source) for ex in dpo] == [
            ("We agreed to ship on Friday.", "It was a meeting.", "edit")
        ]
        assert dpo[0].prompt == original.messages
        kto, _, _ = build_examples(web.store, "default", "kto")
        assert sorted((ex.completion, ex.label) for ex in kto) == [
            ("It was a meeting.", False),
            ("We agreed to ship on Friday.", True),
        ]
        assert eligibility_report(web.store, "default")["dpo"].details["edit"] == 1


def test_an_edit_outranks_even_earlier_accepted_answers() -> None:
    store = Store.open(load_settings())
    try:
        turn_id = seed(store, "Write a haiku", [("Weak haiku.", 1), ("Decent haiku.", 5)])
        add_user_edit(store, turn_id, "My own haiku.")
        sft, _, _ = build_examples(store, "default", "sft")
        assert [ex.response for ex in sft] == ["My own haiku."]  # the 5-star answer it replaced is not SFT
        dpo, _, _ = build_examples(store, "default", "dpo")
        assert sorted((ex.chosen, ex.rejected, ex.source) for ex in dpo) == [
            ("My own haiku.", "Decent haiku.", "edit"),
            ("My own haiku.", "Weak haiku.", "edit"),
        ]
        kto, _, _ = build_examples(store, "default", "kto")
        assert sorted((ex.completion, ex.label) for ex in kto) == [
            ("My own haiku.", True),
            ("Weak haiku.", False),
        ]
    finally:
        store.close()


def test_excluded_turns_leave_datasets_and_demos_and_can_come_back() -> None:
    with word_embedder() as embedder, served(web_settings(None, embedder=embedder)) as web:
        kept = seed(web.store, "How do I boil an egg?", [("Seven minutes.", 5)])
        other = seed(web.store, "How do I peel an orange?", [("Start at the top.", 5)])
        learner = Learner(web.store, load_settings(embedder=embedder), "default")
        demos, _ = learner.demos_for("How do I boil an egg today?")
        assert kept in [d.turn_id for d in demos]

        response = web.client.post(f"/api/turns/{kept}/exclude", json={"excluded": True})
        assert response.status_code == 200 and response.json()["turn"]["excluded"] is True
        with web.store.db.transaction() as s:
            from minetune.store.schema import Turn

            assert s.get(Turn, kept).excluded is True  # type: ignore[union-attr]
        sft, _, _ = build_examples(web.store, "default", "sft")
        assert [ex.turn_id for ex in sft] == [other]
        demos, _ = learner.demos_for("How do I boil an egg today?")
        assert kept not in [d.turn_id for d in demos]
        # A fresh process rebuilding its index from the store skips it too.
        learner.rebuild()
        assert kept not in [d.turn_id for d in learner.demos_for("How do I boil an egg today?")[0]]
        page = web.client.get("/dataset", headers=HTML).text
        assert 'class="excluded"' in page and 'data-action="include"' in page

        back = web.client.post(f"/api/turns/{kept}/exclude", json={"excluded": False})
        assert back.status_code == 200 and back.json()["turn"]["excluded"] is False
        assert sorted(ex.turn_id for ex in build_examples(web.store, "default", "sft")[0]) == [kept, other]
        assert kept in [d.turn_id for d in learner.demos_for("How do I boil an egg today?")[0]]


def test_forgetting_a_turn_deletes_it_and_what_was_learned_from_it(database_url: str) -> None:
    with served(web_settings(None)) as web:
        gone = seed(web.store, "My password is hunter2", [("Noted.", 2)], critique="never repeat secrets")
        kept = seed(web.store, "What is the weather?", [("Sunny.", 4)])
        feedback_id = web.store.turn(gone).attempts[0].feedback[0].id
        web.store.change_lessons(
            "default",
            add=[{"text": "Never repeat secrets.", "origin": "reflection", "feedback_id": feedback_id}],
        )
        response = web.client.delete(f"/api/turns/{gone}")
        assert response.status_code == 200, response.text
        forgotten = response.json()["forgotten"]
        assert (forgotten["turns"], forgotten["attempts"], forgotten["feedback"]) == (1, 1, 1)
        assert len(forgotten["retired_lessons"]) == 1  # the same library call as `minetune forget`
        with pytest.raises(NotFoundError):
            web.store.turn(gone)
        assert web.store.lessons() == []
        assert [t["id"] for t in web.client.get("/api/dataset").json()["turns"]] == [kept]
        assert "hunter2" not in web.client.get("/dataset", headers=HTML).text
        again = web.client.delete(f"/api/turns/{gone}")
        assert again.status_code == 404 and error(again) == f"No turn with id {gone}."

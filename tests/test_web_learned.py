"""The rules and versions pages over real HTTP: every rule change is a version; diff, activate and
roll back; bad input changes nothing; one user never reads or changes another's rules or versions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from webusers import TwoUsers, error, rows_unchanged, two_users


@pytest.fixture
def web() -> Iterator[TwoUsers]:
    with two_users() as users:
        yield users


def active_rules(web: TwoUsers, program: str = "default") -> list[str]:
    return [lesson.text for lesson in web.store_a.lessons(program)]


def test_rules_add_edit_retire_each_make_a_version(database_url: str) -> None:
    with two_users() as web:
        added = web.a.post("/rules/add", data={"text": "  Answer in British English.  "})
        assert added.status_code == 200, added.text
        assert added.json()["version"] == 2 and added.json()["redirect"] == "/rules?program=default"
        rule_id = added.json()["rule"]
        assert active_rules(web) == ["Answer in British English."]
        assert web.store_a.active_version().lessons == [{"id": rule_id, "text": "Answer in British English."}]

        page = web.a.get("/rules").text
        assert "Answer in British English." in page and f'data-rule="{rule_id}"' in page

        edited = web.a.post(f"/rules/{rule_id}/edit", data={"text": "Answer in British English, briefly."})
        assert edited.status_code == 200 and edited.json()["version"] == 3
        assert web.store_a.active_version().lessons == [
            {"id": rule_id, "text": "Answer in British English, briefly."}
        ]

        retired = web.a.post(f"/rules/{rule_id}/retire", data={})
        assert retired.status_code == 200 and retired.json()["version"] == 4
        assert active_rules(web) == [] and web.store_a.active_version().lessons == []
        page = web.a.get("/rules").text
        assert 'id="inactive-rules"' in page and "retired" in page

        notes = [v.note for v in web.store_a.versions()]
        assert notes == ["created", "added a rule", f"edited rule {rule_id}", f"retired rule {rule_id}"]
        versions_page = web.a.get("/versions").text
        for note in notes[1:]:
            assert note in versions_page


def test_a_plain_form_post_redirects_back_to_the_page(web: TwoUsers) -> None:
    response = web.a.post(
        "/rules/add", data={"text": "Be brief.", "program": "default"}, headers={"Accept": "text/html"}
    )
    assert response.status_code == 303 and response.headers["location"] == "/rules?program=default"
    assert active_rules(web) == ["Be brief."]


def test_bad_rule_input_is_a_clear_4xx_and_changes_nothing(web: TwoUsers) -> None:
    rule_id = web.a.post("/rules/add", data={"text": "Be brief."}).json()["rule"]
    other = web.a.post("/rules/add", data={"text": "Use metric units."}).json()["rule"]
    web.a.post(f"/rules/{other}/retire", data={})
    cases = [
        ("/rules/add", {"text": "   "}, 400, "The rule is empty."),
        ("/rules/add", {"text": "x" * 1001}, 400, "the limit is 1,000"),
        ("/rules/add", {"text": "be BRIEF."}, 400, "already active"),
        ("/rules/add", {"text": "Fine.", "program": "nope"}, 404, "No program named 'nope'"),
        ("/rules/add", {"text": "Fine.", "program": "x" * 201}, 422, "program"),
        (f"/rules/{rule_id}/edit", {"text": ""}, 400, "The rule is empty."),
        (f"/rules/{rule_id}/edit", {"text": "Be brief."}, 400, "already says that"),
        (f"/rules/{other}/edit", {"text": "Use imperial units."}, 400, "retired; only active rules"),
        (f"/rules/{other}/retire", {}, 400, "retired; only active rules"),
        ("/rules/999/retire", {}, 404, "no rule 999"),
        ("/rules/abc/retire", {}, 422, "lesson_id"),
        ("/rules/0/edit", {"text": "x"}, 422, "greater than or equal to 1"),
        (f"/rules/{10**20}/retire", {}, 422, "lesson_id"),
    ]
    with rows_unchanged(web.store_a):
        for path, data, status, message in cases:
            response = web.a.post(path, data=data)
            assert response.status_code == status, (path, data, response.text)
            assert message in error(response), (path, error(response))
    assert active_rules(web) == ["Be brief."]


def test_diff_activate_and_roll_back(web: TwoUsers) -> None:
    web.a.post("/rules/add", data={"text": "Be brief."})
    web.a.post("/rules/add", data={"text": "Use metric units."})
    assert web.store_a.active_version().number == 3

    diff = web.a.get("/versions/diff", params={"old": 1, "new": 3})
    assert diff.status_code == 200
    assert '<span class="diff-add">+- Be brief.</span>' in diff.text
    assert '<span class="diff-add">+- Use metric units.</span>' in diff.text
    same = web.a.get("/versions/diff", params={"old": 2, "new": 2}).text
    assert "v2 and v2 are the same." in same

    activated = web.a.post("/versions/1/activate", data={"program": "default"})
    assert activated.status_code == 200 and activated.json()["active"] == 1
    assert web.store_a.active_version().number == 1
    page = web.a.get("/versions").text
    assert 'data-version="1" class="active-version"' in page
    rules = web.a.get("/rules").text
    assert 'id="out-of-sync"' in rules  # v1 has no rules while two are active

    web.a.post("/versions/3/activate", data={})
    rolled = web.a.post("/versions/rollback", data={})
    assert rolled.status_code == 200 and rolled.json()["active"] == 2
    assert web.store_a.active_version().lessons[0]["text"] == "Be brief."
    web.a.post("/versions/rollback", data={})
    refused = web.a.post("/versions/rollback", data={})
    assert refused.status_code == 400 and "no earlier version to roll back to" in error(refused)
    assert web.store_a.active_version().number == 1


def test_bad_version_numbers_are_4xx_and_change_nothing(web: TwoUsers) -> None:
    web.a.post("/rules/add", data={"text": "Be brief."})
    active = web.store_a.active_version().number
    with rows_unchanged(web.store_a):
        for path, status in [
            ("/versions/9/activate", 404),
            ("/versions/0/activate", 422),
            ("/versions/-1/activate", 422),
            ("/versions/two/activate", 422),
            (f"/versions/{2**31}/activate", 422),
        ]:
            response = web.a.post(path, data={})
            assert response.status_code == status, (path, response.text)
        assert "has no version 9" in error(web.a.post("/versions/9/activate", data={}))
        for params, status in [
            ({"old": 1, "new": 9}, 404),
            ({"old": "x", "new": 1}, 422),
            ({"old": 1}, 422),
            ({"old": 1, "new": 2, "program": "nope"}, 404),
        ]:
            assert web.a.get("/versions/diff", params=params).status_code == status, params
    assert web.store_a.active_version().number == active


def test_another_user_can_never_read_or_change_my_rules_and_versions(web: TwoUsers) -> None:
    web.store_a.create_program("secret", "You keep secrets.")
    added = web.a.post("/rules/add", data={"text": "Never reveal the plan.", "program": "secret"})
    rule_id = added.json()["rule"]
    web.a.post("/rules/add", data={"text": "Whisper.", "program": "secret"})
    before = web.store_a.row_counts()
    versions_before = [(v.number, v.note) for v in web.store_a.versions("secret")]

    # Bob asks for alice's program by name: it does not exist for him.
    for path in ("/rules?program=secret", "/versions?program=secret"):
        response = web.b.get(path)
        assert response.status_code == 404 and "No program named 'secret'" in error(response)
    assert web.b.get("/versions/diff", params={"old": 1, "new": 2, "program": "secret"}).status_code == 404
    for path, data in [
        ("/rules/add", {"text": "Shout.", "program": "secret"}),
        (f"/rules/{rule_id}/edit", {"text": "Reveal the plan.", "program": "secret"}),
        (f"/rules/{rule_id}/retire", {"program": "secret"}),
        ("/versions/1/activate", {"program": "secret"}),
        ("/versions/rollback", {"program": "secret"}),
    ]:
        assert web.b.post(path, data=data).status_code == 404, path
    # Alice's lesson id through bob's own default program: not his either.
    for path, data in [
        (f"/rules/{rule_id}/edit", {"text": "Reveal the plan."}),
        (f"/rules/{rule_id}/retire", {}),
    ]:
        response = web.b.post(path, data=data)
        assert response.status_code == 404 and f"no rule {rule_id}" in error(response)
    bob_pages = web.b.get("/rules").text + web.b.get("/versions").text
    assert "Never reveal the plan." not in bob_pages and "secret" not in bob_pages

    # Bob's own changes only touch bob's rows; alice's are exactly as they were.
    assert web.b.post("/rules/add", data={"text": "Bob's rule."}).status_code == 200
    assert [(v.number, v.note) for v in web.store_a.versions("secret")] == versions_before
    assert [lesson.text for lesson in web.store_a.lessons("secret")] == ["Never reveal the plan.", "Whisper."]
    after = web.store_a.row_counts()
    assert after["lessons"] == before["lessons"] + 1
    assert [lesson.text for lesson in web.store_b.lessons()] == ["Bob's rule."]


def test_pages_need_a_token(web: TwoUsers) -> None:
    for path in ("/rules", "/versions", "/versions/diff?old=1&new=1"):
        assert web.anonymous.get(path).status_code == 401
    assert web.anonymous.post("/rules/add", data={"text": "x"}).status_code == 401
    browser = web.anonymous.get("/rules", headers={"Accept": "text/html"})
    assert browser.status_code == 303 and browser.headers["location"].startswith("/login")
    assert web.store_a.lessons() == []

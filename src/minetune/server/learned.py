"""The rules and versions pages: what the program learned, and its version history.

Every rule change publishes a new program version (:meth:`Store.change_lessons`); versions can
be diffed, activated and rolled back (pointer moves).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from minetune.program import diff_versions, lesson_texts
from minetune.server.auth import current_user
from minetune.server.templating import render
from minetune.server.validation import FormText, PathId, ProgramForm, ProgramQuery, QueryId
from minetune.server.webutil import (
    bad_request,
    checked_text,
    done,
    not_found_as_404,
    page_url,
    program_page,
    user_program,
)
from minetune.store import Store
from minetune.store.schema import Lesson

router = APIRouter()

MAX_RULE_CHARS = 1000


# -- rules ---------------------------------------------------------------------------------------


@router.get("/rules", response_class=HTMLResponse)
def rules_page(
    request: Request, program: ProgramQuery = "default", user: str = Depends(current_user)
) -> Response:
    store, program = user_program(request, user, program)
    lessons = store.lessons(program, include_inactive=True)
    version = store.active_version(program)
    in_version = {item.get("id") for item in version.lessons or [] if isinstance(item, dict)}
    active = [lesson for lesson in lessons if lesson.status == "active"]
    return program_page(
        request,
        "rules.html",
        store,
        user,
        program,
        active=active,
        inactive=[lesson for lesson in lessons if lesson.status != "active"],
        version=version,
        in_version=in_version,
        out_of_sync={lesson.id for lesson in active} != in_version,
        max_rule_chars=MAX_RULE_CHARS,
    )


def _active_lesson(store: Store, program: str, lesson_id: int) -> Lesson:
    for lesson in store.lessons(program, include_inactive=True):
        if lesson.id == lesson_id:
            if lesson.status != "active":
                raise bad_request(f"Rule {lesson_id} is {lesson.status}; only active rules can be changed.")
            return lesson
    raise bad_request(f"Program {program!r} has no rule {lesson_id}.", status=404)


def _changed(request: Request, store: Store, program: str, note: str, **change: Any) -> Response:
    with not_found_as_404():
        version, added = store.change_lessons(program, note=note, **change)
    payload = {"program": program, "version": version.number, "note": note}
    if added:
        payload["rule"] = added[0].id
    return done(request, page_url("/rules", program=program), payload)


@router.post("/rules/add")
def add_rule(
    request: Request,
    text: FormText = "",
    program: ProgramForm = "default",
    user: str = Depends(current_user),
) -> Response:
    store, program = user_program(request, user, program)
    rule = checked_text(text, "rule", MAX_RULE_CHARS)
    if any(lesson.text.casefold() == rule.casefold() for lesson in store.lessons(program)):
        raise bad_request("That rule is already active.")
    return _changed(request, store, program, "added a rule", add=[{"text": rule, "origin": "manual"}])


@router.post("/rules/{lesson_id}/edit")
def edit_rule(
    request: Request,
    lesson_id: PathId,
    text: FormText = "",
    program: ProgramForm = "default",
    user: str = Depends(current_user),
) -> Response:
    store, program = user_program(request, user, program)
    rule = checked_text(text, "rule", MAX_RULE_CHARS)
    if _active_lesson(store, program, lesson_id).text == rule:
        raise bad_request(f"Rule {lesson_id} already says that; nothing changed.")
    return _changed(request, store, program, f"edited rule {lesson_id}", edit={lesson_id: rule})


@router.post("/rules/{lesson_id}/retire")
def retire_rule(
    request: Request, lesson_id: PathId, program: ProgramForm = "default", user: str = Depends(current_user)
) -> Response:
    store, program = user_program(request, user, program)
    _active_lesson(store, program, lesson_id)
    return _changed(request, store, program, f"retired rule {lesson_id}", retire=[lesson_id])


# -- versions ------------------------------------------------------------------------------------


def describe_sources(sources: dict[str, Any] | None) -> list[str]:
    """Where a version came from, as short phrases for the versions table."""
    phrases = []
    for key, value in (sources or {}).items():
        if value is None or value == [] or value == {}:
            continue
        if key == "lessons" and isinstance(value, list):
            phrases.append("rules " + ", ".join(str(v) for v in value))
        elif key == "feedback_id":
            phrases.append(f"critique (feedback {value})")
        elif key == "training_job":
            phrases.append(f"training job {value}")
        elif key == "adapter":
            phrases.append(f"adapter {value}")
        elif isinstance(value, str | int | float | bool):
            phrases.append(f"{key.replace('_', ' ')}: {value}")
        else:
            phrases.append(f"{key.replace('_', ' ')}: {json.dumps(value, default=str)[:120]}")
    return phrases


@router.get("/versions", response_class=HTMLResponse)
def versions_page(
    request: Request, program: ProgramQuery = "default", user: str = Depends(current_user)
) -> Response:
    store, program = user_program(request, user, program)
    versions = store.versions(program)
    active = store.active_version(program)
    parents = {v.id: v.number for v in versions}
    rows = [
        {
            "version": v,
            "active": v.id == active.id,
            "parent": parents.get(v.parent_id) if v.parent_id is not None else None,
            "rules": len(lesson_texts(v)),
            "sources": describe_sources(v.sources),
        }
        for v in reversed(versions)
    ]
    return program_page(
        request,
        "versions.html",
        store,
        user,
        program,
        rows=rows,
        active=active,
        can_roll_back=active.parent_id is not None,
        default_old=parents.get(active.parent_id, active.number) if active.parent_id else active.number,
    )


@router.get("/versions/diff", response_class=HTMLResponse)
def version_diff(
    request: Request,
    old: QueryId,
    new: QueryId,
    program: ProgramQuery = "default",
    user: str = Depends(current_user),
) -> Response:
    store, program = user_program(request, user, program)
    with not_found_as_404():
        before, after = store.version(program, old), store.version(program, new)
    text = diff_versions(before, after)
    return render(
        request,
        "version_diff.html",
        user=user,
        program=program,
        old=before,
        new=after,
        lines=text.splitlines(),
        numbers=[v.number for v in store.versions(program)],
    )


@router.post("/versions/{number}/activate")
def activate_version(
    request: Request,
    number: PathId,
    program: ProgramForm = "default",
    user: str = Depends(current_user),
) -> Response:
    store, program = user_program(request, user, program)
    with not_found_as_404():
        version = store.activate(program, number)
    payload = {"program": program, "active": version.number}
    return done(request, page_url("/versions", program=program), payload)


@router.post("/versions/rollback")
def rollback_version(
    request: Request, program: ProgramForm = "default", user: str = Depends(current_user)
) -> Response:
    store, program = user_program(request, user, program)
    with not_found_as_404():
        version = store.rollback(program)
    payload = {"program": program, "active": version.number}
    return done(request, page_url("/versions", program=program), payload)

"""Store helpers for LoRA adapters: publishing a trained adapter as a program version, listing and
switching adapters, lineage queries, and forgetting interactions (which taints the adapters that
learned from them).

Plain repository functions over a :class:`~minetune.store.repo.Store`, scoped to its user; each
runs in one transaction and has committed when it returns. Deciding *what* to train, keep or
retrain is the job of :mod:`minetune.train`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from minetune.errors import NotFoundError, StoreError
from minetune.store.repo import Store, new_version
from minetune.store.schema import (
    ADAPTER_STATUSES,
    Adapter,
    Attempt,
    Conversation,
    Feedback,
    ImportRecord,
    JudgeState,
    Lesson,
    Program,
    ProgramVersion,
    TrainingJob,
    Turn,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _adapter(store: Store, s: Session, adapter_id: int) -> Adapter:
    adapter = s.scalar(
        select(Adapter)
        .join(Program, Program.id == Adapter.program_id)
        .where(Adapter.id == adapter_id, Program.user_id == store.user_id)
    )
    if adapter is None:
        raise NotFoundError(f"No adapter with id {adapter_id}. See `minetune adapter list`.")
    return adapter


# -- publishing ------------------------------------------------------------------------------------


def publish_adapter(
    store: Store,
    program: str,
    *,
    place: Callable[[int], str],
    serve_spec: Callable[[str], str | None],
    method: str,
    base_model: str,
    job_id: int | None = None,
    parent_id: int | None = None,
    replaces_id: int | None = None,
    domain: str = "general",
    example_attempt_ids: Sequence[int] = (),
    metrics: dict[str, Any] | None = None,
    activate: bool = True,
    note: str = "",
) -> tuple[Adapter, ProgramVersion]:
    """Record a trained adapter and publish it as a new program version, in one transaction.

    ``place(adapter_id)`` moves the trained files to their final directory and returns its path;
    it runs inside the transaction, so a failure there records nothing. ``serve_spec(path)`` gives
    the version's model spec (None keeps the active version's). The lineage is this run's example
    attempts plus the parent's lineage. When ``job_id`` is given the job is marked succeeded with
    the adapter and version in its metrics; a ``replaces_id`` adapter is retired.
    """
    with store.db.transaction() as s:
        prog = store._program(s, program)
        lineage = set(int(a) for a in example_attempt_ids)
        if parent_id is not None:
            parent = _adapter(store, s, parent_id)
            lineage |= set(int(a) for a in parent.lineage_attempt_ids or [])
        adapter = Adapter(
            program_id=prog.id,
            job_id=job_id,
            parent_id=parent_id,
            replaces_id=replaces_id,
            domain=domain or "general",
            method=method,
            base_model=base_model,
            path="",
            status="ready",
            example_attempt_ids=sorted(set(int(a) for a in example_attempt_ids)),
            lineage_attempt_ids=sorted(lineage),
            metrics=dict(metrics or {}),
        )
        s.add(adapter)
        s.flush()
        adapter.path = place(adapter.id)
        changes: dict[str, Any] = {
            "adapter": adapter.path,
            "sources": {
                "adapter": adapter.id,
                "training_job": job_id,
                "method": method,
                "base_model": base_model,
                "parent_adapter": parent_id,
                "examples": len(adapter.example_attempt_ids),
            },
        }
        spec = serve_spec(adapter.path)
        if spec is not None:
            changes["model_spec"] = spec
        version = new_version(
            s, prog, note or f"LoRA adapter {adapter.id} ({method.upper()})", activate, **changes
        )
        if replaces_id is not None:
            _adapter(store, s, replaces_id).status = "retired"
        if job_id is not None:
            job = s.get(TrainingJob, job_id)
            if job is None or job.program_id != prog.id:
                raise StoreError(f"Training job {job_id} does not belong to program {program!r}.")
            job.status = "succeeded"
            job.result_model = adapter.path
            job.error = None
            job.finished_at = _now()
            job.metrics = dict(job.metrics or {}) | {
                "adapter": adapter.id,
                "version": version.number,
                "activated": activate,
            }
        s.flush()
        return adapter, version


def use_adapter(
    store: Store, program: str, adapter_id: int | None, *, model_spec: str | None, note: str = ""
) -> ProgramVersion:
    """Publish (and activate) a version of ``program`` that serves ``adapter_id`` (None: no adapter).

    ``model_spec`` is the spec the new version answers with. Retired adapters are refused."""
    with store.db.transaction() as s:
        prog = store._program(s, program)
        path: str | None = None
        if adapter_id is not None:
            adapter = _adapter(store, s, adapter_id)
            if adapter.program_id != prog.id:
                raise StoreError(f"Adapter {adapter_id} belongs to another program.")
            if adapter.status != "ready":
                raise StoreError(f"Adapter {adapter_id} is {adapter.status}; it cannot be switched to.")
            path = adapter.path
        changes: dict[str, Any] = {"adapter": path, "sources": {"adapter": adapter_id, "switch": True}}
        if model_spec is not None:
            changes["model_spec"] = model_spec
        default_note = (
            f"switch to adapter {adapter_id}" if adapter_id is not None else "switch to the base model"
        )
        return new_version(s, prog, note or default_note, True, **changes)


# -- reading ---------------------------------------------------------------------------------------


def get_adapter(store: Store, adapter_id: int) -> Adapter:
    with store.db.transaction() as s:
        return _adapter(store, s, adapter_id)


def list_adapters(
    store: Store, program: str | None = None, *, include_retired: bool = False
) -> list[tuple[Adapter, str]]:
    """(adapter, program name) for this user's adapters, oldest first."""
    with store.db.transaction() as s:
        query = (
            select(Adapter, Program.name)
            .join(Program, Program.id == Adapter.program_id)
            .where(Program.user_id == store.user_id)
            .order_by(Adapter.id)
        )
        if program is not None:
            query = query.where(Adapter.program_id == store._program(s, program).id)
        if not include_retired:
            query = query.where(Adapter.status != "retired")
        return [(a, name) for a, name in s.execute(query)]


def adapter_by_path(store: Store, program: str, path: str | None) -> Adapter | None:
    """The adapter of ``program`` stored at ``path`` (the newest when several share it)."""
    if not path:
        return None
    with store.db.transaction() as s:
        return s.scalar(
            select(Adapter)
            .where(Adapter.program_id == store._program(s, program).id, Adapter.path == path)
            .order_by(Adapter.id.desc())
        )


def active_adapter(store: Store, program: str) -> Adapter | None:
    """The adapter the program's active version serves, if it is one minetune trained."""
    return adapter_by_path(store, program, store.active_version(program).adapter)


def set_status(store: Store, adapter_id: int, status: str) -> Adapter:
    if status not in ADAPTER_STATUSES:
        raise StoreError(f"Unknown adapter status {status!r}; expected one of {', '.join(ADAPTER_STATUSES)}.")
    with store.db.transaction() as s:
        adapter = _adapter(store, s, adapter_id)
        adapter.status = status
        return adapter


def update_metrics(store: Store, adapter_id: int, metrics: dict[str, Any]) -> Adapter:
    with store.db.transaction() as s:
        adapter = _adapter(store, s, adapter_id)
        adapter.metrics = dict(adapter.metrics or {}) | metrics
        return adapter


def tainted_adapters(store: Store, program: str | None = None) -> list[tuple[Adapter, str]]:
    """Ready adapters whose lineage includes forgotten data, oldest first."""
    return [(a, p) for a, p in list_adapters(store, program) if a.tainted_at is not None]


@dataclass(frozen=True)
class TurnInfo:
    turn_id: int
    conversation_id: int
    created_at: datetime


def turn_info(store: Store, turn_ids: Iterable[int]) -> dict[int, TurnInfo]:
    """Conversation and creation time of each of these turns (this user's only)."""
    ids = sorted(set(turn_ids))
    if not ids:
        return {}
    with store.db.transaction() as s:
        rows = s.execute(
            select(Turn.id, Turn.conversation_id, Turn.created_at)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .join(Program, Program.id == Conversation.program_id)
            .where(Turn.id.in_(ids), Program.user_id == store.user_id)
        )
        return {t: TurnInfo(t, c, _aware(at)) for t, c, at in rows}


def turn_messages(store: Store, turn_ids: Iterable[int]) -> dict[int, str]:
    """The user message of each of these turns (this user's only)."""
    ids = sorted(set(turn_ids))
    if not ids:
        return {}
    with store.db.transaction() as s:
        rows = s.execute(
            select(Turn.id, Turn.user_message)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .join(Program, Program.id == Conversation.program_id)
            .where(Turn.id.in_(ids), Program.user_id == store.user_id)
        )
        return {t: m for t, m in rows}


def attempt_turns(store: Store, attempt_ids: Iterable[int]) -> dict[int, int]:
    """attempt id → turn id for the attempts that still exist."""
    ids = sorted(set(attempt_ids))
    if not ids:
        return {}
    with store.db.transaction() as s:
        rows = s.execute(
            select(Attempt.id, Attempt.turn_id)
            .join(Turn, Turn.id == Attempt.turn_id)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .join(Program, Program.id == Conversation.program_id)
            .where(Attempt.id.in_(ids), Program.user_id == store.user_id)
        )
        return {a: t for a, t in rows}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- forgetting ------------------------------------------------------------------------------------


@dataclass
class ForgetResult:
    """What one ``forget`` removed and what it marked."""

    conversations: int = 0
    turns: int = 0
    attempts: int = 0
    feedback: int = 0
    imports: int = 0
    tainted_adapters: list[int] = field(default_factory=list)
    retired_lessons: list[int] = field(default_factory=list)
    new_versions: dict[str, int] = field(default_factory=dict)  # program -> version without the lessons
    judges_reset: list[str] = field(default_factory=list)
    demo_links_removed: int = 0
    active_tainted: dict[str, int] = field(default_factory=dict)  # program -> tainted adapter it serves


def forget(
    store: Store,
    *,
    turn_ids: Sequence[int] = (),
    conversation_ids: Sequence[int] = (),
    before: datetime | None = None,
    everything: bool = False,
    program: str | None = None,
) -> ForgetResult:
    """Delete interactions and everything derived from them, in one transaction.

    Scope: the given turns and conversations, plus (restricted to ``program`` when given, else all
    of this user's programs) every turn created before ``before``, or every conversation when
    ``everything``. Removed with them: attempts, feedback, embeddings; demo links from other
    attempts; lessons learned from the deleted feedback (retired, in a new active version of each
    affected program); the personal judge when it had seen a deleted rating (it is rebuilt from
    what remains); and with ``everything``, the import records. Adapters whose lineage includes a
    deleted attempt are marked tainted (``minetune train --retrain-tainted`` rebuilds them).
    """
    result = ForgetResult()
    with store.db.transaction() as s:
        scope = store._program_scope(s, program)
        owned = (
            select(Turn.id, Turn.conversation_id, Conversation.program_id)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .join(Program, Program.id == Conversation.program_id)
            .where(Program.user_id == store.user_id)
        )
        turns: dict[int, tuple[int, int]] = {}
        conversations: set[int] = set()
        if turn_ids:
            found = {t: (c, p) for t, c, p in s.execute(owned.where(Turn.id.in_(list(turn_ids))))}
            missing = sorted(set(turn_ids) - set(found))
            if missing:
                raise NotFoundError(f"No turn with id {missing[0]}.")
            turns.update(found)
        if conversation_ids:
            conv_rows = s.execute(
                select(Conversation.id)
                .join(Program, Program.id == Conversation.program_id)
                .where(Conversation.id.in_(list(conversation_ids)), Program.user_id == store.user_id)
            ).all()
            missing = sorted(set(conversation_ids) - {r[0] for r in conv_rows})
            if missing:
                raise NotFoundError(f"No conversation with id {missing[0]}.")
            conversations |= set(conversation_ids)
            turns.update(
                {
                    t: (c, p)
                    for t, c, p in s.execute(owned.where(Turn.conversation_id.in_(list(conversation_ids))))
                }
            )
        if everything:
            all_convs = s.scalars(select(Conversation.id).where(Conversation.program_id.in_(scope))).all()
            conversations |= set(all_convs)
            turns.update(
                {t: (c, p) for t, c, p in s.execute(owned.where(Conversation.program_id.in_(scope)))}
            )
        elif before is not None:
            cutoff = _aware(before).astimezone(UTC)
            turns.update(
                {
                    t: (c, p)
                    for t, c, p in s.execute(
                        owned.where(Conversation.program_id.in_(scope), Turn.created_at < cutoff)
                    )
                }
            )
        turn_set = sorted(turns)
        attempt_ids: set[int] = set()
        feedback_ids: set[int] = set()
        if turn_set:
            attempt_ids = set(s.scalars(select(Attempt.id).where(Attempt.turn_id.in_(turn_set))))
        if attempt_ids:
            feedback_ids = set(
                s.scalars(select(Feedback.id).where(Feedback.attempt_id.in_(sorted(attempt_ids))))
            )
        programs = {p for _, p in turns.values()} | (set(scope) if everything else set())
        programs |= set(
            s.scalars(select(Conversation.program_id).where(Conversation.id.in_(sorted(conversations))))
        )
        names = dict(
            s.execute(select(Program.id, Program.name).where(Program.id.in_(sorted(programs)))).all()
        )

        # Adapters that learned from any deleted attempt (their own examples or an ancestor's).
        if attempt_ids:
            now = _now()
            for adapter in s.scalars(
                select(Adapter)
                .join(Program, Program.id == Adapter.program_id)
                .where(Program.user_id == store.user_id)
            ):
                hit = attempt_ids & set(adapter.lineage_attempt_ids or [])
                if hit:
                    result.tainted_adapters.append(adapter.id)
                    reason = f"trained on {len(hit)} forgotten attempt(s)"
                    if adapter.tainted_at is None:
                        adapter.tainted_at = now
                        adapter.taint_reason = reason
                    else:
                        adapter.taint_reason = f"{adapter.taint_reason}; {reason}"

        # Demo links: other attempts that showed a deleted attempt as a demo.
        if attempt_ids:
            rows = s.execute(
                select(Attempt)
                .join(Turn, Turn.id == Attempt.turn_id)
                .join(Conversation, Conversation.id == Turn.conversation_id)
                .where(Conversation.program_id.in_(sorted(programs)), Attempt.turn_id.not_in(turn_set))
            ).scalars()
            for attempt in rows:
                demos = list(attempt.demo_attempt_ids or [])
                kept = [d for d in demos if d not in attempt_ids]
                if len(kept) != len(demos):
                    result.demo_links_removed += len(demos) - len(kept)
                    attempt.demo_attempt_ids = kept

        # Lessons learned from deleted feedback: retired, and a version without them published.
        if feedback_ids:
            lessons = s.scalars(
                select(Lesson).where(
                    Lesson.feedback_id.in_(sorted(feedback_ids)),
                    Lesson.status == "active",
                    Lesson.program_id.in_(sorted(programs)),
                )
            ).all()
            by_program: dict[int, list[Lesson]] = {}
            for lesson in lessons:
                lesson.status = "retired"
                result.retired_lessons.append(lesson.id)
                by_program.setdefault(lesson.program_id, []).append(lesson)
            s.flush()
            for program_id, retired in by_program.items():
                prog = s.get(Program, program_id)
                assert prog is not None
                active = s.scalars(
                    select(Lesson)
                    .where(Lesson.program_id == program_id, Lesson.status == "active")
                    .order_by(Lesson.id)
                ).all()
                version = new_version(
                    s,
                    prog,
                    f"forgot {len(retired)} lesson(s) learned from forgotten feedback",
                    True,
                    lessons=[{"id": lesson.id, "text": lesson.text} for lesson in active],
                    sources={
                        "lessons": [lesson.id for lesson in active],
                        "forgotten_lessons": [lesson.id for lesson in retired],
                    },
                )
                result.new_versions[prog.name] = version.number

        # The personal judge is reset when it had learned from a deleted rating.
        for judge in s.scalars(select(JudgeState).where(JudgeState.program_id.in_(sorted(programs)))):
            seen = {int(a) for a in (judge.metrics or {}).get("added", {})}
            if seen & attempt_ids or everything:
                result.judges_reset.append(names.get(judge.program_id, str(judge.program_id)))
                s.delete(judge)

        result.attempts, result.feedback = len(attempt_ids), len(feedback_ids)
        result.turns = len(turn_set)
        if turn_set:
            s.execute(delete(Turn).where(Turn.id.in_(turn_set)))
        # Conversations named explicitly (or all, with everything) go too, and any left empty.
        touched = {c for c, _ in turns.values()} | conversations
        if touched:
            left = set(
                s.scalars(select(Turn.conversation_id).where(Turn.conversation_id.in_(sorted(touched))))
            )
            gone = sorted(conversations | (touched - left))
            if gone:
                s.execute(delete(Conversation).where(Conversation.id.in_(gone)))
            result.conversations = len(gone)
        if everything:
            result.imports = len(
                s.scalars(select(ImportRecord.id).where(ImportRecord.program_id.in_(scope))).all()
            )
            s.execute(delete(ImportRecord).where(ImportRecord.program_id.in_(scope)))

        # Which programs now answer with a tainted adapter.
        for program_id in programs:
            prog = s.get(Program, program_id)
            if prog is None:
                continue
            serving = s.get(ProgramVersion, prog.active_version_id)
            if serving is None or not serving.adapter:
                continue
            tainted = s.scalar(
                select(Adapter.id).where(
                    Adapter.program_id == program_id,
                    Adapter.path == serving.adapter,
                    Adapter.tainted_at.is_not(None),
                )
            )
            if tainted is not None:
                result.active_tainted[prog.name] = tainted
        result.tainted_adapters.sort()
    return result

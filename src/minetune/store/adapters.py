"""Store helpers for LoRA adapters: publishing a trained adapter as a program version, listing and
switching adapters, and lineage queries. Forgetting (which taints the adapters that learned from
forgotten data) is :mod:`minetune.app.forget`, with its data access in :mod:`minetune.store.forget`.

Plain repository functions over a :class:`~minetune.store.repo.Store`, scoped to its user; each
runs in one transaction and has committed when it returns. Deciding *what* to train, keep or
retrain is the job of :mod:`minetune.train`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from minetune.errors import NotFoundError, StoreError
from minetune.store.repo import Store, new_version
from minetune.store.schema import (
    ADAPTER_STATUSES,
    Adapter,
    Attempt,
    Conversation,
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
        prog = store.program_row(s, program)
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
        prog = store.program_row(s, program)
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
            query = query.where(Adapter.program_id == store.program_row(s, program).id)
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
            .where(Adapter.program_id == store.program_row(s, program).id, Adapter.path == path)
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

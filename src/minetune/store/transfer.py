"""Moving one program between stores: its rows as plain records with bundle-local ids, and back.

:func:`dump_program` reads a program (versions, lessons, conversations with turns, attempts and
feedback, turn embeddings, and the records of its LoRA adapters with their lineage) in one
transaction and renumbers every row 1..n per table, in the order of the original ids, so a dump
never shows the exporting store's ids and the relative order of rows (which decides "the latest
rating wins") survives. :func:`load_program` writes such records as a new program in ONE
transaction: any error leaves the store unchanged.

Ids that sit inside JSON fields (a version's lesson snapshot, ``sources`` and pinned demos; an
attempt's demo ids; an adapter's example and lineage attempt ids) are renumbered too; see
:data:`VERSION_ID_REFS`. A reference to a row that is not part of the program (for example a
deleted attempt) becomes ``None`` or is dropped from its list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from minetune.errors import NotFoundError, StoreError
from minetune.store.repo import Store
from minetune.store.schema import (
    COMPLETE,
    Adapter,
    Attempt,
    Conversation,
    Feedback,
    ImportRecord,
    Lesson,
    Program,
    ProgramVersion,
    Turn,
    TurnEmbedding,
)

# Keys of a version's ``sources`` that hold row ids, and which table they point into.
# ``lessons`` holds the active lesson ids (Store.change_lessons), ``feedback_id`` the critique a
# lesson came from, ``trainset_attempt_ids`` a DSPy trainset, ``conversation_ids`` a bootstrap,
# ``adapter`` and ``parent_adapter`` the adapter a version serves and the one it continued.
VERSION_ID_REFS: dict[str, str] = {
    "lessons": "lessons",
    "feedback_id": "feedback",
    "trainset_attempt_ids": "attempts",
    "conversation_ids": "conversations",
    "adapter": "adapters",
    "parent_adapter": "adapters",
}

TABLES = ("versions", "lessons", "conversations", "turns", "attempts", "feedback", "adapters")


@dataclass
class EmbeddingRecord:
    """One turn's stored message embedding (raw little-endian float32 bytes)."""

    turn: int
    model: str
    dim: int
    vector: bytes


@dataclass
class ProgramDump:
    """A program as plain, JSON-ready records whose ids are local to the dump (1..n per table)."""

    program: dict[str, Any]
    versions: list[dict[str, Any]]
    active_version: int
    lessons: list[dict[str, Any]]
    conversations: list[dict[str, Any]]
    embeddings: list[EmbeddingRecord] = field(default_factory=list)
    adapters: list[dict[str, Any]] = field(default_factory=list)  # adapter records with lineage

    def counts(self) -> dict[str, int]:
        turns = [t for c in self.conversations for t in c["turns"]]
        attempts = [a for t in turns for a in t["attempts"]]
        return {
            "versions": len(self.versions),
            "lessons": len(self.lessons),
            "conversations": len(self.conversations),
            "turns": len(turns),
            "attempts": len(attempts),
            "feedback": sum(len(a["feedback"]) for a in attempts),
            "embeddings": len(self.embeddings),
            "adapter_records": len(self.adapters),
        }


@dataclass
class LoadResult:
    """What :func:`load_program` created."""

    program: str
    program_id: int
    active_version: int  # the number of the version that is active after the load
    counts: dict[str, int]
    id_maps: dict[str, dict[int, int]]  # table -> {dump id: new row id}


# -- timestamps ------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were written as UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _when(value: Any, where: str) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if not isinstance(value, str):
        raise StoreError(f"{where}: created_at must be an ISO 8601 string, got {value!r}.")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise StoreError(f"{where}: {value!r} is not an ISO 8601 timestamp.") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- renumbering ids inside JSON fields ------------------------------------------------------------


def _map_one(value: Any, mapping: dict[int, int]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return mapping.get(value)


def _map_list(values: Any, mapping: dict[int, int]) -> list[int]:
    if not isinstance(values, list):
        return []
    mapped = (_map_one(v, mapping) for v in values)
    return [v for v in mapped if v is not None]


def remap_version_refs(version: dict[str, Any], maps: dict[str, dict[int, int]]) -> dict[str, Any]:
    """A copy of a version's ``lessons``, ``demo_policy`` and ``sources`` with the ids inside them
    translated through ``maps`` (table -> {old id: new id}); unknown ids become None / are dropped."""
    lessons = []
    for item in version.get("lessons") or []:
        if isinstance(item, dict) and "id" in item:
            item = dict(item) | {"id": _map_one(item["id"], maps["lessons"])}
        lessons.append(item)
    policy = dict(version.get("demo_policy") or {})
    if isinstance(policy.get("pinned"), list):
        policy["pinned"] = [
            dict(p) | {"attempt_id": _map_one(p["attempt_id"], maps["attempts"])}
            if isinstance(p, dict) and "attempt_id" in p
            else p
            for p in policy["pinned"]
        ]
    sources = dict(version.get("sources") or {})
    for key, table in VERSION_ID_REFS.items():
        if key in sources:
            value = sources[key]
            sources[key] = (
                _map_list(value, maps[table]) if isinstance(value, list) else _map_one(value, maps[table])
            )
    return version | {"lessons": lessons, "demo_policy": policy, "sources": sources}


def _local_ids(ids: Iterable[int]) -> dict[int, int]:
    """Store id -> 1..n in the order of the store ids."""
    return {old: new for new, old in enumerate(sorted(ids), start=1)}


def program_exists(store: Store, name: str) -> bool:
    """Whether ``store``'s user has a program called ``name`` (creates nothing, unlike Store.program)."""
    with store.db.transaction() as s:
        query = select(Program.id).where(Program.user_id == store.user_id, Program.name == name.strip())
        return s.scalar(query) is not None


# -- reading -------------------------------------------------------------------------------------------


def dump_program(store: Store, name: str) -> ProgramDump:
    """Everything of one program of ``store``'s user, read in one transaction, with local ids."""
    with store.db.transaction() as s:
        prog = s.scalar(select(Program).where(Program.user_id == store.user_id, Program.name == name))
        if prog is None:
            raise NotFoundError(f"No program named {name!r}. See `minetune program list`.")
        versions = list(s.scalars(select(ProgramVersion).where(ProgramVersion.program_id == prog.id)))
        lessons = list(s.scalars(select(Lesson).where(Lesson.program_id == prog.id)))
        convs = list(s.scalars(select(Conversation).where(Conversation.program_id == prog.id)))
        conv_ids = [c.id for c in convs]
        turns = list(s.scalars(select(Turn).where(Turn.conversation_id.in_(conv_ids)))) if convs else []
        turn_ids = [t.id for t in turns]
        # Only complete attempts are answers; a half answer (streaming, interrupted) stays behind.
        attempts = (
            list(s.scalars(select(Attempt).where(Attempt.turn_id.in_(turn_ids), Attempt.status == COMPLETE)))
            if turns
            else []
        )
        attempt_ids = [a.id for a in attempts]
        feedback = (
            list(s.scalars(select(Feedback).where(Feedback.attempt_id.in_(attempt_ids)))) if attempts else []
        )
        embeddings = (
            list(s.scalars(select(TurnEmbedding).where(TurnEmbedding.turn_id.in_(turn_ids)))) if turns else []
        )
        adapters = list(s.scalars(select(Adapter).where(Adapter.program_id == prog.id)))
        maps = {
            "versions": _local_ids(v.id for v in versions),
            "lessons": _local_ids(x.id for x in lessons),
            "conversations": _local_ids(conv_ids),
            "turns": _local_ids(turn_ids),
            "attempts": _local_ids(attempt_ids),
            "feedback": _local_ids(f.id for f in feedback),
            "adapters": _local_ids(a.id for a in adapters),
        }
        version_records = [
            remap_version_refs(
                {
                    "id": maps["versions"][v.id],
                    "number": v.number,
                    "parent": maps["versions"].get(v.parent_id) if v.parent_id else None,
                    "instructions": v.instructions,
                    "lessons": list(v.lessons or []),
                    "demo_policy": dict(v.demo_policy or {}),
                    "model_spec": v.model_spec,
                    "adapter": v.adapter,
                    "note": v.note,
                    "sources": dict(v.sources or {}),
                    "created_at": _iso(v.created_at),
                },
                maps,
            )
            for v in sorted(versions, key=lambda v: v.id)
        ]
        lesson_records = [
            {
                "id": maps["lessons"][x.id],
                "text": x.text,
                "status": x.status,
                "origin": x.origin,
                "feedback": maps["feedback"].get(x.feedback_id) if x.feedback_id else None,
                "superseded_by": maps["lessons"].get(x.superseded_by_id) if x.superseded_by_id else None,
                "created_at": _iso(x.created_at),
                "updated_at": _iso(x.updated_at),
            }
            for x in sorted(lessons, key=lambda x: x.id)
        ]
        fb_by_attempt: dict[int, list[dict[str, Any]]] = {}
        for f in sorted(feedback, key=lambda f: f.id):
            fb_by_attempt.setdefault(f.attempt_id, []).append(
                {
                    "id": maps["feedback"][f.id],
                    "kind": f.kind,
                    "stars": f.stars,
                    "critique": f.critique,
                    "text": f.text,
                    "created_at": _iso(f.created_at),
                }
            )
        at_by_turn: dict[int, list[dict[str, Any]]] = {}
        for a in sorted(attempts, key=lambda a: a.id):
            at_by_turn.setdefault(a.turn_id, []).append(
                {
                    "id": maps["attempts"][a.id],
                    "number": a.number,
                    "version": maps["versions"].get(a.version_id) if a.version_id else None,
                    "model_spec": a.model_spec,
                    "messages": a.messages,
                    "response": a.response,
                    "critique_used": a.critique_used,
                    "latency_ms": a.latency_ms,
                    "prompt_tokens": a.prompt_tokens,
                    "completion_tokens": a.completion_tokens,
                    "demos": _map_list(list(a.demo_attempt_ids or []), maps["attempts"]),
                    "created_at": _iso(a.created_at),
                    "feedback": fb_by_attempt.get(a.id, []),
                }
            )
        turns_by_conv: dict[int, list[dict[str, Any]]] = {}
        for t in sorted(turns, key=lambda t: t.id):
            turns_by_conv.setdefault(t.conversation_id, []).append(
                {
                    "id": maps["turns"][t.id],
                    "index": t.index,
                    "user_message": t.user_message,
                    "attempts_to_5": t.attempts_to_5,
                    "created_at": _iso(t.created_at),
                    "attempts": at_by_turn.get(t.id, []),
                }
            )
        conversation_records = [
            {
                "id": maps["conversations"][c.id],
                "title": c.title,
                "source": c.source,
                "external_id": c.external_id,
                "created_at": _iso(c.created_at),
                "turns": turns_by_conv.get(c.id, []),
            }
            for c in sorted(convs, key=lambda c: c.id)
        ]
        adapter_records = [
            {
                "id": maps["adapters"][a.id],
                "parent": maps["adapters"].get(a.parent_id) if a.parent_id else None,
                "replaces": maps["adapters"].get(a.replaces_id) if a.replaces_id else None,
                "domain": a.domain,
                "method": a.method,
                "base_model": a.base_model,
                "path": a.path,
                "status": a.status,
                "examples": _map_list(list(a.example_attempt_ids or []), maps["attempts"]),
                "lineage": _map_list(list(a.lineage_attempt_ids or []), maps["attempts"]),
                "metrics": dict(a.metrics or {}),
                "tainted_at": _iso(a.tainted_at),
                "taint_reason": a.taint_reason,
                "created_at": _iso(a.created_at),
            }
            for a in sorted(adapters, key=lambda a: a.id)
        ]
        embedding_records = [
            EmbeddingRecord(maps["turns"][e.turn_id], e.model, e.dim, bytes(e.vector))
            for e in sorted(embeddings, key=lambda e: e.turn_id)
        ]
        assert prog.active_version_id is not None
        return ProgramDump(
            program={"name": prog.name, "description": prog.description, "created_at": _iso(prog.created_at)},
            versions=version_records,
            active_version=maps["versions"][prog.active_version_id],
            lessons=lesson_records,
            conversations=conversation_records,
            embeddings=embedding_records,
            adapters=adapter_records,
        )


# -- writing ---------------------------------------------------------------------------------------------


def _ref(mapping: dict[int, int], value: Any, what: str, where: str) -> int | None:
    """The new id for a dump reference; a reference to a row the dump lacks is an error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in mapping:
        raise StoreError(f"{where} refers to {what} {value!r}, which is not in the bundle.")
    return mapping[value]


def _unique_id(seen: dict[int, Any], value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"A {what} has id {value!r}; ids must be integers.")
    if value in seen:
        raise StoreError(f"Two {what} records share the id {value}.")
    return value


def _insert(s: Session, mapping: dict[int, int], rows: list[Any]) -> None:
    """Insert ``rows`` (in order) and fill ``mapping``'s placeholders, in key order, with their ids."""
    if not rows:
        return
    s.add_all(rows)
    s.flush()
    for local, row in zip(sorted(mapping), rows, strict=True):
        mapping[local] = row.id


def _attempt_refs(maps: dict[str, dict[int, int]], values: Any, where: str) -> list[int]:
    found = [_ref(maps["attempts"], value, "attempt", where) for value in values or []]
    return sorted(a for a in found if a is not None)


def load_program(
    store: Store,
    dump: ProgramDump,
    name: str,
    *,
    model_spec: str | None = None,
    import_record: dict[str, Any] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> LoadResult:
    """Create program ``name`` from ``dump`` in one transaction (nothing is written on error).

    ``model_spec`` adds one more version on top of the dump's active version, with that model
    spec, and activates it. ``import_record`` ({"sha256", "path", "format"}) is stored as the
    program's import record. ``before_commit`` runs last inside the transaction; if it raises,
    everything is rolled back.
    """
    name = name.strip()
    if not name:
        raise StoreError("A program needs a name.")
    try:
        with store.db.transaction() as s:
            result = _load(s, store.user_id, dump, name, model_spec, import_record)
            if before_commit is not None:
                before_commit()
            return result
    except (KeyError, TypeError, ValueError) as exc:  # records that skipped validation
        raise StoreError(f"The records to import are malformed (nothing was written): {exc!r}") from exc
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreError(f"The database rejected the import (nothing was written): {detail}") from exc


def _load(
    s: Session,
    user_id: int,
    dump: ProgramDump,
    name: str,
    model_spec: str | None,
    import_record: dict[str, Any] | None,
) -> LoadResult:
    exists = s.scalar(select(Program.id).where(Program.user_id == user_id, Program.name == name))
    if exists is not None:
        raise StoreError(
            f"A program named {name!r} already exists; import under another name with --as NEW_NAME."
        )
    prog = Program(
        user_id=user_id,
        name=name,
        description=str(dump.program.get("description") or ""),
        created_at=_when(dump.program.get("created_at"), "program"),
    )
    s.add(prog)
    s.flush()
    maps: dict[str, dict[int, int]] = {t: {} for t in TABLES}

    # Conversations, turns, attempts and feedback, each table added in the dump's id order and
    # flushed at once, so the new ids keep the original relative order (which decides "the latest
    # rating wins"). Attempts get their version links once the versions exist.
    convs = sorted(dump.conversations, key=lambda c: c["id"])
    conv_rows = []
    for c in convs:
        local = _unique_id(maps["conversations"], c["id"], "conversation")
        maps["conversations"][local] = 0
        conv_rows.append(
            Conversation(
                program_id=prog.id,
                title=c.get("title") or "",
                source=c.get("source") or "chat",
                external_id=c.get("external_id"),
                created_at=_when(c.get("created_at"), f"conversation {local}"),
            )
        )
    _insert(s, maps["conversations"], conv_rows)
    turns = sorted(((c["id"], t) for c in convs for t in c["turns"]), key=lambda ct: ct[1]["id"])
    turn_rows = []
    for conv_local, t in turns:
        local = _unique_id(maps["turns"], t["id"], "turn")
        maps["turns"][local] = 0
        turn_rows.append(
            Turn(
                conversation_id=maps["conversations"][conv_local],
                index=t["index"],
                user_message=t["user_message"],
                attempts_to_5=t.get("attempts_to_5"),
                created_at=_when(t.get("created_at"), f"turn {local}"),
            )
        )
    _insert(s, maps["turns"], turn_rows)
    attempts = sorted(((t["id"], a) for _, t in turns for a in t["attempts"]), key=lambda ta: ta[1]["id"])
    attempt_rows: list[Attempt] = []
    for turn_local, a in attempts:
        local = _unique_id(maps["attempts"], a["id"], "attempt")
        maps["attempts"][local] = 0
        attempt_rows.append(
            Attempt(
                turn_id=maps["turns"][turn_local],
                number=a["number"],
                version_id=None,
                model_spec=a["model_spec"],
                messages=a["messages"],
                response=a["response"],
                critique_used=a.get("critique_used"),
                latency_ms=a.get("latency_ms") or 0.0,
                prompt_tokens=a.get("prompt_tokens"),
                completion_tokens=a.get("completion_tokens"),
                demo_attempt_ids=[],
                created_at=_when(a.get("created_at"), f"attempt {local}"),
            )
        )
    _insert(s, maps["attempts"], attempt_rows)
    feedback = sorted(((a["id"], f) for _, a in attempts for f in a["feedback"]), key=lambda af: af[1]["id"])
    fb_rows = []
    for attempt_local, f in feedback:
        local = _unique_id(maps["feedback"], f["id"], "feedback")
        maps["feedback"][local] = 0
        fb_rows.append(
            Feedback(
                attempt_id=maps["attempts"][attempt_local],
                kind=f["kind"],
                stars=f.get("stars"),
                critique=f.get("critique"),
                text=f.get("text"),
                created_at=_when(f.get("created_at"), f"feedback {local}"),
            )
        )
    _insert(s, maps["feedback"], fb_rows)
    for (_, a), attempt in zip(attempts, attempt_rows, strict=True):
        attempt.demo_attempt_ids = [
            _ref(maps["attempts"], d, "attempt", f"The demos of attempt {a['id']}")
            for d in a.get("demos") or []
        ]

    # Lessons (superseded_by links point at other lessons: set once all exist).
    lessons = sorted(dump.lessons, key=lambda x: x["id"])
    lesson_rows: list[Lesson] = []
    for x in lessons:
        local = _unique_id(maps["lessons"], x["id"], "lesson")
        maps["lessons"][local] = 0
        lesson_rows.append(
            Lesson(
                program_id=prog.id,
                text=x["text"],
                status=x.get("status") or "active",
                origin=x.get("origin") or "manual",
                feedback_id=_ref(maps["feedback"], x.get("feedback"), "feedback", f"Lesson {local}"),
                created_at=_when(x.get("created_at"), f"lesson {local}"),
                updated_at=_when(x.get("updated_at") or x.get("created_at"), f"lesson {local}"),
            )
        )
    _insert(s, maps["lessons"], lesson_rows)
    for x, lesson in zip(lessons, lesson_rows, strict=True):
        newer = _ref(maps["lessons"], x.get("superseded_by"), "lesson", f"Lesson {x['id']}")
        if newer is not None:  # updated_at given explicitly, so its on-update default keeps out
            s.execute(
                update(Lesson)
                .where(Lesson.id == lesson.id)
                .values(superseded_by_id=newer, updated_at=lesson.updated_at)
            )

    # Adapters (their parent/replaces links point at other adapters: set once all exist). Before
    # the versions, whose ``sources`` name the adapter they serve.
    records = sorted(dump.adapters, key=lambda r: r["id"])
    adapter_rows: list[Adapter] = []
    for r in records:
        local = _unique_id(maps["adapters"], r["id"], "adapter")
        maps["adapters"][local] = 0
        where = f"Adapter {local}"
        adapter_rows.append(
            Adapter(
                program_id=prog.id,
                job_id=None,  # training jobs do not travel
                domain=r.get("domain") or "general",
                method=r["method"],
                base_model=r["base_model"],
                path=r["path"],
                status=r.get("status") or "ready",
                example_attempt_ids=_attempt_refs(maps, r.get("examples"), f"{where}'s examples"),
                lineage_attempt_ids=_attempt_refs(maps, r.get("lineage"), f"{where}'s lineage"),
                metrics=dict(r.get("metrics") or {}),
                tainted_at=_when(r["tainted_at"], where) if r.get("tainted_at") else None,
                taint_reason=r.get("taint_reason"),
                created_at=_when(r.get("created_at"), where),
            )
        )
    _insert(s, maps["adapters"], adapter_rows)
    for r, row in zip(records, adapter_rows, strict=True):
        row.parent_id = _ref(maps["adapters"], r.get("parent"), "adapter", f"Adapter {r['id']}")
        row.replaces_id = _ref(maps["adapters"], r.get("replaces"), "adapter", f"Adapter {r['id']}")

    # Versions, parents before children; each is written once, complete (versions are immutable).
    pending: dict[int, dict[str, Any]] = {}
    for v in dump.versions:
        pending[_unique_id(pending, v["id"], "version")] = v
    numbers: dict[int, int] = {}
    while pending:
        ready = sorted(
            (v for v in pending.values() if v.get("parent") is None or v["parent"] in maps["versions"]),
            key=lambda v: v["id"],
        )
        if not ready:
            missing = sorted(pending)[0]
            raise StoreError(
                f"Version {missing} has a parent that is not in the bundle, or versions form a cycle."
            )
        for v in ready:
            fields = remap_version_refs(v, maps)
            version = ProgramVersion(
                program_id=prog.id,
                number=v["number"],
                parent_id=maps["versions"][v["parent"]] if v.get("parent") is not None else None,
                instructions=v.get("instructions") or "",
                lessons=fields["lessons"],
                demo_policy=fields["demo_policy"],
                model_spec=v.get("model_spec"),
                adapter=v.get("adapter"),
                note=v.get("note") or "",
                sources=fields["sources"],
                created_at=_when(v.get("created_at"), f"version {v['id']}"),
            )
            s.add(version)
            s.flush()
            maps["versions"][v["id"]] = version.id
            numbers[version.id] = version.number
            del pending[v["id"]]
    for (_, a), attempt in zip(attempts, attempt_rows, strict=True):
        attempt.version_id = _ref(maps["versions"], a.get("version"), "version", f"Attempt {a['id']}")
    active_id = _ref(maps["versions"], dump.active_version, "version", "The active version")
    if active_id is None:
        raise StoreError("The bundle names no active version.")
    prog.active_version_id = active_id

    if model_spec is not None:
        parent = s.get(ProgramVersion, active_id)
        assert parent is not None
        latest = s.scalar(select(func.max(ProgramVersion.number)).where(ProgramVersion.program_id == prog.id))
        version = ProgramVersion(
            program_id=prog.id,
            number=(latest or 0) + 1,
            parent_id=parent.id,
            instructions=parent.instructions,
            lessons=list(parent.lessons or []),
            demo_policy=dict(parent.demo_policy or {}),
            model_spec=model_spec,
            adapter=parent.adapter,
            note=f"imported with model {model_spec}",
            sources={
                "lessons": [x["id"] for x in parent.lessons or [] if isinstance(x, dict) and "id" in x],
                "imported_from_version": parent.number,
                "previous_model_spec": parent.model_spec,
            },
        )
        s.add(version)
        s.flush()
        prog.active_version_id = version.id
        numbers[version.id] = version.number

    for e in dump.embeddings:
        turn_id = _ref(maps["turns"], e.turn, "turn", "An embedding")
        s.add(TurnEmbedding(turn_id=turn_id, model=e.model, dim=e.dim, vector=e.vector))
    counts = dump.counts()
    if import_record is not None:
        s.add(ImportRecord(program_id=prog.id, counts=counts, **import_record))
    s.flush()
    assert prog.active_version_id is not None
    return LoadResult(
        program=name,
        program_id=prog.id,
        active_version=numbers[prog.active_version_id],
        counts=counts,
        id_maps=maps,
    )

"""Repository functions: every read and write of the store goes through :class:`Store`.

A ``Store`` is bound to one user; every query is scoped to that user's programs. Each method
runs in its own transaction and has committed when it returns. Returned rows are detached ORM
objects: read them, don't modify them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from minetune.config import Settings
from minetune.errors import NotFoundError, StoreError
from minetune.files import private_home
from minetune.store import DEFAULT_PROGRAM, DEFAULT_USER
from minetune.store.db import Database, open_engine
from minetune.store.schema import (
    COMPLETE,
    FEEDBACK_KINDS,
    Attempt,
    Base,
    Conversation,
    Feedback,
    JudgeState,
    Lesson,
    Program,
    ProgramVersion,
    Turn,
    TurnEmbedding,
    User,
)
from minetune.store.stats import effective_ratings as effective_ratings  # re-exported
from minetune.store.stats import program_stats
from minetune.store.text import check_name, has_controls

DEFAULT_INSTRUCTIONS = "You are a helpful assistant."

_VERSION_FIELDS = ("instructions", "lessons", "demo_policy", "model_spec", "adapter", "sources")


@dataclass(frozen=True)
class Capture:
    """A praised exchange with everything that produced it (seed 003's capture)."""

    captured_at: Any
    praise: str
    user_message: str
    system_prompt: str
    response: str
    metadata: dict[str, Any]


class Store:
    """The user's store: programs, versions, conversations, turns, attempts and feedback."""

    def __init__(self, db: Database, user: str = DEFAULT_USER) -> None:
        self.db = db
        self.user_name = check_name(user, "A user name")
        self.user_id = self._ensure_user(user)

    @classmethod
    def open(cls, settings: Settings, user: str = DEFAULT_USER) -> Store:
        """Open (creating and migrating as needed) the database the settings point at. The home
        folder is made private first (0700, its files 0600: an existing install is fixed here)."""
        private_home(settings.home)
        return cls(Database(open_engine(settings.resolved_database_url)), user)

    def close(self) -> None:
        self.db.close()

    # -- users and programs -------------------------------------------------------------

    def _ensure_user(self, name: str) -> int:
        with self.db.transaction() as s:
            user_id = s.scalar(select(User.id).where(User.name == name))
            if user_id is None:
                try:
                    with s.begin_nested():  # another process may create the same user meanwhile
                        user = User(name=name)
                        s.add(user)
                    user_id = user.id
                except IntegrityError:
                    user_id = s.scalars(select(User.id).where(User.name == name)).one()
            return user_id

    def program_row(self, s: Session, name: str) -> Program:
        """This user's program ``name`` inside the caller's transaction (``default`` is created on
        first use); NotFoundError for another name that does not exist. For store modules."""
        if has_controls(name):  # no stored name has one (and PostgreSQL refuses NUL in a query)
            raise NotFoundError(f"No program named {name!r}. See `minetune program list`.")
        query = select(Program).where(Program.user_id == self.user_id, Program.name == name)
        program = s.scalar(query)
        if program is None:
            if name != DEFAULT_PROGRAM:
                raise NotFoundError(f"No program named {name!r}. See `minetune program list`.")
            try:
                with s.begin_nested():  # two first requests may both create the default program
                    program = self._create_program(s, DEFAULT_PROGRAM, DEFAULT_INSTRUCTIONS, None, "")
            except IntegrityError:
                program = s.scalars(query).one()
        return program

    def _create_program(
        self, s: Session, name: str, instructions: str, model_spec: str | None, description: str
    ) -> Program:
        program = Program(user_id=self.user_id, name=name, description=description)
        s.add(program)
        s.flush()
        version = ProgramVersion(
            program_id=program.id,
            number=1,
            instructions=instructions,
            lessons=[],
            demo_policy={},
            model_spec=model_spec,
            note="created",
        )
        s.add(version)
        s.flush()
        program.active_version_id = version.id
        return program

    def create_program(
        self,
        name: str,
        instructions: str = DEFAULT_INSTRUCTIONS,
        model_spec: str | None = None,
        description: str = "",
    ) -> Program:
        """Create a program with version 1 active."""
        name = check_name(name.strip(), "A program name")
        if not name:
            raise StoreError("A program needs a name.")
        with self.db.transaction() as s:
            exists = s.scalar(select(Program.id).where(Program.user_id == self.user_id, Program.name == name))
            if exists is not None:
                raise StoreError(f"A program named {name!r} already exists.")
            return self._create_program(s, name, instructions, model_spec, description)

    def program(self, name: str = DEFAULT_PROGRAM) -> Program:
        """The named program; ``default`` is created on first use."""
        with self.db.transaction() as s:
            return self.program_row(s, name)

    def programs(self) -> list[Program]:
        with self.db.transaction() as s:
            self.program_row(s, DEFAULT_PROGRAM)
            return list(
                s.scalars(select(Program).where(Program.user_id == self.user_id).order_by(Program.id))
            )

    # -- versions ------------------------------------------------------------------------

    def versions(self, program: str = DEFAULT_PROGRAM) -> list[ProgramVersion]:
        with self.db.transaction() as s:
            prog = self.program_row(s, program)
            query = select(ProgramVersion).where(ProgramVersion.program_id == prog.id)
            return list(s.scalars(query.order_by(ProgramVersion.number)))

    def _version(self, s: Session, program: Program, number: int) -> ProgramVersion:
        version = s.scalar(
            select(ProgramVersion).where(
                ProgramVersion.program_id == program.id, ProgramVersion.number == number
            )
        )
        if version is None:
            raise NotFoundError(f"Program {program.name!r} has no version {number}.")
        return version

    def active_version(self, program: str = DEFAULT_PROGRAM) -> ProgramVersion:
        with self.db.transaction() as s:
            prog = self.program_row(s, program)
            version = s.get(ProgramVersion, prog.active_version_id)
            assert version is not None
            return version

    def version(self, program: str, number: int) -> ProgramVersion:
        with self.db.transaction() as s:
            return self._version(s, self.program_row(s, program), number)

    def add_version(
        self, program: str = DEFAULT_PROGRAM, *, note: str = "", activate: bool = True, **changes: Any
    ) -> ProgramVersion:
        """A new version copied from the active one with ``changes`` applied (versions are immutable)."""
        with self.db.transaction() as s:
            return new_version(s, self.program_row(s, program), note, activate, **changes)

    def activate(self, program: str, number: int) -> ProgramVersion:
        with self.db.transaction() as s:
            prog = self.program_row(s, program)
            version = self._version(s, prog, number)
            prog.active_version_id = version.id
            return version

    def rollback(self, program: str = DEFAULT_PROGRAM) -> ProgramVersion:
        """Activate the parent of the active version."""
        with self.db.transaction() as s:
            prog = self.program_row(s, program)
            active = s.get(ProgramVersion, prog.active_version_id)
            assert active is not None
            if active.parent_id is None:
                raise StoreError(
                    f"Version {active.number} of {program!r} has no earlier version to roll back to."
                )
            parent = s.get(ProgramVersion, active.parent_id)
            assert parent is not None
            prog.active_version_id = parent.id
            return parent

    # -- conversations, turns, attempts, feedback -----------------------------------------

    def start_conversation(
        self, program: str = DEFAULT_PROGRAM, title: str = "", source: str = "chat"
    ) -> Conversation:
        with self.db.transaction() as s:
            conv = Conversation(program_id=self.program_row(s, program).id, title=title[:500], source=source)
            s.add(conv)
            s.flush()
            return conv

    def owned_row(self, s: Session, model: type[Any], row_id: int) -> Any:
        """Load a conversation/turn/attempt/feedback row only if it belongs to this user (else
        NotFoundError), inside the caller's transaction. For store modules."""
        query = select(model).join(Program, Program.user_id == self.user_id)
        if model is Conversation:
            query = query.where(Conversation.program_id == Program.id)
        else:
            query = query.join(Conversation, Conversation.program_id == Program.id)
            if model is Turn:
                query = query.where(Turn.conversation_id == Conversation.id)
            else:
                query = query.join(Turn, Turn.conversation_id == Conversation.id)
                query = (
                    query.where(Attempt.turn_id == Turn.id)
                    if model is Attempt
                    else query.join(Attempt, Attempt.turn_id == Turn.id).where(
                        Feedback.attempt_id == Attempt.id
                    )
                )
        row = s.scalar(query.where(model.id == row_id))
        if row is None:
            raise NotFoundError(f"No {model.__tablename__[:-1]} with id {row_id}.")
        return row

    def add_turn(self, conversation_id: int, user_message: str) -> Turn:
        with self.db.transaction() as s:
            conv = self.owned_row(s, Conversation, conversation_id)
            turn = Turn(conversation_id=conv.id, index=next_turn_index(s, conv.id), user_message=user_message)
            s.add(turn)
            s.flush()
            return turn

    def add_attempt(self, turn_id: int, **fields: Any) -> Attempt:
        """Store one attempt; ``number`` is assigned in order within the turn."""
        with self.db.transaction() as s:
            turn = self.owned_row(s, Turn, turn_id)
            attempt = Attempt(turn_id=turn.id, number=next_attempt_number(s, turn.id), **fields)
            s.add(attempt)
            s.flush()
            return attempt

    def attempt(self, attempt_id: int) -> Attempt:
        with self.db.transaction() as s:
            attempt = self.owned_row(s, Attempt, attempt_id)
            s.refresh(attempt, ["feedback"])
            return attempt

    def turn(self, turn_id: int) -> Turn:
        with self.db.transaction() as s:
            return s.scalars(
                select(Turn)
                .options(selectinload(Turn.attempts).selectinload(Attempt.feedback))
                .where(Turn.id == self.owned_row(s, Turn, turn_id).id)
            ).one()

    def add_feedback(
        self,
        attempt_id: int,
        kind: str,
        stars: int | None = None,
        critique: str | None = None,
        text: str | None = None,
    ) -> Feedback:
        """Record feedback on an attempt; committed when this returns.

        The first 5-star feedback on a turn fixes its attempts-to-5 count.
        """
        if kind not in FEEDBACK_KINDS:
            raise StoreError(f"Unknown feedback kind {kind!r}; expected one of {', '.join(FEEDBACK_KINDS)}.")
        if stars is not None and not (isinstance(stars, int) and 1 <= stars <= 5):
            raise StoreError(f"Stars must be a whole number from 1 to 5, got {stars!r}.")
        try:
            with self.db.transaction() as s:
                attempt = self.owned_row(s, Attempt, attempt_id)
                fb = Feedback(attempt_id=attempt.id, kind=kind, stars=stars, critique=critique, text=text)
                s.add(fb)
                if stars == 5:
                    turn = s.get(Turn, attempt.turn_id)
                    assert turn is not None
                    if turn.attempts_to_5 is None or turn.attempts_to_5 > attempt.number:
                        turn.attempts_to_5 = attempt.number
                s.flush()
                return fb
        except IntegrityError as exc:
            raise StoreError(f"Feedback rejected by the database: {exc.orig}") from exc

    def history(self, conversation_id: int, before_turn: int | None = None) -> list[tuple[str, str]]:
        """(user message, last complete response) for each answered turn of a conversation (for a
        branch: its parent's turns before the fork, then its own), in order; a turn whose every
        attempt is unfinished (streaming, interrupted) is left out."""
        from minetune.store.branches import chain_turns

        with self.db.transaction() as s:
            conv = self.owned_row(s, Conversation, conversation_id)
            pairs = []
            for turn in chain_turns(s, conv):  # a branch's history starts with its parent's turns
                if before_turn is not None and turn.id == before_turn:
                    break
                answers = [a for a in turn.attempts if a.status == COMPLETE]
                if answers:
                    pairs.append((turn.user_message, answers[-1].response))
            return pairs

    # -- reading -------------------------------------------------------------------------

    def program_ids(self, s: Session, program: str | None) -> list[int]:
        """Ids of the program named (None: all of this user's programs) in the caller's transaction."""
        if program is None:
            return list(s.scalars(select(Program.id).where(Program.user_id == self.user_id)))
        return [self.program_row(s, program).id]

    def stats(self, program: str | None = None) -> dict[str, Any]:
        """Counts, the star histogram (each attempt's effective rating), and attempts-to-5 stars."""
        with self.db.transaction() as s:
            return program_stats(s.connection(), self.program_ids(s, program), program)

    def captures(self, program: str | None = None) -> list[Capture]:
        """Every praised attempt with the exact prompt that produced it, oldest first."""
        with self.db.transaction() as s:
            ids = self.program_ids(s, program)
            rows = s.execute(
                select(Feedback, Attempt, Turn, Conversation, Program.name)
                .join(Attempt, Feedback.attempt_id == Attempt.id)
                .join(Turn)
                .join(Conversation)
                .join(Program, Program.id == Conversation.program_id)
                .where(Conversation.program_id.in_(ids), Feedback.kind == "praise")
                .order_by(Feedback.id)
            ).all()
            captures = []
            for fb, attempt, turn, conv, program_name in rows:
                system = "\n\n".join(m["content"] for m in attempt.messages if m.get("role") == "system")
                captures.append(
                    Capture(
                        captured_at=fb.created_at,
                        praise=fb.text or "",
                        user_message=turn.user_message,
                        system_prompt=system,
                        response=attempt.response,
                        metadata={
                            "program": program_name,
                            "conversation_id": conv.id,
                            "turn_id": turn.id,
                            "attempt_id": attempt.id,
                            "attempt_number": attempt.number,
                            "version_id": attempt.version_id,
                            "model": attempt.model_spec,
                            "timestamp": attempt.created_at.isoformat(timespec="seconds"),
                        },
                    )
                )
            return captures

    def latest_attempt_id(self) -> int | None:
        """The newest attempt of this user, if any."""
        with self.db.transaction() as s:
            return s.scalar(
                select(func.max(Attempt.id))
                .join(Turn)
                .join(Conversation)
                .join(Program, Program.id == Conversation.program_id)
                .where(Program.user_id == self.user_id)
            )

    # -- learning: demo candidates, embeddings, lessons -------------------------------------

    def feedback_rows(
        self, program: str, turn_ids: list[int] | None = None, up_to: int | None = None
    ) -> list[tuple[Any, ...]]:
        """(attempt_id, turn_id, conversation_id, user_message, response, kind, stars) per feedback
        row of the program (optionally only some turns, only feedback ids up to ``up_to``), oldest
        first. Turns the user excluded from demos and training, and attempts that are not complete
        answers, are left out."""
        with self.db.transaction() as s:
            query = (
                select(
                    Attempt.id,
                    Turn.id,
                    Conversation.id,
                    Turn.user_message,
                    Attempt.response,
                    Feedback.kind,
                    Feedback.stars,
                )
                .join(Attempt, Feedback.attempt_id == Attempt.id)
                .join(Turn)
                .join(Conversation)
                .where(
                    Conversation.program_id == self.program_row(s, program).id,
                    Turn.excluded.is_(False),
                    Attempt.status == COMPLETE,
                )
                .order_by(Feedback.id)
            )
            if turn_ids is not None:
                query = query.where(Turn.id.in_(turn_ids))
            if up_to is not None:
                query = query.where(Feedback.id <= up_to)
            return [tuple(row) for row in s.execute(query)]

    def feedback_since(self, program: str, after_id: int, up_to: int | None = None) -> tuple[int, list[int]]:
        """(newest feedback id, ids of turns with feedback newer than ``after_id`` — and at most
        ``up_to`` when given) for a program.

        Two small queries, so the cost follows the number of new rows rather than the size of
        the history (as one join, SQLite's planner walks every turn of the program).
        """
        with self.db.transaction() as s:
            query = select(Feedback.id, Feedback.attempt_id).where(Feedback.id > after_id)
            if up_to is not None:
                query = query.where(Feedback.id <= up_to)
            newer = s.execute(query).all()
            if not newer:
                return after_id, []
            program_id = self.program_row(s, program).id
            query = select(Attempt.id, Attempt.turn_id).join(Turn).join(Conversation)
            query = query.where(Conversation.program_id == program_id)
            if len(newer) <= 500:  # a long IN list makes SQLite's plan far slower than the plain join
                query = query.where(Attempt.id.in_({a for _, a in newer}))
            turns = s.execute(query).all()
        mine = dict(turns)  # other programs' (or users') feedback only moves the watermark on
        return max(f for f, _ in newer), sorted({mine[a] for _, a in newer if a in mine})

    def feedback_watermark(self, at: datetime) -> int:
        """The newest feedback id recorded at or before ``at`` (0 when none): what a prompt frozen
        at that moment may learn from."""
        with self.db.transaction() as s:
            return s.scalar(select(func.max(Feedback.id)).where(Feedback.created_at <= at)) or 0

    def turn_embeddings(self, turn_ids: list[int], model: str) -> dict[int, bytes]:
        """Stored embeddings (raw float32 bytes) of these turns made with ``model``."""
        if not turn_ids:
            return {}
        with self.db.transaction() as s:
            rows = s.execute(
                select(TurnEmbedding.turn_id, TurnEmbedding.vector).where(
                    TurnEmbedding.turn_id.in_(turn_ids), TurnEmbedding.model == model
                )
            )
            return {turn_id: vector for turn_id, vector in rows}

    def save_turn_embeddings(self, vectors: dict[int, bytes], model: str, dim: int) -> None:
        """Store (or replace) turn embeddings; each turn is embedded once per model."""
        if not vectors:
            return
        with self.db.transaction() as s:
            for turn_id, blob in vectors.items():
                self.owned_row(s, Turn, turn_id)
                s.merge(TurnEmbedding(turn_id=turn_id, model=model, dim=dim, vector=blob))

    def conversation_turn_ids(self, conversation_id: int) -> list[int]:
        with self.db.transaction() as s:
            conv = self.owned_row(s, Conversation, conversation_id)
            return list(s.scalars(select(Turn.id).where(Turn.conversation_id == conv.id)))

    def existing_attempt_ids(self, attempt_ids: list[int]) -> set[int]:
        """Which of these attempts still exist (and belong to this user)."""
        if not attempt_ids:
            return set()
        with self.db.transaction() as s:
            return set(
                s.scalars(
                    select(Attempt.id)
                    .join(Turn)
                    .join(Conversation)
                    .join(Program, Program.id == Conversation.program_id)
                    .where(Attempt.id.in_(attempt_ids), Program.user_id == self.user_id)
                )
            )

    def delete_turn(self, turn_id: int) -> None:
        """Delete a turn with its attempts, feedback and embedding."""
        with self.db.transaction() as s:
            turn = self.owned_row(s, Turn, turn_id)
            s.execute(delete(Turn).where(Turn.id == turn.id))

    def feedback(self, feedback_id: int) -> Feedback:
        with self.db.transaction() as s:
            return self.owned_row(s, Feedback, feedback_id)

    def lessons(self, program: str = DEFAULT_PROGRAM, include_inactive: bool = False) -> list[Lesson]:
        with self.db.transaction() as s:
            query = select(Lesson).where(Lesson.program_id == self.program_row(s, program).id)
            if not include_inactive:
                query = query.where(Lesson.status == "active")
            return list(s.scalars(query.order_by(Lesson.id)))

    def _lesson(self, s: Session, program: Program, lesson_id: int) -> Lesson:
        lesson = s.get(Lesson, lesson_id)
        if lesson is None or lesson.program_id != program.id:
            raise NotFoundError(f"Program {program.name!r} has no lesson {lesson_id}.")
        return lesson

    def change_lessons(
        self,
        program: str,
        *,
        add: Sequence[dict[str, Any]] = (),
        edit: dict[int, str] | None = None,
        retire: Sequence[int] = (),
        supersede: dict[int, int] | None = None,
        note: str = "",
        sources: dict[str, Any] | None = None,
    ) -> tuple[ProgramVersion, list[Lesson]]:
        """Apply lesson changes and publish the active lessons as a new version, in one transaction.

        ``add`` items are {"text", "origin", "feedback_id"}; ``supersede`` maps an old lesson id
        to the index (in ``add``) of the lesson that replaces it. Returns the version and the
        added lessons.
        """
        with self.db.transaction() as s:
            prog = self.program_row(s, program)
            # The version is numbered under the program's lock: take it before anything else, so
            # the lessons' foreign keys are never held while waiting for it (a forget holds the
            # program and deletes feedback).
            lock_row(s, Program, prog.id)
            added = []
            for item in add:
                text = str(item["text"]).strip()
                if not text:
                    raise StoreError("A lesson needs some text.")
                lesson = Lesson(
                    program_id=prog.id,
                    text=text,
                    origin=item.get("origin", "manual"),
                    feedback_id=item.get("feedback_id"),
                    status="active",
                )
                s.add(lesson)
                added.append(lesson)
            s.flush()
            for lesson_id, text in (edit or {}).items():
                if not text.strip():
                    raise StoreError("A lesson needs some text.")
                self._lesson(s, prog, lesson_id).text = text.strip()
            for lesson_id in retire:
                self._lesson(s, prog, lesson_id).status = "retired"
            for old_id, new_index in (supersede or {}).items():
                old = self._lesson(s, prog, old_id)
                old.status = "superseded"
                old.superseded_by_id = added[new_index].id
            s.flush()
            active = s.scalars(
                select(Lesson)
                .where(Lesson.program_id == prog.id, Lesson.status == "active")
                .order_by(Lesson.id)
            ).all()
            version = new_version(
                s,
                prog,
                note,
                True,
                lessons=[{"id": lesson.id, "text": lesson.text} for lesson in active],
                sources=(sources or {}) | {"lessons": [lesson.id for lesson in active]},
            )
            return version, added

    def judge_state(self, program: str) -> JudgeState | None:
        with self.db.transaction() as s:
            return s.get(JudgeState, self.program_row(s, program).id)

    def save_judge(
        self, program: str, embedder: str, n_ratings: int, state: bytes, metrics: dict[str, Any]
    ) -> None:
        with self.db.transaction() as s:
            s.merge(
                JudgeState(
                    program_id=self.program_row(s, program).id,
                    embedder=embedder,
                    n_ratings=n_ratings,
                    state=state,
                    metrics=metrics,
                )
            )

    def attempt_texts(self, attempt_ids: list[int]) -> dict[int, tuple[int, str, str]]:
        """attempt id → (turn id, user message, response) for this user's attempts."""
        if not attempt_ids:
            return {}
        with self.db.transaction() as s:
            rows = s.execute(
                select(Attempt.id, Turn.id, Turn.user_message, Attempt.response)
                .join(Turn)
                .join(Conversation)
                .join(Program, Program.id == Conversation.program_id)
                .where(Attempt.id.in_(attempt_ids), Program.user_id == self.user_id)
            )
            return {a: (t, u, r) for a, t, u, r in rows}

    def row_counts(self) -> dict[str, int]:
        """Rows per table across all users (used to prove that bad input changed nothing)."""
        with self.db.transaction() as s:
            return {
                t.name: s.scalar(select(func.count()).select_from(t)) or 0
                for t in Base.metadata.sorted_tables
            }

    def delete_conversation(self, conversation_id: int) -> None:
        with self.db.transaction() as s:
            conv = self.owned_row(s, Conversation, conversation_id)
            s.execute(delete(Conversation).where(Conversation.id == conv.id))


def new_version(s: Session, prog: Program, note: str, activate: bool, **changes: Any) -> ProgramVersion:
    """A version copied from the program's active one with ``changes`` applied, inside the caller's
    transaction; ``sources`` starts empty unless given."""
    unknown = set(changes) - set(_VERSION_FIELDS)
    if unknown:
        raise StoreError(f"Unknown version fields: {', '.join(sorted(unknown))}")
    lock_row(s, Program, prog.id)
    s.refresh(prog, ["active_version_id"])  # another transaction may have moved it while we waited
    parent = s.get(ProgramVersion, prog.active_version_id)
    assert parent is not None
    latest = s.scalar(select(func.max(ProgramVersion.number)).where(ProgramVersion.program_id == prog.id))
    fields = {f: getattr(parent, f) for f in _VERSION_FIELDS} | {"sources": {}} | changes
    version = ProgramVersion(
        program_id=prog.id, number=(latest or 0) + 1, parent_id=parent.id, note=note, **fields
    )
    s.add(version)
    s.flush()
    if activate:
        prog.active_version_id = version.id
    return version


def lock_row(s: Session, model: type[Any], row_id: int) -> None:
    """Lock a parent row for the rest of the transaction before numbering its children, so two
    writers cannot pick the same number (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite every
    transaction already holds the write lock, see :func:`minetune.store.db.make_engine`)."""
    # FOR NO KEY UPDATE: writers of the parent queue behind each other, while inserting rows
    # that merely reference it (a foreign key takes KEY SHARE) never waits on it.
    s.execute(select(model.id).where(model.id == row_id).with_for_update(key_share=True))


def next_turn_index(s: Session, conversation_id: int) -> int:
    """The index for a new turn of a conversation: one past the highest (forgotten turns leave
    gaps, never duplicates). Locks the conversation row."""
    lock_row(s, Conversation, conversation_id)
    last = s.scalar(select(func.max(Turn.index)).where(Turn.conversation_id == conversation_id))
    if last is None:  # a branch's first turn takes the index of the turn it replaces
        return s.scalar(select(Conversation.fork_index).where(Conversation.id == conversation_id)) or 0
    return last + 1


def next_attempt_number(s: Session, turn_id: int) -> int:
    """The number for a new attempt of a turn, in order from 1. Locks the turn row."""
    lock_row(s, Turn, turn_id)
    last = s.scalar(select(func.max(Attempt.number)).where(Attempt.turn_id == turn_id))
    return (last or 0) + 1

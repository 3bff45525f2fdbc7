"""The database schema. Every table a later feature derives from links back to the interactions
it came from (lineage), so forgetting an interaction can find what depends on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

FEEDBACK_KINDS = ("explicit", "praise", "imported", "implicit")
# An attempt is an answer only when ``complete``: ``streaming`` while its stream runs (stored before
# the first delta so its id is known), ``interrupted`` when the stream was cut before it finished.
ATTEMPT_STATUSES = ("complete", "streaming", "interrupted")
COMPLETE = "complete"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


# SQLite reuses the largest rowid after a delete unless AUTOINCREMENT is on; ids are lineage
# references and sync watermarks, so they must never be reused.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class User(Base):
    """An owner of programs. A single-user install has only the implicit ``local`` user."""

    __tablename__ = "users"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """A bearer token for the server and proxy; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Program(Base):
    """A persona or task; ``active_version_id`` points at the version that answers."""

    __tablename__ = "programs"
    __table_args__ = (UniqueConstraint("user_id", "name"), NEVER_REUSE_IDS)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    active_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("program_versions.id", use_alter=True, name="fk_programs_active_version")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProgramVersion(Base):
    """An immutable snapshot: instructions, learned lessons, demo policy, model spec, adapter."""

    __tablename__ = "program_versions"
    __table_args__ = (UniqueConstraint("program_id", "number"), NEVER_REUSE_IDS)
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("program_versions.id"))
    instructions: Mapped[str] = mapped_column(Text, default="")
    lessons: Mapped[list[Any]] = mapped_column(default=list)
    demo_policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_spec: Mapped[str | None] = mapped_column(String(500))
    adapter: Mapped[str | None] = mapped_column(String(1000))
    note: Mapped[str] = mapped_column(Text, default="")
    # Where this version came from: e.g. {"lessons": [ids], "optimizer": "dspy:MIPROv2", "files": [...]}
    sources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(500), default="")
    source: Mapped[str] = mapped_column(String(50), default="chat")
    # Identity in the system it was imported from (e.g. a ChatGPT conversation id); makes imports idempotent.
    external_id: Mapped[str | None] = mapped_column(String(300), index=True)
    # The import that brought it in (None for chat, proxy and bundles), so an import can be forgotten.
    import_id: Mapped[int | None] = mapped_column(ForeignKey("imports.id", ondelete="SET NULL"), index=True)
    # A branch (an edited and resent message, see store/branches.py): the conversation it was forked
    # from and the turn index where it leaves it; its own turns start at that index. SET NULL: a
    # branch whose parent is forgotten stays, as a conversation of its own.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    fork_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    turns: Mapped[list[Turn]] = relationship(
        back_populates="conversation", order_by="Turn.index", cascade="all, delete-orphan"
    )


class Turn(Base):
    """One user message and every attempt at answering it.

    ``attempts_to_5`` is the number of attempts until the first 5-star one (None until then);
    the turn's score is its reciprocal.
    """

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("conversation_id", "index"), NEVER_REUSE_IDS)
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    user_message: Mapped[str] = mapped_column(Text)
    attempts_to_5: Mapped[int | None] = mapped_column(Integer)
    # Excluded by the user on the dataset page: kept, but never used for demos or training.
    excluded: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    conversation: Mapped[Conversation] = relationship(back_populates="turns")
    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="turn", order_by="Attempt.number", cascade="all, delete-orphan"
    )

    @property
    def score(self) -> float:
        """1 / attempts-to-5-stars, or 0.0 while no attempt has earned 5 stars."""
        return 1.0 / self.attempts_to_5 if self.attempts_to_5 else 0.0


class Attempt(Base):
    """One response: exactly what was sent to the model and what came back."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("turn_id", "number"),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{k}'" for k in ATTEMPT_STATUSES) + ")", name="ck_attempts_status"
        ),
        NEVER_REUSE_IDS,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("program_versions.id"), index=True)
    model_spec: Mapped[str] = mapped_column(String(500))
    messages: Mapped[list[Any]] = mapped_column()
    response: Mapped[str] = mapped_column(Text)
    critique_used: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # Attempt ids whose (user message, rated response) were shown to the model as demos.
    demo_attempt_ids: Mapped[list[Any]] = mapped_column(default=list)
    # complete | streaming | interrupted (ATTEMPT_STATUSES): only complete attempts are answers
    # (rated, shown as demos, trained on, exported, sent back as history).
    status: Mapped[str] = mapped_column(String(20), default=COMPLETE, server_default=COMPLETE, index=True)
    # ``host:pid`` of the process streaming it, so start-up can tell a dead process's half answer.
    stream_owner: Mapped[str | None] = mapped_column(String(300))
    # What a proxied answer carried besides its text: tool_calls, finish_reason, refusal, a
    # logprobs summary, the choice index of an n>1 request (None for plain text answers).
    extra: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    turn: Mapped[Turn] = relationship(back_populates="attempts")
    feedback: Mapped[list[Feedback]] = relationship(
        back_populates="attempt", order_by="Feedback.id", cascade="all, delete-orphan"
    )


class Feedback(Base):
    """A rating event. ``kind`` is explicit, praise, imported or implicit; ``text`` keeps a praise
    message verbatim."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("stars IS NULL OR (stars >= 1 AND stars <= 5)", name="ck_feedback_stars"),
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in FEEDBACK_KINDS) + ")", name="ck_feedback_kind"
        ),
        NEVER_REUSE_IDS,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    stars: Mapped[int | None] = mapped_column(Integer)
    critique: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempt: Mapped[Attempt] = relationship(back_populates="feedback")


class TurnEmbedding(Base):
    """The embedding of a turn's user message (float32, L2-normalised), computed once."""

    __tablename__ = "turn_embeddings"
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(500))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


LESSON_STATUSES = ("active", "retired", "superseded")


class Lesson(Base):
    """A short rule learned from feedback (or written by the user), rendered into the prompt while active."""

    __tablename__ = "lessons"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="active")
    origin: Mapped[str] = mapped_column(
        String(20), default="manual"
    )  # reflection | manual | bootstrap | dspy
    feedback_id: Mapped[int | None] = mapped_column(
        ForeignKey("feedback.id", ondelete="SET NULL"), index=True
    )
    superseded_by_id: Mapped[int | None] = mapped_column(ForeignKey("lessons.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class JudgeState(Base):
    """A program's personal judge: the fitted preference model and its held-out agreement."""

    __tablename__ = "judges"
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), primary_key=True)
    embedder: Mapped[str] = mapped_column(String(500))
    n_ratings: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ImportRecord(Base):
    """One imported file: its content hash (so the same file is never imported twice) and counts."""

    __tablename__ = "imports"
    __table_args__ = (UniqueConstraint("program_id", "sha256"), NEVER_REUSE_IDS)
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(50))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingJob(Base):
    """A local LoRA run or a hosted fine-tuning job, with what it was trained on (lineage)."""

    __tablename__ = "training_jobs"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # local | hosted
    method: Mapped[str] = mapped_column(String(20))  # sft | dpo | kto
    status: Mapped[str] = mapped_column(String(30), default="created")
    base_model: Mapped[str] = mapped_column(String(500))
    provider: Mapped[str | None] = mapped_column(String(500))  # hosted: the API base URL
    provider_job_id: Mapped[str | None] = mapped_column(String(200))
    result_model: Mapped[str | None] = mapped_column(String(1000))  # fine-tuned model id or adapter dir
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    loss_curve: Mapped[list[Any]] = mapped_column(default=list)
    example_attempt_ids: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


ADAPTER_STATUSES = ("ready", "retired")


class Adapter(Base):
    """A LoRA adapter trained locally for a program, and everything it was trained from (lineage).

    ``example_attempt_ids`` are the attempts of the examples this run trained on;
    ``lineage_attempt_ids`` adds every ancestor's (a continued adapter keeps what its parent
    learned). Forgetting any of those attempts sets ``tainted_at``; ``replaces_id`` points at the
    tainted adapter a retrained one stands in for.
    """

    __tablename__ = "adapters"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="SET NULL"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"))
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("adapters.id", ondelete="SET NULL"))
    domain: Mapped[str] = mapped_column(String(200), default="general", index=True)
    method: Mapped[str] = mapped_column(String(20))  # sft | dpo | kto
    base_model: Mapped[str] = mapped_column(String(1000))
    path: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(20), default="ready")  # ready | retired
    example_attempt_ids: Mapped[list[Any]] = mapped_column(default=list)
    lineage_attempt_ids: Mapped[list[Any]] = mapped_column(default=list)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tainted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    taint_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


COMPARISON_WINNERS = ("a", "b", "tie")


class Comparison(Base):
    """A blind A/B comparison: one prompt answered by two arms, shown as A and B in random order.

    ``arm_a``/``arm_b`` name the arm shown as A/B (e.g. ``v3``, ``v5 prompt-only``); ``winner``
    stays None until the user picks. A prompt drawn from a past turn links to it, so forgetting
    the turn removes the comparison too.
    """

    __tablename__ = "comparisons"
    __table_args__ = (
        CheckConstraint("winner IS NULL OR winner IN ('a', 'b', 'tie')", name="ck_comparisons_winner"),
        NEVER_REUSE_IDS,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    turn_id: Mapped[int | None] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    prompt: Mapped[str] = mapped_column(Text)
    arm_a: Mapped[str] = mapped_column(String(200))
    arm_b: Mapped[str] = mapped_column(String(200))
    version_a_id: Mapped[int | None] = mapped_column(ForeignKey("program_versions.id"))
    version_b_id: Mapped[int | None] = mapped_column(ForeignKey("program_versions.id"))
    model_a: Mapped[str] = mapped_column(String(1000))
    model_b: Mapped[str] = mapped_column(String(1000))
    messages_a: Mapped[list[Any]] = mapped_column(default=list)
    messages_b: Mapped[list[Any]] = mapped_column(default=list)
    answer_a: Mapped[str] = mapped_column(Text)
    answer_b: Mapped[str] = mapped_column(Text)
    winner: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


JOB_KINDS = ("learn", "continual", "train", "retrain", "hosted", "eval")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
_RUNNING = text("status = 'running'")


class Job(Base):
    """A piece of background work (learning after feedback, a continual update, a training run, a
    hosted job), visible to every process sharing the database.

    ``lane`` groups kinds that must not run at the same time for one program (``learn``: prompt
    re-optimization; ``train``: anything that trains or publishes an adapter; ``hosted``). The
    partial unique index lets at most one job per (program, lane) be ``running``: claiming a job is
    an UPDATE the database refuses while another process holds the program. ``owner`` is
    ``host:pid``; ``heartbeat_at`` is refreshed while the owner lives, so a crashed owner's jobs can
    be marked ``interrupted``.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in JOB_KINDS) + ")", name="ck_jobs_kind"),
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in JOB_STATUSES) + ")", name="ck_jobs_status"
        ),
        Index(
            "ux_jobs_one_running",
            "program_id",
            "lane",
            unique=True,
            sqlite_where=_RUNNING,
            postgresql_where=_RUNNING,
        ),
        NEVER_REUSE_IDS,
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    lane: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    # {"phase", "step", "total", "loss", "message", "curve": [{"step", "train_loss"}, ...]}
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    owner: Mapped[str] = mapped_column(String(300), default="")
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    training_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="SET NULL"), index=True
    )


class EvalRun(Base):
    """One ``minetune eval``: held-out rated prompts replayed through arms A and B and scored
    (:mod:`minetune.app.evaluate`). ``wins``/``losses``/``ties`` are B's against A on ``basis``
    (``judge`` or ``reference``); ``summary`` holds every number of the report (no text)."""

    __tablename__ = "eval_runs"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    arm_a: Mapped[str] = mapped_column(String(200))
    arm_b: Mapped[str] = mapped_column(String(200))
    version_a_id: Mapped[int | None] = mapped_column(ForeignKey("program_versions.id"))
    version_b_id: Mapped[int | None] = mapped_column(ForeignKey("program_versions.id"))
    model_a: Mapped[str] = mapped_column(String(1000))
    model_b: Mapped[str] = mapped_column(String(1000))
    basis: Mapped[str] = mapped_column(String(20))
    wins: Mapped[int] = mapped_column(Integer, default=0)
    losses: Mapped[int] = mapped_column(Integer, default=0)
    ties: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EvalItem(Base):
    """One held-out prompt of an eval run: both answers, their scores and the winner per basis.
    It holds the turn's text, so forgetting the turn deletes it (``ON DELETE CASCADE``)."""

    __tablename__ = "eval_items"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    prompt: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(Text)
    user_stars: Mapped[int | None] = mapped_column(Integer)
    answer_a: Mapped[str] = mapped_column(Text)
    answer_b: Mapped[str] = mapped_column(Text)
    judge_a: Mapped[float | None] = mapped_column(Float)
    judge_b: Mapped[float | None] = mapped_column(Float)
    exact_a: Mapped[bool | None] = mapped_column()
    exact_b: Mapped[bool | None] = mapped_column()
    fuzzy_a: Mapped[float | None] = mapped_column(Float)
    fuzzy_b: Mapped[float | None] = mapped_column(Float)
    judge_winner: Mapped[str | None] = mapped_column(String(10))
    reference_winner: Mapped[str | None] = mapped_column(String(10))

@event.listens_for(Session, "before_flush")
def _versions_are_immutable(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in session.dirty:
        if isinstance(obj, ProgramVersion) and session.is_modified(obj):
            raise ValueError("program versions are immutable; create a new version instead")

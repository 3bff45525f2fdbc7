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
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

FEEDBACK_KINDS = ("explicit", "praise", "imported", "implicit")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    """An owner of programs. A single-user install has only the implicit ``local`` user."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Program(Base):
    """A persona or task; ``active_version_id`` points at the version that answers."""

    __tablename__ = "programs"
    __table_args__ = (UniqueConstraint("user_id", "name"),)
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
    __table_args__ = (UniqueConstraint("program_id", "number"),)
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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(500), default="")
    source: Mapped[str] = mapped_column(String(50), default="chat")
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
    __table_args__ = (UniqueConstraint("conversation_id", "index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    user_message: Mapped[str] = mapped_column(Text)
    attempts_to_5: Mapped[int | None] = mapped_column(Integer)
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
    __table_args__ = (UniqueConstraint("turn_id", "number"),)
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
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    stars: Mapped[int | None] = mapped_column(Integer)
    critique: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempt: Mapped[Attempt] = relationship(back_populates="feedback")


@event.listens_for(Session, "before_flush")
def _versions_are_immutable(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in session.dirty:
        if isinstance(obj, ProgramVersion) and session.is_modified(obj):
            raise ValueError("program versions are immutable; create a new version instead")

"""learning tables

Revision ID: 0002_learning
Revises: 0001_initial
Create Date: 2026-11-25 23:12:06.820647
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_learning"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

# Batch mode recreates SQLite tables; keep AUTOINCREMENT so ids are never reused.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:

    op.create_table(
        "judges",
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("embedder", sa.String(length=500), nullable=False),
        sa.Column("n_ratings", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("program_id"),
    )
    op.create_table(
        "turn_embeddings",
        sa.Column("turn_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=500), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("turn_id"),
    )
    op.create_table(
        "lessons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("origin", sa.String(length=20), nullable=False),
        sa.Column("feedback_id", sa.Integer(), nullable=True),
        sa.Column("superseded_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["feedback_id"], ["feedback.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["superseded_by_id"],
            ["lessons.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("lessons", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.create_index(batch_op.f("ix_lessons_feedback_id"), ["feedback_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lessons_program_id"), ["program_id"], unique=False)

    with op.batch_alter_table("attempts", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(
            sa.Column("demo_attempt_ids", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )

    with op.batch_alter_table("program_versions", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column("sources", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:

    with op.batch_alter_table("program_versions", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_column("sources")

    with op.batch_alter_table("attempts", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_column("demo_attempt_ids")

    with op.batch_alter_table("lessons", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lessons_program_id"))
        batch_op.drop_index(batch_op.f("ix_lessons_feedback_id"))

    op.drop_table("lessons")
    op.drop_table("turn_embeddings")
    op.drop_table("judges")

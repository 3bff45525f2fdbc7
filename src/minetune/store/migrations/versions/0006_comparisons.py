"""blind A/B comparisons

Revision ID: 0006_comparisons
Revises: 0005_api_tokens
Create Date: 2026-11-26 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_comparisons"
down_revision = "0005_api_tokens"
branch_labels = None
depends_on = None

# Batch mode recreates SQLite tables; keep AUTOINCREMENT so ids are never reused.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("turn_id", sa.Integer(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("arm_a", sa.String(length=200), nullable=False),
        sa.Column("arm_b", sa.String(length=200), nullable=False),
        sa.Column("version_a_id", sa.Integer(), nullable=True),
        sa.Column("version_b_id", sa.Integer(), nullable=True),
        sa.Column("model_a", sa.String(length=1000), nullable=False),
        sa.Column("model_b", sa.String(length=1000), nullable=False),
        sa.Column("messages_a", sa.JSON(), nullable=False),
        sa.Column("messages_b", sa.JSON(), nullable=False),
        sa.Column("answer_a", sa.Text(), nullable=False),
        sa.Column("answer_b", sa.Text(), nullable=False),
        sa.Column("winner", sa.String(length=10), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("winner IS NULL OR winner IN ('a', 'b', 'tie')", name="ck_comparisons_winner"),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_a_id"], ["program_versions.id"]),
        sa.ForeignKeyConstraint(["version_b_id"], ["program_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("comparisons", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.create_index(batch_op.f("ix_comparisons_program_id"), ["program_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_comparisons_turn_id"), ["turn_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("comparisons", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_index(batch_op.f("ix_comparisons_turn_id"))
        batch_op.drop_index(batch_op.f("ix_comparisons_program_id"))

    op.drop_table("comparisons")

"""conversations can be branches: ``parent_id`` is the conversation a branch was forked from and
``fork_index`` the turn index where it leaves it (an edited and resent message); the branch's own
turns start at that index and its history is the parent's turns before it

Revision ID: 0011_conversation_branches
Revises: 0010_attempt_extra
Create Date: 2026-12-08 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_conversation_branches"
down_revision = "0010_attempt_extra"
branch_labels = None
depends_on = None

# Batch mode recreates SQLite tables; keep AUTOINCREMENT so ids are never reused.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("fork_index", sa.Integer(), nullable=True))
        batch_op.create_index("ix_conversations_parent_id", ["parent_id"])
        batch_op.create_foreign_key(
            "fk_conversations_parent_id", "conversations", ["parent_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_constraint("fk_conversations_parent_id", type_="foreignkey")
        batch_op.drop_index("ix_conversations_parent_id")
        batch_op.drop_column("fork_index")
        batch_op.drop_column("parent_id")

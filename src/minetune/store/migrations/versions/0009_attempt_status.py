"""attempts have a status (complete, streaming, interrupted) and the process streaming them

Revision ID: 0009_attempt_status
Revises: 0008_conversation_imports
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_attempt_status"
down_revision = "0008_conversation_imports"
branch_labels = None
depends_on = None

# Batch mode recreates SQLite tables; keep AUTOINCREMENT so ids are never reused.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    # Attempts stored before this revision were stored whole, except the ones below.
    with op.batch_alter_table("attempts", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), nullable=False, server_default="complete")
        )
        batch_op.add_column(sa.Column("stream_owner", sa.String(length=300), nullable=True))
        batch_op.create_index("ix_attempts_status", ["status"])
        batch_op.create_check_constraint(
            "ck_attempts_status", "status IN ('complete', 'streaming', 'interrupted')"
        )
    # A proxy stream cut by a killed server left its attempt as stored before the first delta:
    # empty, with no latency, never rated. Those are half answers, not answers.
    op.execute(
        "UPDATE attempts SET status = 'interrupted' WHERE response = '' AND latency_ms = 0"
        " AND model_spec <> 'user-edit'"
        " AND NOT EXISTS (SELECT 1 FROM feedback WHERE feedback.attempt_id = attempts.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_constraint("ck_attempts_status", type_="check")
        batch_op.drop_index("ix_attempts_status")
        batch_op.drop_column("stream_owner")
        batch_op.drop_column("status")

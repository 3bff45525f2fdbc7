"""conversations remember the import that brought them, so an import can be forgotten

Revision ID: 0008_conversation_imports
Revises: 0007_jobs
Create Date: 2026-12-07 23:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_conversation_imports"
down_revision = "0007_jobs"
branch_labels = None
depends_on = None

# Batch mode recreates SQLite tables; keep AUTOINCREMENT so ids are never reused.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column("import_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_conversations_import_id", ["import_id"])
        batch_op.create_foreign_key(
            "fk_conversations_import_id", "imports", ["import_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_constraint("fk_conversations_import_id", type_="foreignkey")
        batch_op.drop_index("ix_conversations_import_id")
        batch_op.drop_column("import_id")

"""adapters

Revision ID: 0004_adapters
Revises: 0003_imports_jobs
Create Date: 2026-11-25 23:58:58.507006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_adapters"
down_revision = "0003_imports_jobs"
branch_labels = None
depends_on = None

# Batch mode recreates SQLite tables; keep AUTOINCREMENT so ids are never reused.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("replaces_id", sa.Integer(), nullable=True),
        sa.Column("domain", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("base_model", sa.String(length=1000), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("example_attempt_ids", sa.JSON(), nullable=False),
        sa.Column("lineage_attempt_ids", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("tainted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("taint_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["training_jobs.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["parent_id"], ["adapters.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["replaces_id"], ["adapters.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("adapters", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.create_index(batch_op.f("ix_adapters_domain"), ["domain"], unique=False)
        batch_op.create_index(batch_op.f("ix_adapters_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_adapters_program_id"), ["program_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("adapters", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adapters_program_id"))
        batch_op.drop_index(batch_op.f("ix_adapters_job_id"))
        batch_op.drop_index(batch_op.f("ix_adapters_domain"))

    op.drop_table("adapters")

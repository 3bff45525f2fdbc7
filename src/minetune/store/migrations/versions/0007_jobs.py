"""background jobs: one row per piece of background work, at most one running per program and lane

Revision ID: 0007_jobs
Revises: 0006_comparisons
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_jobs"
down_revision = "0006_comparisons"
branch_labels = None
depends_on = None

# Batch mode recreates SQLite tables; keep AUTOINCREMENT so ids are never reused.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}
RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("lane", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("owner", sa.String(length=300), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("training_job_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('learn', 'continual', 'train', 'retrain', 'hosted')", name="ck_jobs_kind"
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')",
            name="ck_jobs_status",
        ),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["training_job_id"], ["training_jobs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("jobs", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_program_id"), ["program_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_training_job_id"), ["training_job_id"], unique=False)
        batch_op.create_index(
            "ux_jobs_one_running",
            ["program_id", "lane"],
            unique=True,
            sqlite_where=RUNNING,
            postgresql_where=RUNNING,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_index("ux_jobs_one_running")
        batch_op.drop_index(batch_op.f("ix_jobs_training_job_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_jobs_program_id"))

    op.drop_table("jobs")

"""offline evaluations (``minetune eval``): one ``eval_runs`` row per run with B's record against
A, one ``eval_items`` row per held-out prompt (deleted with its turn); jobs may be of kind ``eval``

Revision ID: 0012_evals
Revises: 0011_conversation_branches
Create Date: 2026-12-08 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_evals"
down_revision = "0011_conversation_branches"
branch_labels = None
depends_on = None

# Batch mode recreates SQLite tables; keep AUTOINCREMENT so ids are never reused.
KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}
OLD_KINDS = "kind IN ('learn', 'continual', 'train', 'retrain', 'hosted')"
NEW_KINDS = "kind IN ('learn', 'continual', 'train', 'retrain', 'hosted', 'eval')"


def _job_kinds(condition: str) -> None:
    with op.batch_alter_table("jobs", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_constraint("ck_jobs_kind", type_="check")
        batch_op.create_check_constraint("ck_jobs_kind", condition)


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("arm_a", sa.String(length=200), nullable=False),
        sa.Column("arm_b", sa.String(length=200), nullable=False),
        sa.Column("version_a_id", sa.Integer(), nullable=True),
        sa.Column("version_b_id", sa.Integer(), nullable=True),
        sa.Column("model_a", sa.String(length=1000), nullable=False),
        sa.Column("model_b", sa.String(length=1000), nullable=False),
        sa.Column("basis", sa.String(length=20), nullable=False),
        sa.Column("wins", sa.Integer(), nullable=False),
        sa.Column("losses", sa.Integer(), nullable=False),
        sa.Column("ties", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["program_id"], ["programs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["version_a_id"], ["program_versions.id"]),
        sa.ForeignKeyConstraint(["version_b_id"], ["program_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("eval_runs", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.create_index(batch_op.f("ix_eval_runs_program_id"), ["program_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_eval_runs_job_id"), ["job_id"], unique=False)
    op.create_table(
        "eval_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("turn_id", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("user_stars", sa.Integer(), nullable=True),
        sa.Column("answer_a", sa.Text(), nullable=False),
        sa.Column("answer_b", sa.Text(), nullable=False),
        sa.Column("judge_a", sa.Float(), nullable=True),
        sa.Column("judge_b", sa.Float(), nullable=True),
        sa.Column("exact_a", sa.Boolean(), nullable=True),
        sa.Column("exact_b", sa.Boolean(), nullable=True),
        sa.Column("fuzzy_a", sa.Float(), nullable=True),
        sa.Column("fuzzy_b", sa.Float(), nullable=True),
        sa.Column("judge_winner", sa.String(length=10), nullable=True),
        sa.Column("reference_winner", sa.String(length=10), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["eval_runs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("eval_items", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.create_index(batch_op.f("ix_eval_items_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_eval_items_turn_id"), ["turn_id"], unique=False)
    _job_kinds(NEW_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'eval'")
    _job_kinds(OLD_KINDS)
    with op.batch_alter_table("eval_items", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eval_items_turn_id"))
        batch_op.drop_index(batch_op.f("ix_eval_items_run_id"))
    op.drop_table("eval_items")
    with op.batch_alter_table("eval_runs", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_index(batch_op.f("ix_eval_runs_job_id"))
        batch_op.drop_index(batch_op.f("ix_eval_runs_program_id"))
    op.drop_table("eval_runs")

"""api tokens, excluded turns

Revision ID: 0005_api_tokens
Revises: 0004_adapters
Create Date: 2026-11-26 01:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_api_tokens"
down_revision = "0004_adapters"
branch_labels = None
depends_on = None

KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("api_tokens", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("turns", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column("excluded", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("turns", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_column("excluded")
    with op.batch_alter_table("api_tokens", schema=None, table_kwargs=KEEP_AUTOINCREMENT) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))
    op.drop_table("api_tokens")

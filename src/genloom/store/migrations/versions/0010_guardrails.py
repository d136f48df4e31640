"""Guardrails: a tenant's policy overrides, and the audit log of every flag, block and redaction.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: Union[str, Sequence[str], None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("guardrails", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "guard_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(80), nullable=False),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("scanner", sa.String(64), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("spans", sa.JSON(), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
    )
    op.create_index("ix_guard_audit_tenant_id", "guard_audit", ["tenant", "id"])


def downgrade() -> None:
    op.drop_index("ix_guard_audit_tenant_id", table_name="guard_audit")
    op.drop_table("guard_audit")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("guardrails")

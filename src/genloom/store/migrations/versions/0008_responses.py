"""Stored responses (the Responses API): what was asked and answered, per tenant, so a later
request can go on from it (`previous_response_id`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("previous_id", sa.String(80), nullable=True),
        sa.Column("conversation", sa.JSON(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_responses_tenant", "responses", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_responses_tenant", table_name="responses")
    op.drop_table("responses")

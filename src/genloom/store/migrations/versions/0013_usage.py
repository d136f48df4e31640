"""The console's rolling usage series: per minute, model, tenant and process, requests, errors,
tokens, cache hits, latency and time-to-first-token histograms, and queue depth.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: Union[str, Sequence[str], None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "usage_minutes",
        sa.Column("minute", sa.BigInteger(), primary_key=True, autoincrement=False),  # unix seconds: past 2038 too
        sa.Column("model", sa.String(255), primary_key=True),
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("source", sa.String(128), primary_key=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_hits", sa.Integer(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.Column("ttft", sa.JSON(), nullable=False),
        sa.Column("queue_depth", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage_minutes")

"""The learning loop's first tables: feedback on answers, and what the request log needs to link it
(the tenant and end user of each request, the version that answered, content that can be dropped);
dataset versions; and the record of right-to-be-forgotten deletions.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: Union[str, Sequence[str], None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("tenant", sa.String(128), nullable=True))
        batch.add_column(sa.Column("user", sa.String(256), nullable=True))
        batch.add_column(sa.Column("version", sa.String(255), nullable=True))
        batch.alter_column("prompt", existing_type=sa.JSON(), nullable=True)  # null once its content is dropped
        batch.create_index("ix_requests_tenant_user", ["tenant", "user"])
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("keep_content", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("response_id", sa.String(80), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.String(255), nullable=True),
        sa.Column("user", sa.String(256), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("scale", sa.String(8), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("prompt", sa.JSON(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_tenant_created", "feedback", ["tenant", "created_at"])
    op.create_index("ix_feedback_model_created", "feedback", ["model", "created_at"])
    op.create_index("ix_feedback_response_id", "feedback", ["response_id"])
    op.create_index("uq_feedback_tenant_response", "feedback", ["tenant", "response_id"], unique=True)
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("tenant", sa.String(128), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("blob", sa.String(64), nullable=True),
        sa.Column("train_blob", sa.String(64), nullable=True),
        sa.Column("eval_blob", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.Column("superseded_why", sa.Text(), nullable=True),
    )
    op.create_index("ix_datasets_tenant", "datasets", ["tenant"])
    op.create_table(
        "data_deletions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("user_sha256", sa.String(64), nullable=False),
        sa.Column("removed", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_data_deletions_tenant", "data_deletions", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_data_deletions_tenant", table_name="data_deletions")
    op.drop_table("data_deletions")
    op.drop_index("ix_datasets_tenant", table_name="datasets")
    op.drop_table("datasets")
    op.drop_index("uq_feedback_tenant_response", table_name="feedback")
    op.drop_index("ix_feedback_response_id", table_name="feedback")
    op.drop_index("ix_feedback_model_created", table_name="feedback")
    op.drop_index("ix_feedback_tenant_created", table_name="feedback")
    op.drop_table("feedback")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("keep_content")
    with op.batch_alter_table("requests") as batch:
        batch.drop_index("ix_requests_tenant_user")
        batch.alter_column("prompt", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("version")
        batch.drop_column("user")
        batch.drop_column("tenant")

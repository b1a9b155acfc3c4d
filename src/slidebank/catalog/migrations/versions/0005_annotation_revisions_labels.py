"""annotation revisions (versions of rows), label schemas per dataset

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 14:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite supports it): a batch copy would drop the R*Tree trigger.
    op.add_column(
        "annotations", sa.Column("added_in", sa.Integer(), server_default="1", nullable=False)
    )
    op.add_column("annotations", sa.Column("removed_in", sa.Integer(), nullable=True))
    op.create_index("ix_annotations_set_number", "annotations", ["set_id", "number"])
    op.create_table(
        "annotation_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["annotation_sets.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("set_id", "number", name="uq_annotation_revisions"),
    )
    op.create_table(
        "label_classes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("parent", sa.String(length=200), nullable=True),
        sa.Column("color", sa.String(length=7), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("code_meaning", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "name", name="uq_label_classes"),
    )


def downgrade() -> None:
    op.drop_table("label_classes")
    op.drop_table("annotation_revisions")
    op.drop_index("ix_annotations_set_number", table_name="annotations")
    with op.batch_alter_table("annotations") as batch:
        batch.drop_column("removed_in")
        batch.drop_column("added_in")
    if op.get_bind().dialect.name == "sqlite":
        # The batch copy replaced the table, and its trigger with it.
        op.execute(
            "CREATE TRIGGER IF NOT EXISTS annotations_leave_rtree AFTER DELETE ON annotations "
            "BEGIN DELETE FROM annotation_rtree WHERE id = old.id; END"
        )

"""annotations: sets and a spatially indexed annotation table

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 13:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "annotation_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("author_user_id", sa.Integer(), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["author_user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_annotation_sets_image_id", "annotation_sets", ["image_id"])
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("shape", sa.String(length=20), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("area", sa.Float(), nullable=False),
        sa.Column("min_x", sa.Float(), nullable=False),
        sa.Column("min_y", sa.Float(), nullable=False),
        sa.Column("max_x", sa.Float(), nullable=False),
        sa.Column("max_y", sa.Float(), nullable=False),
        sa.Column("geometry", sa.LargeBinary(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("measurements", sa.JSON(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["annotation_sets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_annotations_set_label", "annotations", ["set_id", "label"])
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's built-in R*Tree (SpatiaLite cannot be loaded here); rows leave it with
        # their annotation, cascades included, through the trigger.
        op.execute(
            "CREATE VIRTUAL TABLE annotation_rtree USING rtree(id, min_x, max_x, min_y, max_y)"
        )
        op.execute(
            "CREATE TRIGGER annotations_leave_rtree AFTER DELETE ON annotations "
            "BEGIN DELETE FROM annotation_rtree WHERE id = old.id; END"
        )
    else:
        # GiST on the bounding box: no extension needed (PostGIS is not required).
        op.execute(
            "CREATE INDEX ix_annotations_box ON annotations USING gist "
            "(box(point(min_x, min_y), point(max_x, max_y)))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS annotations_leave_rtree")
        op.execute("DROP TABLE IF EXISTS annotation_rtree")
    op.drop_index("ix_annotations_set_label", table_name="annotations")
    op.drop_table("annotations")
    op.drop_index("ix_annotation_sets_image_id", table_name="annotation_sets")
    op.drop_table("annotation_sets")

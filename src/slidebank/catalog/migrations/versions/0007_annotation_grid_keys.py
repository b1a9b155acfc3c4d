"""annotations: grid keys in a B-tree index replace SQLite's R*Tree and PostgreSQL's GiST

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 21:30:00
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

from slidebank.catalog.grid_keys import grid_keys

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BATCH = 10_000


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS annotations_leave_rtree")
        op.execute("DROP TABLE IF EXISTS annotation_rtree")
    else:
        op.execute("DROP INDEX IF EXISTS ix_annotations_box")
    op.add_column("annotations", sa.Column("grid_key", sa.BigInteger(), nullable=True))
    _key_stored_rows()
    op.create_index("ix_annotations_grid", "annotations", ["set_id", "grid_key"])


def _key_stored_rows() -> None:
    connection = op.get_bind()
    after = 0
    while True:
        rows = connection.execute(
            sa.text(
                "SELECT id, min_x, min_y, max_x, max_y FROM annotations WHERE id > :after "
                "ORDER BY id LIMIT :n"
            ),
            {"after": after, "n": BATCH},
        ).all()
        if not rows:
            return
        keys = grid_keys(np.array([row[1:] for row in rows], dtype=np.float64)).tolist()
        connection.execute(
            sa.text("UPDATE annotations SET grid_key = :key WHERE id = :id"),
            [{"key": key, "id": row[0]} for key, row in zip(keys, rows, strict=True)],
        )
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_annotations_grid", table_name="annotations")
    op.drop_column("annotations", "grid_key")
    if op.get_bind().dialect.name != "sqlite":
        op.execute(
            "CREATE INDEX ix_annotations_box ON annotations USING gist "
            "(box(point(min_x, min_y), point(max_x, max_y)))"
        )
    else:
        op.execute(
            "CREATE VIRTUAL TABLE annotation_rtree USING rtree(id, min_x, max_x, min_y, max_y)"
        )
        op.execute(
            "INSERT INTO annotation_rtree (id, min_x, max_x, min_y, max_y) "
            "SELECT id, min_x, max_x, min_y, max_y FROM annotations"
        )
        op.execute(
            "CREATE TRIGGER annotations_leave_rtree AFTER DELETE ON annotations "
            "BEGIN DELETE FROM annotation_rtree WHERE id = old.id; END"
        )

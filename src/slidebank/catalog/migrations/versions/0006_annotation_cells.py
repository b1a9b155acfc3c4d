"""annotation counts per 256-px cell, kept by every write (zoomed-out views)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 15:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "annotation_cells",
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("cx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cy", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["set_id"], ["annotation_sets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("set_id", "cx", "cy"),
    )
    # Annotations stored before: counted once here.
    value = "((min_{0} + max_{0}) / 2.0 / 256)"
    # floor(): SQLite's CAST truncates toward zero, so step down for negative fractions.
    cell = f"(CAST({value} AS INTEGER) - ({value} < CAST({value} AS INTEGER)))"
    if op.get_bind().dialect.name != "sqlite":
        cell = f"CAST(floor({value}) AS INTEGER)"
    op.execute(
        "INSERT INTO annotation_cells (set_id, cx, cy, n) "  # noqa: S608 - fixed fragments
        f"SELECT set_id, {cell.format('x')}, {cell.format('y')}, count(*) FROM annotations "
        "WHERE removed_in IS NULL GROUP BY 1, 2, 3"
    )


def downgrade() -> None:
    op.drop_table("annotation_cells")

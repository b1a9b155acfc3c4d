"""Annotation sets and their annotations: geometry as WKB with its bounding box, which the
spatial index covers (grid keys in a B-tree index, on SQLite and PostgreSQL alike)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from slidebank.catalog.tables import Base, Image

ANNOTATION_KINDS = ("manual", "semi-automatic", "automatic", "reference")


class AnnotationSet(Base):
    """A set of annotations on one scanned image, by one author (a user or an algorithm run)."""

    __tablename__ = "annotation_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    author_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    author: Mapped[str] = mapped_column(String(200))
    """A user's name, or an algorithm run's description (its provenance)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    image: Mapped[Image] = relationship()


class AnnotationRow(Base):
    """One annotation. Coordinates are level-0 pixels of the image."""

    __tablename__ = "annotations"
    __table_args__ = (
        Index("ix_annotations_set_label", "set_id", "label"),
        Index("ix_annotations_set_number", "set_id", "number"),
        # The spatial index (``grid_keys``), on both engines.
        Index("ix_annotations_grid", "set_id", "grid_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("annotation_sets.id", ondelete="CASCADE"))
    shape: Mapped[str] = mapped_column(String(20))
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    area: Mapped[float] = mapped_column(Float)
    min_x: Mapped[float] = mapped_column(Float)
    min_y: Mapped[float] = mapped_column(Float)
    max_x: Mapped[float] = mapped_column(Float)
    max_y: Mapped[float] = mapped_column(Float)
    geometry: Mapped[bytes] = mapped_column(LargeBinary)
    """Well-known binary of the geometry (rectangles and ellipses: their polygon)."""
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    measurements: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    number: Mapped[int] = mapped_column(Integer)
    """The annotation's identity within its set, kept through edits (a row is one version
    of it); also its order, as imported or drawn."""
    added_in: Mapped[int] = mapped_column(Integer, server_default="1")
    """The set's revision that made this version."""
    removed_in: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The set's revision that edited or deleted it; ``None`` while it is current."""
    grid_key: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The bounding box's cell in the hierarchy of grids of ``grid_keys`` (the spatial
    index, with the set); set by every write, and for older rows by migration 0007."""


class AnnotationRevision(Base):
    """One change to a set: who, when, what (counts and a note; the rows say which)."""

    __tablename__ = "annotation_revisions"
    __table_args__ = (UniqueConstraint("set_id", "number", name="uq_annotation_revisions"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("annotation_sets.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    author: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    action: Mapped[str] = mapped_column(String(20))
    """import, add, edit, delete, revert, promote."""
    added: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


DENSITY_CELL = 256
"""Side (level-0 px) of the cells whose counts are kept as annotations change."""


class AnnotationCell(Base):
    """How many current annotations of a set have their bounding box's centre in one
    ``DENSITY_CELL`` square: kept up to date by every write, so that zoomed-out views of a
    million cells add up a few thousand counts instead of reading a million rows."""

    __tablename__ = "annotation_cells"

    set_id: Mapped[int] = mapped_column(
        ForeignKey("annotation_sets.id", ondelete="CASCADE"), primary_key=True
    )
    cx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    cy: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(Integer)


class LabelClass(Base):
    """A class of a dataset's label schema: hierarchical, coloured, optionally coded."""

    __tablename__ = "label_classes"
    __table_args__ = (UniqueConstraint("dataset_id", "name", name="uq_label_classes"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    parent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """The parent class's name in the same schema."""
    color: Mapped[str | None] = mapped_column(String(7), nullable=True)
    code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """A coded concept, e.g. ``SCT:4421005``."""
    code_meaning: Mapped[str | None] = mapped_column(String(200), nullable=True)

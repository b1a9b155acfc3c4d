"""Tables: Dataset → Case → Specimen → Block → Slide → Image, and Observations.

Follows the BIGPICTURE metadata model (MetaFleX 2.0). An Image is one scan of a glass Slide;
its ``public_id`` is the identifier users see as the slide's ``id``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Dataset(Base):
    """A published, versioned collection with a licence."""

    __tablename__ = "datasets"
    __table_args__ = (
        CheckConstraint("policy IN ('open', 'registered', 'controlled')", name="policy_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    short_name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(32), default="1")
    licence: Mapped[str | None] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    # Who may read the data (the landing information is public under every policy):
    # open (anyone), registered (signed in, terms accepted), controlled (approved request).
    policy: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    terms: Mapped[str | None] = mapped_column(Text)
    # Public ids of the slides the steward shows on the landing page (thumbnails).
    featured: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")

    cases: Mapped[list[Case]] = relationship(back_populates="dataset")


class Case(Base):
    """A patient or animal case, known only by pseudonym."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("dataset_id", "pseudonym", name="dataset_pseudonym"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    pseudonym: Mapped[str] = mapped_column(String(128))
    species: Mapped[str | None] = mapped_column(String(128), index=True)

    dataset: Mapped[Dataset] = relationship(back_populates="cases")
    specimens: Mapped[list[Specimen]] = relationship(back_populates="case")


class Specimen(Base):
    """Tissue taken from a case."""

    __tablename__ = "specimens"
    __table_args__ = (UniqueConstraint("case_id", "identifier", name="case_identifier"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    identifier: Mapped[str] = mapped_column(String(128))
    anatomical_site: Mapped[str | None] = mapped_column(String(256), index=True)
    sampling: Mapped[str | None] = mapped_column(String(256))

    case: Mapped[Case] = relationship(back_populates="specimens")
    blocks: Mapped[list[Block]] = relationship(back_populates="specimen")


class Block(Base):
    """A block embedded from a specimen."""

    __tablename__ = "blocks"
    __table_args__ = (UniqueConstraint("specimen_id", "identifier", name="specimen_identifier"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    specimen_id: Mapped[int] = mapped_column(ForeignKey("specimens.id"), index=True)
    identifier: Mapped[str] = mapped_column(String(128))

    specimen: Mapped[Specimen] = relationship(back_populates="blocks")
    slides: Mapped[list[Slide]] = relationship(back_populates="block")


class Slide(Base):
    """A glass slide cut from a block and stained."""

    __tablename__ = "slides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    block_id: Mapped[int | None] = mapped_column(ForeignKey("blocks.id"), index=True)
    identifier: Mapped[str | None] = mapped_column(String(128))
    stain_compound: Mapped[str | None] = mapped_column(String(128), index=True)
    stain_target: Mapped[str | None] = mapped_column(String(128))
    stain_method: Mapped[str | None] = mapped_column(String(128))

    dataset: Mapped[Dataset] = relationship()
    block: Mapped[Block | None] = relationship(back_populates="slides")
    images: Mapped[list[Image]] = relationship(back_populates="slide")


class Image(Base):
    """One scan of a slide: the stored whole-slide image."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id"), index=True)
    format: Mapped[str] = mapped_column(String(32), index=True)
    vendor: Mapped[str | None] = mapped_column(String(128), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    level_count: Mapped[int] = mapped_column(Integer)
    levels: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    mpp_x: Mapped[float | None] = mapped_column(Float, index=True)
    mpp_y: Mapped[float | None] = mapped_column(Float)
    objective_power: Mapped[float | None] = mapped_column(Float)
    associated: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    properties: Mapped[dict[str, str]] = mapped_column(JSON)
    checksum: Mapped[str] = mapped_column(String(64), unique=True)
    storage_key: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    source_name: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

    slide: Mapped[Slide] = relationship(back_populates="images")


class Observation(Base):
    """A statement (diagnosis, finding, description) about exactly one catalogue entity."""

    __tablename__ = "observations"
    __table_args__ = (
        CheckConstraint(
            "(CASE WHEN case_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN specimen_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN block_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN slide_id IS NULL THEN 0 ELSE 1 END"
            " + CASE WHEN image_id IS NULL THEN 0 ELSE 1 END) = 1",
            name="one_subject",
        ),
        CheckConstraint("kind IN ('diagnosis', 'finding', 'description')", name="kind_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    specimen_id: Mapped[int | None] = mapped_column(ForeignKey("specimens.id"), index=True)
    block_id: Mapped[int | None] = mapped_column(ForeignKey("blocks.id"), index=True)
    slide_id: Mapped[int | None] = mapped_column(ForeignKey("slides.id"), index=True)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    code: Mapped[str | None] = mapped_column(String(64), index=True)
    scheme: Mapped[str | None] = mapped_column(String(64))
    meaning: Mapped[str | None] = mapped_column(String(256))
    text: Mapped[str | None] = mapped_column(Text)

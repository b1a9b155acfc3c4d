"""The DICOMweb index: one row per stored DICOM instance file, with what QIDO-RS matches on
and where WADO-RS finds the file (the image's content folder and the file's name in it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from slidebank.catalog.tables import Base

UID_LENGTH = 64


class DicomInstance(Base):
    """A DICOM instance stored as one file of an image's content."""

    __tablename__ = "dicom_instances"
    __table_args__ = (UniqueConstraint("image_id", "sop_uid", name="image_sop"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    study_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    series_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    sop_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    file_name: Mapped[str] = mapped_column(String(1024))
    number_of_frames: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    modality: Mapped[str | None] = mapped_column(String(16))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    patient_name: Mapped[str | None] = mapped_column(String(324))
    study_date: Mapped[str | None] = mapped_column(String(8))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    study_id: Mapped[str | None] = mapped_column(String(64))
    series_number: Mapped[int | None] = mapped_column(Integer)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    # The attributes QIDO-RS answers with, as DICOM JSON.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)

"""Settings, built once (by the CLI or an application factory) and passed down.

Nothing in Slidebank reads the environment except :func:`Settings.from_env`; there is no
module-level settings object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ValidationMode = Literal["quick", "full"]
StoredForm = Literal["dicom", "original"]
DatePolicy = Literal["remove", "shift"]


class Settings(BaseSettings):
    """Where the repository lives and how it behaves.

    Every field can be set from the environment with the ``SLIDEBANK_`` prefix, for example
    ``SLIDEBANK_HOME=/data/slidebank`` or ``SLIDEBANK_DATABASE_URL=postgresql+psycopg://...``.
    """

    model_config = SettingsConfigDict(env_prefix="SLIDEBANK_", extra="ignore")

    home: Path = Field(default=Path("slidebank-data"), description="repository folder")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalogue; SQLite inside `home` when unset",
    )
    validation: ValidationMode = Field(
        default="quick",
        description=(
            "quick: every tile's bounds and markers, decode of first/last tile per level and "
            "of every tile in small levels; full: decode every tile"
        ),
    )
    stored_form: StoredForm = Field(
        default="dicom",
        description=(
            "dicom: store a de-identified DICOM WSI copy (BIGPICTURE's form); original: store "
            "the scanner files as they are, for data already de-identified elsewhere"
        ),
    )
    keep_originals: bool = Field(
        default=False,
        description="also keep the source files, beside the stored slide, never served",
    )
    keep_overview: bool = Field(
        default=False, description="keep the overview (macro) image; the label never is"
    )
    dates: DatePolicy = Field(
        default="remove", description="identifying DICOM dates: removed, or shifted per case"
    )
    transcode_quality: int = Field(
        default=90, ge=50, le=100, description="JPEG quality where a source must be transcoded"
    )
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description=(
            "HMAC key for pseudonyms (at least 16 bytes); when unset, a random key is kept in "
            "`home`/keys/pseudonym.key"
        ),
    )
    thumbnail_size: int = Field(default=512, ge=64, le=2048)
    copy_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    max_sidecar_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    jpeg_quality: int = Field(
        default=85, ge=30, le=100, description="JPEG quality of rendered tiles"
    )
    max_output_side: int = Field(
        default=10_000, ge=256, le=65_535, description="widest or tallest image rendered"
    )
    max_output_pixels: int = Field(
        default=25_000_000, ge=65_536, le=64 * 1024 * 1024, description="largest image rendered"
    )
    # Per server process. An open DICOM slide holds its parsed instance headers (about
    # 0.6-1.2 MB for a small slide, measured): 64 of them in each of two workers took the
    # server's process tree over 500 MB in benchmarks/tiles.py; reopening costs milliseconds.
    open_slides: int = Field(
        default=32, ge=1, description="slides a server process keeps open at once"
    )
    open_slides_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024 * 1024, description="memory of slides kept open"
    )
    decoded_cache_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="decoded tiles cached, for all slides"
    )
    telemetry: bool = Field(
        default=False,
        description="FastAPI's OpenTelemetry traces, metrics and logs, sent to the providers "
        "the deployment configures",
    )

    max_stow_bytes: int = Field(
        default=4 * 1024**3,
        ge=1024 * 1024,
        description="largest DICOMweb STOW-RS request body accepted",
    )

    max_annotation_import_bytes: int = Field(
        default=4 * 1024**3,
        ge=1024,
        description="largest annotation file an import accepts (command line and API)",
    )
    annotation_import_workers: int = Field(
        default=2,
        ge=0,
        le=64,
        description=(
            "processes that decode a large annotation import while the importing process "
            "writes it; 0 decodes in the importing process"
        ),
    )
    annotation_parallel_import_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=0,
        description="smallest annotation file decoded by worker processes (they take a "
        "second to start)",
    )

    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="how long a browser sign-in lasts"
    )
    oidc_issuer: str | None = Field(
        default=None, description="OpenID Connect provider (issuer URL) for sign-in"
    )
    oidc_client_id: str | None = Field(default=None, description="client id at the provider")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="client secret (unset for a public client with PKCE only)"
    )
    oidc_label: str = Field(default="OpenID Connect", description="the sign-in button's text")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``SLIDEBANK_*`` variables, with explicit overrides winning."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return cls(**given)  # type: ignore[arg-type]

    @property
    def catalogue_url(self) -> str:
        """The catalogue's SQLAlchemy URL: the configured one, or SQLite in the repository."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'catalogue.sqlite'}"

"""The ``slidebank`` command line. Thin: parse, call a service, print."""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from slidebank.access.policy import COMMAND_LINE
from slidebank.errors import SlidebankError

# The heavy libraries (SQLAlchemy, Alembic, OpenSlide, tifffile) are imported inside the
# commands that use them, so that `slidebank --help` answers at once.
if TYPE_CHECKING:
    from slidebank.ingest.discovery import SlideSource
    from slidebank.ingest.pipeline import Outcome
    from slidebank.services.ingesting import IngestReport
    from slidebank.services.repository import Repository

app = typer.Typer(
    help="Slidebank: a repository of annotated pathology whole-slide images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (files, scripts) gets wide tables instead of an 80-column wrap.
# Markup off: messages carry names from users' files (a feature called "[/x]" made rich
# raise instead of printing the error); styled words are built with Text. Errors are not
# wrapped when they go to a file or pipe, so that a path in them stays whole.
out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=not sys.stderr.isatty())


def _bars_hidden() -> bool:
    """Progress bars are for people at a terminal; piped or logged, stderr keeps only what
    is said (rich would still end a bar with an empty line)."""
    return not err.is_terminal


HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", envvar="SLIDEBANK_HOME", help="Repository folder [default: ./slidebank-data]."
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SLIDEBANK_DATABASE_URL",
        help="Catalogue URL, e.g. postgresql+psycopg://host/db [default: SQLite in --home].",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@contextmanager
def _opened(home: Path | None, database_url: str | None, **extra: Any) -> Iterator[Repository]:
    """The repository for a command; Slidebank errors become a message and exit code 1."""
    from slidebank.config import Settings
    from slidebank.services.repository import open_repository

    try:
        repository = open_repository(
            Settings.from_env(home=home, database_url=database_url, **extra)
        )
        try:
            yield repository
        finally:
            repository.close()
    except SlidebankError as exc:
        raise _fail(exc) from exc


def _fail(exc: SlidebankError) -> typer.Exit:
    err.print(Text.assemble(("error:", "red"), f" {exc}"))
    return typer.Exit(1)


class _RichProgress:
    """One bar of bytes copied, with the count of slides done beside it; on standard error,
    so that --json output stays clean."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("ingest", total=None, slides="")
        self.done = 0
        self.total = 0

    def planned(self, sources: list[SlideSource]) -> None:
        size = 0
        for source in sources:
            try:
                size += source.size
            except OSError:
                continue
        self.total = len(sources)
        self.progress.update(self.task, total=size, slides=f"slides 0/{self.total}")

    def copied(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def finished(self, outcome: Outcome) -> None:
        self.done += 1
        self.progress.update(self.task, slides=f"slides {self.done}/{self.total}")


@app.command()
def ingest(
    paths: Annotated[
        list[Path],
        # Unreadable or missing paths are reported per path by ingest, beside the others.
        typer.Argument(
            help="Slide files and folders (searched recursively).", readable=False, exists=False
        ),
    ],
    dataset: Annotated[str, typer.Option(help="Dataset short name; created if new.")] = "default",
    metadata: Annotated[
        Path | None, typer.Option(help="Sidecar CSV or JSON describing the slides (see README).")
    ] = None,
    validation: Annotated[
        str, typer.Option(help="quick (default) or full (decode every tile).")
    ] = "quick",
    as_json: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Ingest whole-slide images: validate, store by content, describe, register."""
    if validation not in ("quick", "full"):
        raise typer.BadParameter("must be quick or full", param_hint="--validation")
    from slidebank.services import ingesting

    with (
        _opened(home, database_url, validation=validation) as repository,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[slides]}"),
            console=err,
            disable=_bars_hidden(),
            transient=True,
        ) as bar,
    ):
        report = ingesting.ingest_paths(repository, paths, dataset, metadata, _RichProgress(bar))
    if as_json:
        for outcome in report.outcomes:
            out.print_json(json.dumps(outcome.as_json()), indent=None)
    else:
        _print_outcomes(report)
    for name in report.unused_sidecar_entries:
        err.print(Text.assemble(("note:", "yellow"), f" sidecar entry {name!r} matched no slide"))
    if report.failed:
        raise typer.Exit(1)


def _print_outcomes(report: IngestReport) -> None:
    table = Table(title="Ingest", title_justify="left")
    for column in ("status", "id", "format", "source", "reason"):
        table.add_column(column, overflow="fold")
    colours = {"ingested": "green", "duplicate": "yellow", "failed": "red"}
    for outcome in report.outcomes:
        table.add_row(
            Text(outcome.status, style=colours[outcome.status]),  # markup is off: a style
            outcome.id or "",
            outcome.format or "",
            outcome.source,
            outcome.reason or "",
        )
    out.print(table)
    counts = {status: 0 for status in colours}
    for outcome in report.outcomes:
        counts[outcome.status] += 1
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    if report.skipped:
        summary += f"; {len(report.skipped)} non-slide file(s) skipped"
    out.print(summary)


@app.command("list")
def list_command(
    dataset: Annotated[str | None, typer.Option(help="Dataset short name.")] = None,
    site: Annotated[str | None, typer.Option(help="Anatomical site contains this text.")] = None,
    stain: Annotated[
        str | None, typer.Option(help="Stain compound or target contains this.")
    ] = None,
    species: Annotated[str | None, typer.Option(help="Species contains this text.")] = None,
    diagnosis: Annotated[
        str | None, typer.Option(help="Diagnosis code (exact) or text (contains).")
    ] = None,
    vendor: Annotated[
        str | None, typer.Option(help="Scanner vendor, or part of it, e.g. aperio.")
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Stored format or the source's, e.g. dicom, aperio or svs.",
        ),
    ] = None,
    mpp_min: Annotated[float | None, typer.Option(help="Smallest µm per pixel.")] = None,
    mpp_max: Annotated[float | None, typer.Option(help="Largest µm per pixel.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """List slides, filtered."""
    from slidebank.catalog.queries import slide_filter
    from slidebank.services import browsing

    texts = {
        "site": site,
        "stain": stain,
        "species": species,
        "diagnosis": diagnosis,
        "vendor": vendor,
        "format": file_format,
    }
    where = slide_filter(dataset, texts, mpp_min, mpp_max, limit, offset)
    with _opened(home, database_url) as repository:
        rows = browsing.list_slides(repository, COMMAND_LINE, where)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    _print_slides(rows)


def _print_slides(rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{len(rows)} slide(s)", title_justify="left")
    columns = (
        "id",
        "dataset",
        "case",
        "species",
        "anatomical_site",
        "stain",
        "format",
        "vendor",
        "width",
        "height",
        "levels",
        "mpp",
    )
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            cells.append(f"{value:.3f}" if column == "mpp" and value else str(value or ""))
        table.add_row(*cells)
    out.print(table)


@app.command()
def show(
    slide: Annotated[str, typer.Argument(help="Slide id, as shown by `slidebank list`.")],
    as_json: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Show one slide's full record."""
    from slidebank.services import browsing

    with _opened(home, database_url) as repository:
        record = browsing.show_slide(repository, COMMAND_LINE, slide)
    if as_json:
        out.print_json(json.dumps(record))
        return
    image = record["image"]
    out.print(Text.assemble((record["id"], "bold"), f"  dataset {record['dataset']['short_name']}"))
    for section in ("case", "specimen", "block", "slide"):
        value = record[section]
        if value:
            out.print(f"  {section:<9} {json.dumps(value, ensure_ascii=False)}")
    out.print(
        f"  image     {image['format']} ({image['vendor']}), {image['width']}x{image['height']} px,"
        f" {len(image['levels'])} levels, mpp {image['mpp']}, {image['objective_power']}x"
    )
    out.print(f"  stored    {image['size_bytes']:,} bytes, sha256 {image['checksum']}")
    names = ", ".join(a["name"] for a in image["associated_images"]) or "none"
    out.print(f"  associated images: {names}")
    out.print(f"  {len(image['properties'])} scanner properties (use --json to see them)")


@app.command()
def thumbnail(
    slide: Annotated[str, typer.Argument(help="Slide id, as shown by `slidebank list`.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="JPEG file to write [default: ID.jpg].")
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Save a slide's thumbnail as a JPEG file, to look at."""
    from slidebank.services import browsing

    with _opened(home, database_url) as repository:
        data = browsing.thumbnail_of(repository, COMMAND_LINE, slide)
    target = output or Path(f"{slide}.jpg")
    target.write_bytes(data)
    out.print(f"wrote {target} ({len(data):,} bytes)")


@app.command()
def datasets(
    as_json: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """List datasets with their number of slides."""
    from slidebank.services import browsing

    with _opened(home, database_url) as repository:
        rows = browsing.list_datasets(repository)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="Datasets", title_justify="left")
    for column in ("short_name", "title", "version", "licence", "images"):
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(
            *(str(row[c] or "") for c in ("short_name", "title", "version", "licence", "images"))
        )
    out.print(table)


@app.command()
def check(
    rehash: Annotated[
        bool, typer.Option(help="Re-read every stored byte and verify checksums.")
    ] = False,
    repair: Annotated[
        bool, typer.Option(help="Remove orphaned objects and stale staging (no ingest running).")
    ] = False,
    as_json: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Check that the catalogue and the stored content agree."""
    from slidebank.services import checking

    with _opened(home, database_url) as repository:
        report = checking.check_repository(repository, rehash=rehash, repair=repair)
    result = {
        "images": report.images,
        "missing": report.missing,
        "corrupt": report.corrupt,
        "orphans": report.orphans,
        "stale_staging": report.stale_staging,
        "consistent": report.consistent,
        "repaired": repair,
    }
    if as_json:
        out.print_json(json.dumps(result))
    else:
        for key, value in result.items():
            out.print(f"{key:>14}: {value}")
    problems = report.missing or report.corrupt or (not repair and not report.consistent)
    if problems:
        raise typer.Exit(1)


@app.command("sample-slide")
def sample_slide(
    target: Annotated[Path, typer.Argument(help="Output .svs file.")],
    width: Annotated[int, typer.Option(min=1, max=1_000_000)] = 8192,
    height: Annotated[int, typer.Option(min=1, max=1_000_000)] = 6144,
    tissue: Annotated[
        Path | None,
        typer.Option(help="Real tiled SVS whose JPEG tiles to reuse [default: bundled IHC image]."),
    ] = None,
) -> None:
    """Write a realistic pyramidal Aperio SVS of any size, made of real tissue."""
    from slidebank.services import samples

    try:
        with Progress(
            TextColumn("writing"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err,
            disable=_bars_hidden(),
            transient=True,
        ) as bar:
            task = bar.add_task("writing", total=None)
            samples.make_sample_slide(target, width, height, tissue, lambda n: bar.advance(task, n))
    except SlidebankError as exc:
        raise _fail(exc) from exc
    out.print(f"wrote {target} ({target.stat().st_size:,} bytes, {width}x{height} px)")


@app.command()
def demo(
    slides: Annotated[
        Path | None, typer.Option(help="Your own slides to ingest instead of a generated one.")
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create the repository, put sample content in, and show the catalogue."""
    from slidebank.catalog.queries import SlideFilter
    from slidebank.services import browsing, ingesting, pyramids, samples

    with _opened(home, database_url) as repository:
        paths = [slides] if slides else [samples.demo_slides(repository.settings.home)]
        sidecar = None if slides else samples.demo_sidecar(repository.settings.home)
        report = ingesting.ingest_paths(repository, paths, "demo", sidecar)
        demo_slide = next((o.id for o in report.outcomes if o.id), None) if not slides else None
        if demo_slide:
            # Every zoom level stored, as a steward would leave it (`slidebank pyramid`).
            pyramids.complete_pyramids(repository, COMMAND_LINE, [demo_slide])
        rows = browsing.list_slides(repository, COMMAND_LINE, SlideFilter(limit=10_000))
        nuclei = samples.demo_annotations(repository, demo_slide) if demo_slide else 0
    _print_outcomes(report)
    _print_slides(rows)
    if nuclei:
        out.print(f"Sample annotations: {nuclei:,} nuclei found on the demo slide")
    out.print(f"Repository: {repository.settings.home}")
    out.print("Next: slidebank serve (viewer and API), slidebank show <id>, slidebank list --help")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (about one per core).")
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request to the console.")] = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Serve the web interface, the JSON API, DeepZoom and IIIF tiles over HTTP."""
    from slidebank.config import Settings
    from slidebank.web.server import check_repository
    from slidebank.web.server import serve as run

    try:
        settings = Settings.from_env(home=home, database_url=database_url)
        check_repository(settings, workers)  # fails here, clearly, if it cannot open
    except SlidebankError as exc:
        raise _fail(exc) from exc
    out.print(f"Slidebank is serving {settings.home} at http://{host}:{port}  (Ctrl-C stops it)")
    run(settings, host, port, workers, access_log)


@app.command()
def pyramid(
    slides: Annotated[list[str] | None, typer.Argument(help="Slide ids (sb-...).")] = None,
    all_slides: Annotated[
        bool, typer.Option("--all", help="Every slide in the repository.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Threads rendering tiles [default: cores].")
    ] = None,
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Store the power-of-two levels a slide lacks (scanners store levels 4x apart), so that
    the viewer's tiles at every zoom pass through instead of being rendered per request."""
    from slidebank.services import pyramids

    if bool(slides) == all_slides:
        raise _fail(SlidebankError("give slide ids or --all (not both)"))
    try:
        with (
            _opened(home, database_url) as repository,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("tiles"),
                TimeRemainingColumn(),
                console=err,
                disable=_bars_hidden(),
                transient=True,
            ) as bar,
        ):
            task = bar.add_task("levels", total=None)
            done = pyramids.complete_pyramids(
                repository,
                COMMAND_LINE,
                None if all_slides else list(slides or []),
                workers=workers,
                progress=lambda slide, count, total: bar.update(
                    task, description=slide, completed=count, total=total
                ),
            )
    except SlidebankError as exc:
        raise _fail(exc) from exc
    if json_output:
        out.print_json(data=[entry.as_json() for entry in done])
        return
    for entry in done:
        if entry.skipped:
            out.print(f"{entry.id}: {entry.skipped}")
            continue
        levels = ", ".join(
            f"1/{level['downsample']} ({level['width']}x{level['height']} px, "
            f"{level['frames']:,} tiles)"
            for level in entry.added
        )
        out.print(f"{entry.id}: added {levels} in {entry.seconds:.1f} s")


# Accounts, access and audit

user_app = typer.Typer(help="Accounts: add users.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for scripts and notebooks.", no_args_is_help=True)
dataset_app = typer.Typer(
    help="Dataset access: policy, terms, featured slides, roles.", no_args_is_help=True
)
audit_app = typer.Typer(help="The audit trail: verify the chain, export.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(dataset_app, name="dataset")
app.add_typer(audit_app, name="audit")
deid_app = typer.Typer(
    help="De-identification: verify stored slides, read their reports.", no_args_is_help=True
)
app.add_typer(deid_app, name="deid")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (lower case, digits, . _ -).")],
    admin: Annotated[bool, typer.Option("--admin", help="Make a site administrator.")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    email: Annotated[str | None, typer.Option(help="E-mail address.")] = None,
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Add a local user with an argon2id-hashed password (asked for unless --password-stdin;
    without a password the user can only sign in through OpenID Connect or tokens)."""
    from slidebank.services import accounts

    if password_stdin:
        password: str | None = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = None
    with _opened(home, database_url) as repository:
        try:
            record = accounts.add_user(repository, COMMAND_LINE, name, password, admin, email)
        except SlidebankError as exc:
            raise _fail(exc) from exc
    if json_output:
        out.print_json(data=record)
    else:
        out.print(f"Added user {name}{' (site administrator)' if admin else ''}")


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="User the token acts as.")],
    scope: Annotated[str, typer.Option(help="read, write or admin.")] = "read",
    expires: Annotated[int, typer.Option(help="Days until it expires (1-366).")] = 90,
    label: Annotated[str | None, typer.Option(help="What the token is for.")] = None,
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create an API token (printed once; only its hash is kept). Send it as
    `Authorization: Bearer <token>`."""
    from slidebank.access.accounts import token_record
    from slidebank.services import accounts

    with _opened(home, database_url) as repository:
        try:
            new = accounts.create_token(repository, COMMAND_LINE, user, scope, expires, label)
        except SlidebankError as exc:
            raise _fail(exc) from exc
    if json_output:
        out.print_json(data={"token": new.token, "user": user, **token_record(new.row)})
    else:
        out.print(new.token)
        err.print(f"Token {new.row.key} for {user}, scope {scope}, expires in {expires} days.")


@token_app.command("list")
def token_list(
    user: Annotated[str, typer.Argument(help="User whose tokens to list.")],
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """List a user's API tokens (never their secrets)."""
    from slidebank.services import accounts

    with _opened(home, database_url) as repository:
        try:
            rows = accounts.list_tokens(repository, COMMAND_LINE, user)
        except SlidebankError as exc:
            raise _fail(exc) from exc
    if json_output:
        out.print_json(data=rows)
        return
    table = Table("key", "label", "scope", "expires", "state")
    for row in rows:
        state = "active" if row["active"] else ("revoked" if row["revoked_at"] else "expired")
        table.add_row(
            str(row["key"]),
            str(row["label"] or ""),
            str(row["scope"]),
            str(row["expires_at"])[:10],
            state,
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    key: Annotated[str, typer.Argument(help="The token's key (the part after sbk_).")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Revoke an API token at once (servers stop accepting it within seconds)."""
    from slidebank.services import accounts

    with _opened(home, database_url) as repository:
        try:
            accounts.revoke_token(repository, COMMAND_LINE, key)
        except SlidebankError as exc:
            raise _fail(exc) from exc
    out.print(f"Token {key} revoked")


@dataset_app.command("policy")
def dataset_policy(
    name: Annotated[str, typer.Argument(help="Dataset short name.")],
    policy: Annotated[str, typer.Argument(help="open, registered or controlled.")],
    terms_file: Annotated[
        Path | None, typer.Option(help="Terms of use (text) users accept.", exists=True)
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Set who may read a dataset's data: open (anyone), registered (signed in, terms
    accepted) or controlled (approved access request)."""
    from slidebank.services import accounts

    with _opened(home, database_url) as repository:
        try:
            terms = terms_file.read_text(encoding="utf-8") if terms_file is not None else None
            accounts.update_access(repository, COMMAND_LINE, name, policy, terms)
        except SlidebankError as exc:
            raise _fail(exc) from exc
    out.print(f"Dataset {name} is {policy}")


@dataset_app.command("role")
def dataset_role(
    name: Annotated[str, typer.Argument(help="Dataset short name.")],
    user: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="steward, committee, annotator or viewer.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Give a user a role in a dataset."""
    from slidebank.services import accounts

    with _opened(home, database_url) as repository:
        try:
            accounts.add_role(repository, COMMAND_LINE, name, user, role)
        except SlidebankError as exc:
            raise _fail(exc) from exc
    out.print(f"{user} is {role} of {name}")


@dataset_app.command("feature")
def dataset_feature(
    name: Annotated[str, typer.Argument(help="Dataset short name.")],
    slides: Annotated[list[str], typer.Argument(help="Slide ids shown on the landing page.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Choose the slides whose thumbnails the dataset's public landing page shows."""
    from slidebank.services import accounts

    with _opened(home, database_url) as repository:
        try:
            accounts.set_featured(repository, COMMAND_LINE, name, slides)
        except SlidebankError as exc:
            raise _fail(exc) from exc
    out.print(f"{name} features {len(slides)} slide(s)")


@audit_app.command("verify")
def audit_verify(
    expect_head: Annotated[
        str | None,
        typer.Option(help="SEQ:HASH of a head recorded earlier, which must still be there."),
    ] = None,
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Recompute the audit trail's hash chain; exit 1 if any row was edited or deleted."""
    from slidebank.services import accounts

    expected = None
    if expect_head:
        seq, _, digest = expect_head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise _fail(SlidebankError(f"--expect-head: SEQ:HASH, got {expect_head!r}"))
        expected = (int(seq), digest)
    with _opened(home, database_url) as repository:
        result = accounts.verify_audit(repository, expected)
    if json_output:
        out.print_json(
            data={
                "intact": result.intact,
                "rows": result.rows,
                "head": f"{result.head_seq}:{result.head_hash}",
                "findings": [{"seq": f.seq, "problem": f.problem} for f in result.findings],
            }
        )
    else:
        for finding in result.findings:
            err.print(Text.assemble((f"row {finding.seq}:", "red"), f" {finding.problem}"))
        verdict = Text("intact") if result.intact else Text("BROKEN", "red")
        out.print(
            Text.assemble(
                "Audit trail ",
                verdict,
                f": {result.rows} rows; head {result.head_seq}:{result.head_hash}",
            )
        )
    if not result.intact:
        raise typer.Exit(1)


dicomweb_app = typer.Typer(help="The DICOMweb index of stored instances.", no_args_is_help=True)
app.add_typer(dicomweb_app, name="dicomweb")


@dicomweb_app.command("index")
def dicomweb_index(
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Index the DICOM instances of slides stored before the index existed (ingest indexes
    new slides itself); safe to run again."""
    from slidebank.services import dicomweb

    with _opened(home, database_url) as repository:
        count = dicomweb.index_stored_slides(repository)
    if json_output:
        out.print_json(data={"indexed_instances": count})
    else:
        out.print(f"{count} instance(s) indexed")


@deid_app.command("verify")
def deid_verify(
    slides: Annotated[list[str] | None, typer.Argument(help="Slide ids (sb-...).")] = None,
    all_slides: Annotated[
        bool, typer.Option("--all", help="Every slide in the repository.")
    ] = False,
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Scan every stored byte of slides for the identifying values of their sources (ASCII,
    UTF-16, vendor date spellings) and for label or overview images; exit 1 on any finding."""
    from slidebank.services import deidentification

    if bool(slides) == all_slides:
        raise _fail(SlidebankError("give slide ids or --all (not both)"))
    with (
        _opened(home, database_url) as repository,
        Progress(transient=True, console=err, disable=_bars_hidden()) as bar,
    ):
        task = bar.add_task("verifying", total=None)
        checks = deidentification.verify_slides(
            repository,
            COMMAND_LINE,
            None if all_slides else list(slides or []),
            progress=lambda public_id: bar.update(task, description=public_id, advance=1),
        )
    if json_output:
        out.print_json(data=[check.as_json() for check in checks])
    else:
        for check in checks:
            if check.passed and check.verification is not None:
                out.print(
                    Text.assemble(
                        f"{check.id}: ",
                        ("clean", "green"),
                        f" ({check.verification.files} files, "
                        f"{check.verification.bytes_scanned:,} bytes)",
                    )
                )
                continue
            out.print(Text.assemble(f"{check.id}: ", ("FAILED", "red"), f" {check.problem or ''}"))
            for finding in check.verification.findings if check.verification else []:
                out.print(
                    f"  {finding.field} in {finding.file} at byte {finding.offset} "
                    f"({finding.encoding})"
                )
    if not all(check.passed for check in checks):
        raise typer.Exit(1)


@deid_app.command("report")
def deid_report(
    slide: Annotated[str, typer.Argument(help="Slide id (sb-...).")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """The slide's de-identification report (JSON): what was removed or replaced."""
    from slidebank.services import deidentification

    with _opened(home, database_url) as repository:
        report = deidentification.deid_report(repository, COMMAND_LINE, slide)
    out.print_json(data=report)


@audit_app.command("export")
def audit_export(
    dataset: Annotated[str | None, typer.Option(help="Only this dataset's events.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest events to export.")] = 100_000,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Print the audit trail, newest first, as CSV or JSON."""
    import csv

    from slidebank.services import accounts

    with _opened(home, database_url) as repository:
        try:
            rows = accounts.audit_events(repository, COMMAND_LINE, dataset, limit, 0)
        except SlidebankError as exc:
            raise _fail(exc) from exc
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    from slidebank.access.audit import csv_cell

    writer = csv.writer(sys.stdout)
    columns = ["seq", "at", "actor", "action", "dataset_id", "target", "address", "count", "hash"]
    writer.writerow([*columns, "detail"])
    for row in rows:
        cells = [row[c] for c in columns] + [json.dumps(row["detail"])]
        writer.writerow([csv_cell(cell) for cell in cells])


annotations_app = typer.Typer(
    help="Annotations: import and export files, sets, history, agreement, label schemas.",
    no_args_is_help=True,
)
app.add_typer(annotations_app, name="annotations")
ImportFormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        help="auto, qupath, geojson, asap, imagescope, dsa or dicom-ann.",
    ),
]


class _ReadProgress:
    """A binary file whose reads advance a progress bar (imports stream the file)."""

    def __init__(self, source: BinaryIO, bar: Progress, task: Any) -> None:
        self._source, self._bar, self._task = source, bar, task

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._bar.advance(self._task, len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._source.seek(offset, whence)
        self._bar.update(self._task, completed=position)
        return position

    def tell(self) -> int:
        return self._source.tell()


@annotations_app.command("import")
def annotations_import(
    slide: Annotated[str, typer.Argument(help="Slide id (sb-...).")],
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Annotation file.")],
    set_name: Annotated[
        str | None, typer.Option("--set", help="Set name [default: the file's name].")
    ] = None,
    file_format: ImportFormatOption = "auto",
    outside: Annotated[
        str, typer.Option(help="Geometry outside the slide: refuse or clip.")
    ] = "refuse",
    kind: Annotated[str, typer.Option(help="manual, semi-automatic or automatic.")] = "manual",
    author: Annotated[
        str | None, typer.Option(help="Author or algorithm provenance [default: command-line].")
    ] = None,
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Import QuPath or plain GeoJSON, ASAP or ImageScope XML, DSA JSON or DICOM annotations
    into a set of the slide: all of the file or nothing."""
    from slidebank.annotations.formats.base import ImportLimits
    from slidebank.services import annotating

    if outside not in ("refuse", "clip"):
        raise _fail(SlidebankError(f"--outside: {outside!r} is not refuse or clip"))
    with (
        _opened(home, database_url) as repository,
        file.open("rb") as source,
        Progress(transient=True, console=err, disable=_bars_hidden()) as bar,
    ):
        # The bar reads its description as markup: a file called "a[/b].json" must not crash it.
        task = bar.add_task(f"importing {escape(file.name)}", total=file.stat().st_size)
        try:
            report = annotating.import_annotations(
                repository,
                COMMAND_LINE,
                slide,
                _ReadProgress(source, bar, task),  # type: ignore[arg-type]
                file.name,
                set_name=set_name or file.stem,
                file_format=file_format,
                outside=outside,  # type: ignore[arg-type]
                kind=kind,
                author=author,
                limits=ImportLimits(max_bytes=repository.settings.max_annotation_import_bytes),
            )
        except SlidebankError as exc:
            raise _fail(exc) from exc
    if json_output:
        out.print_json(data=dataclasses.asdict(report))
        return
    out.print(
        f"{report.imported:,} annotations ({report.format}) into set "
        f"{report.set['name']!r} of {slide}, revision {report.revision}"
        + (f"; repaired {report.repaired:,}" if report.repaired else "")
        + (f"; clipped {report.clipped:,}" if report.clipped else "")
        + (f"; dropped {report.dropped:,} outside the slide" if report.dropped else "")
    )
    if report.classes:
        out.print(f"new classes in the dataset's label schema: {', '.join(report.classes)}")


@annotations_app.command("export")
def annotations_export(
    slide: Annotated[str, typer.Argument(help="Slide id (sb-...).")],
    set_name: Annotated[str, typer.Option("--set", help="Set name.")],
    file_format: Annotated[
        str,
        typer.Option("--format", help="qupath, geojson, asap, imagescope, dsa or dicom-ann."),
    ] = "geojson",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write [default: stdout].")
    ] = None,
    revision: Annotated[
        int | None, typer.Option(min=0, help="The set as it was at this revision.")
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Write a set in one of the formats (streamed: a million cells in bounded memory)."""
    from slidebank.services import annotating

    with _opened(home, database_url) as repository:
        set_id = annotating.find_set(repository, COMMAND_LINE, slide, set_name)
        if output is None:
            annotating.export_annotations(
                repository, COMMAND_LINE, set_id, file_format, sys.stdout.buffer, at=revision
            )
            return
        # Written beside the target and renamed: a failed export leaves no partial file.
        partial = output.with_name(output.name + ".partial")
        try:
            with partial.open("wb") as target:
                made = annotating.export_annotations(
                    repository, COMMAND_LINE, set_id, file_format, target, at=revision
                )
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    err.print(f"{output}: {made.size:,} bytes ({made.media_type})")


@annotations_app.command("list")
def annotations_list(
    slide: Annotated[str, typer.Argument(help="Slide id (sb-...).")],
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """The slide's annotation sets."""
    from slidebank.services import annotating

    with _opened(home, database_url) as repository:
        sets = annotating.list_sets(repository, COMMAND_LINE, slide)
    if json_output:
        out.print_json(data=sets)
        return
    table = Table("id", "name", "kind", "author", "annotations", "created")
    for item in sets:
        table.add_row(
            str(item["id"]),
            item["name"],
            item["kind"],
            item["author"],
            f"{item['annotations']:,}",
            item["created_at"][:19],
        )
    out.print(table)


@annotations_app.command("history")
def annotations_history(
    slide: Annotated[str, typer.Argument(help="Slide id (sb-...).")],
    set_name: Annotated[str, typer.Option("--set", help="Set name.")],
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Every revision of a set: who, when, what changed."""
    from slidebank.services import annotating

    with _opened(home, database_url) as repository:
        set_id = annotating.find_set(repository, COMMAND_LINE, slide, set_name)
        revisions = annotating.history(repository, COMMAND_LINE, set_id)
    if json_output:
        out.print_json(data=revisions)
        return
    table = Table("revision", "at", "by", "action", "added", "removed", "detail")
    for item in revisions:
        table.add_row(
            str(item["number"]),
            item["at"][:19],
            item["author"],
            item["action"],
            f"{item['added']:,}",
            f"{item['removed']:,}",
            json.dumps(item["detail"]),
        )
    out.print(table)


@annotations_app.command("revert")
def annotations_revert(
    slide: Annotated[str, typer.Argument(help="Slide id (sb-...).")],
    set_name: Annotated[str, typer.Option("--set", help="Set name.")],
    to: Annotated[int, typer.Option(min=0, help="The revision whose state becomes current.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Make an earlier revision's state current (as a new revision: nothing is lost)."""
    from slidebank.services import annotating

    with _opened(home, database_url) as repository:
        set_id = annotating.find_set(repository, COMMAND_LINE, slide, set_name)
        made = annotating.revert(repository, COMMAND_LINE, set_id, to)
    out.print(f"revision {made['number']}: {made['added']:,} back, {made['removed']:,} removed")


@annotations_app.command("promote")
def annotations_promote(
    slide: Annotated[str, typer.Argument(help="Slide id (sb-...).")],
    set_name: Annotated[str, typer.Option("--set", help="Set name.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Make a set the reference of its slide (it is not edited afterwards)."""
    from slidebank.services import annotating

    with _opened(home, database_url) as repository:
        set_id = annotating.find_set(repository, COMMAND_LINE, slide, set_name)
        annotating.promote(repository, COMMAND_LINE, set_id)
    out.print(f"set {set_name!r} of {slide} is now a reference set")


@annotations_app.command("agreement")
def annotations_agreement(
    slide: Annotated[str, typer.Argument(help="Slide id (sb-...).")],
    reference: Annotated[str, typer.Option(help="The reference set's name.")],
    test: Annotated[str, typer.Option(help="The set compared with it.")],
    distance: Annotated[
        float, typer.Option(min=0, help="Match distance for points and cells, in px.")
    ] = 10.0,
    cells: Annotated[
        bool, typer.Option("--cells", help="Score polygons as cells (by centroid).")
    ] = False,
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Agreement between two annotators' sets: Dice and IoU per class for regions;
    precision, recall and F1 within a distance for points and cells; Cohen's kappa."""
    from slidebank.services import annotating

    with _opened(home, database_url) as repository:
        first = annotating.find_set(repository, COMMAND_LINE, slide, reference)
        second = annotating.find_set(repository, COMMAND_LINE, slide, test)
        # No bound here: the command line compares on the repository's own machine.
        result = annotating.compare(
            repository, COMMAND_LINE, first, second, distance=distance, cells=cells, limit=None
        )
    if json_output:
        out.print_json(data=result)
        return
    _print_agreement(result)


def _print_agreement(result: dict[str, Any]) -> None:
    regions = Table("class", "Dice", "IoU", "reference px²", "test px²", title="regions")
    for row in [result["regions"]["overall"], *result["regions"]["classes"]]:
        if row is None:
            continue
        regions.add_row(
            str(row.get("label", "all classes")),
            f"{row['dice']:.3f}",
            f"{row['iou']:.3f}",
            f"{row['reference_area']:,.0f}",
            f"{row['test_area']:,.0f}",
        )
    detections = Table("class", "precision", "recall", "F1", "TP", "FP", "FN", title="points")
    for row in [result["detections"]["overall"], *result["detections"]["classes"]]:
        if row is None:
            continue
        detections.add_row(
            str(row.get("label", "all classes")),
            "-" if row["precision"] is None else f"{row['precision']:.3f}",
            "-" if row["recall"] is None else f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["true_positives"]),
            str(row["false_positives"]),
            str(row["false_negatives"]),
        )
    out.print(regions, detections)
    kappa = result.get("kappa")
    if kappa:
        out.print(f"Cohen's kappa (area-weighted, region labels): {kappa['kappa']:.3f}")


@annotations_app.command("labels")
def annotations_labels(
    dataset: Annotated[str, typer.Argument(help="Dataset short name.")],
    schema: Annotated[
        Path | None,
        typer.Option(
            "--set-from",
            exists=True,
            dir_okay=False,
            help="JSON list of {name, parent, color, code, code_meaning} to replace it with.",
        ),
    ] = None,
    json_output: JsonOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """The dataset's label schema (classes, colours, codes); replace it with --set-from."""
    from slidebank.services import annotating

    with _opened(home, database_url) as repository:
        if schema is not None:
            try:
                classes = json.loads(schema.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise _fail(SlidebankError(f"{schema}: not JSON ({exc})")) from exc
            if not isinstance(classes, list):
                raise _fail(SlidebankError(f"{schema}: expected a JSON list of classes"))
            rows = annotating.set_label_schema(repository, COMMAND_LINE, dataset, classes)
        else:
            rows = annotating.label_schema(repository, COMMAND_LINE, dataset)
    if json_output:
        out.print_json(data=rows)
        return
    table = Table("class", "parent", "colour", "code")
    for row in rows:
        table.add_row(row["name"], row["parent"] or "", row["color"] or "", row["code"] or "")
    out.print(table)


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def main() -> None:
    # wsidicom and opentile log on the root logger (orientation notes, size overrides);
    # those are not for the person running a command.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    # pydicom sets its logger to WARNING when first imported, which most commands do after
    # this line (deprecation notices of libraries that use it): a filter stays.
    logging.getLogger("pydicom").addFilter(_errors_only)
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        err.print("interrupted")
        sys.exit(130)
    except SystemExit as done:  # how every command ends (Typer's standalone mode)
        _exit_without_teardown(done)


def _exit_without_teardown(done: SystemExit) -> NoReturn:
    """End the process as ``done`` asks, without Python's interpreter teardown.

    After an ingest the teardown freed the modules of wsidicomizer, wsidicom, pydicom and
    their libraries object by object: 0.5-0.6 s of a 10 s command, for memory the
    operating system takes back anyway. What a normal exit does that matters still
    happens: the exit handlers run (logging's flush, temporary folders' removal), and
    standard output and error are flushed. With another thread still working (not a
    daemon), the normal exit waits for it."""
    if any(
        thread is not threading.main_thread() and not thread.daemon
        for thread in threading.enumerate()
    ):
        raise done
    if done.code is None or isinstance(done.code, int):
        status = done.code or 0
    else:  # sys.exit("message"): printed, status 1
        print(done.code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream
            status = status or 120  # what Python itself exits with then
    os._exit(status)

"""``newsletter list import FILE --list SLUG``: the console's CSV import, run in the command."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from ..extensions import db
from ..models import ImportStatus, MailingList
from ..validation import InvalidInput
from .jobs import RowsRefused, create_job, discard_job, not_reactivated, queue_job, table_of
from .mapping import FIELDS, columns_of
from .parse import MAX_FILE_BYTES, FileProblem
from .run import run_claimed
from .validate import RowError


@click.command("import", short_help="A list's subscribers from a CSV file, all or nothing.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--list", "slug", required=True, help="Slug of the list to import into.")
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="FIELD=HEADING",
    help="Which column holds a field (email, name, consented_at, source), "
    "when the heading is not recognised. Repeatable.",
)
@with_appcontext
def import_command(file: Path, slug: str, columns: tuple[str, ...]) -> None:
    """Import subscribers into a list from a CSV file, whole or not at all.

    Rows with consent evidence (consented_at and source) become active; rows
    without become pending and get a confirmation mail. Exits 1, importing
    nothing, when any row has an error. (A privacy-policy version is imported
    by `newsletter policy import`.)
    """
    if file.stat().st_size > MAX_FILE_BYTES:
        raise click.ClickException(f"{file} is larger than {MAX_FILE_BYTES // 2**20} MB.")
    mailing_list = db.session.scalar(select(MailingList).where(MailingList.slug == slug))
    if mailing_list is None:
        raise click.ClickException(f"No list {slug!r}.")
    try:
        job = create_job(file.read_bytes(), file.name, mailing_list.id, actor=None, ip=None)
    except FileProblem as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise click.ClickException(f"{where}{exc.message}") from exc
    except RowsRefused as exc:
        _fail(exc.errors)
    header = table_of(job).header
    try:
        claim = queue_job(
            job, _choices(columns, header, job.mapping or {}), actor=None, ip=None, run_here=True
        )
    except (InvalidInput, click.BadParameter) as exc:
        discard_job(job, actor=None, ip=None)  # no copy of the file is left behind
        if isinstance(exc, InvalidInput):
            raise click.ClickException(
                f"{exc.field}: {exc.message} Headings: {', '.join(header)}; "
                "use --column FIELD=HEADING."
            ) from None
        raise
    assert claim is not None
    total = job.total_rows
    mapped = ", ".join(f"{f} = {header[p]!r}" for f, p in columns_of(job.mapping or {}).items())
    click.echo(f"Import #{job.id}: {total} rows into {slug!r} ({mapped}).")

    def progress(rows: int) -> None:
        click.echo(f"  checked {rows} of {total} rows", err=True)

    result = run_claimed(claim, on_progress=progress)
    if result.status != ImportStatus.DONE:
        _fail([RowError(e.get("line"), e.get("field", ""), e["message"]) for e in result.errors])
    click.echo(
        f"Imported: {result.imported_active} active, {result.imported_pending} pending "
        f"(confirmation mail queued), {result.unchanged} already active, "
        f"{not_reactivated(result)} not reactivated (unsubscribed, bounced or suppressed)."
    )


def _choices(
    columns: tuple[str, ...], header: list[str], guessed: dict[str, object]
) -> dict[str, str]:
    """The guessed mapping, overridden by ``--column FIELD=HEADING`` options."""
    choices = {str(f): str(p) for p, f in guessed.items() if f}
    for option in columns:
        field, _sep, heading = option.partition("=")
        field = field.strip()
        if field not in FIELDS or heading.strip() not in header:
            raise click.BadParameter(
                f"{option!r}: use FIELD=HEADING with a field of {', '.join(FIELDS)} "
                f"and a heading of the file ({', '.join(header)}).",
                param_hint="--column",
            )
        choices = {
            f: p
            for f, p in choices.items()
            if f != field and p != str(header.index(heading.strip()))
        }
        choices[field] = str(header.index(heading.strip()))
    return choices


def _fail(errors: list[RowError]) -> None:
    """Print the errors by line and exit 1: nothing was imported."""
    click.echo("Nothing was imported. The file has errors:", err=True)
    for error in errors:
        where = f"line {error.line}" if error.line is not None else "file"
        field = f", {error.field}" if error.field else ""
        click.echo(f"  {where}{field}: {error.message}", err=True)
    sys.exit(1)

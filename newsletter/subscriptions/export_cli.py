"""`newsletter export --list SLUG [--status STATUS] [--output FILE]`."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from ..models import SubscriptionStatus
from ..validation import InvalidInput
from .csv_export import csv_chunks, export_rows, record_export
from .search import parse_filter


@click.command("export")
@click.option("--list", "list_slug", required=True, help="The list to export.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in SubscriptionStatus]),
    help="Only subscriptions with this status (default: every status).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file instead of standard output.",
)
@with_appcontext
def export_command(list_slug: str, status: str | None, output: str | None) -> None:
    """CSV of a list's subscribers with status and consent times (audited)."""
    try:
        flt = parse_filter({"list": list_slug, "status": status or ""})
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{exc.field}") from exc
    record_export(flt, actor=None, ip=None, target=f"file {output}" if output else "stdout")
    if output:
        # newline="": the csv module writes its own CRLF line ends.
        with open(output, "w", encoding="utf-8", newline="") as stream:
            for chunk in csv_chunks(export_rows(flt)):
                stream.write(chunk)
        click.echo(f"exported list {list_slug} to {output}", err=True)
    else:
        for chunk in csv_chunks(export_rows(flt)):
            sys.stdout.write(chunk)

"""`newsletter list create|ensure-default|export`: lists and their subscribers as CSV.

`list import` (the CSV import) belongs to the imports package; newsletter/cli.py
adds it to this group, so a list's CSV commands sit side by side.
"""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from ..models import SubscriptionStatus
from ..validation import InvalidInput
from .csv_export import csv_chunks, export_rows, record_export
from .lists import DEFAULT_CONSENT_TEXT, create_list, ensure_default_list
from .search import parse_filter

list_cli = AppGroup(
    "list",
    help="Lists (topics), each with its own consent text; a list's subscribers as CSV.",
    short_help="Lists (topics); their subscribers as CSV (export, import).",
)


@list_cli.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="The name subscribers see.")
@click.option(
    "--consent-text",
    default=DEFAULT_CONSENT_TEXT,
    show_default="the default Danish newsletter consent",
    help="What people agree to when they subscribe.",
)
@click.option("--description", default="", help="A line about the list.")
@click.option("--default", "is_default", is_flag=True, help="Preselect it on signup forms.")
def create_command(
    slug: str, name: str, consent_text: str, description: str, is_default: bool
) -> None:
    """Create a list with version 1 of its consent text."""
    try:
        mailing_list = create_list(slug, name, consent_text, description, default=is_default)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint=exc.field) from exc
    click.echo(f"created list {mailing_list.slug} (id {mailing_list.id})")


@list_cli.command("ensure-default")
def ensure_default_command() -> None:
    """Create the default list "Nyhedsbrev" when there is no list yet."""
    created = ensure_default_list()
    click.echo(f"created default list {created.slug}" if created else "lists exist already")


@list_cli.command("export", short_help="A list's subscribers as CSV (audited).")
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
def export_command(list_slug: str, status: str | None, output: str | None) -> None:
    """CSV of a list's subscribers with status and consent times (audited).

    One row a subscription. One person's data as JSON is `newsletter privacy export`.
    """
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

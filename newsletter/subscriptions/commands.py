"""`newsletter list create|ensure-default`."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from ..validation import InvalidInput
from .lists import DEFAULT_CONSENT_TEXT, create_list, ensure_default_list

list_cli = AppGroup("list", help="Lists (topics), each with its own consent text.")


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

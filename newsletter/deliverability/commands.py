"""`newsletter bounces fetch`: read the bounce mailbox once."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from .fetch import DEFAULT_LIMIT, fetch_bounces
from .imap import MailboxError

bounces_cli = AppGroup(
    "bounces",
    help="The bounce mailbox (BOUNCE_IMAP_URL): bounces, complaints and auto-replies.",
    short_help="Read the bounce mailbox.",
)


@bounces_cli.command("fetch")
@click.option(
    "--limit",
    default=DEFAULT_LIMIT,
    show_default=True,
    type=click.IntRange(min=1),
    help="Read at most this many messages.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def fetch_command(limit: int, as_json: bool) -> None:
    """Read the bounce mailbox once: record every bounce, complaint and
    auto-reply, and move each message read to the processed folder.

    Messages that cannot be read stay in the mailbox (marked) and are counted.
    Exits 1 when the mailbox cannot be read or a message could not be
    recorded (it is tried again next time).
    """
    try:
        counts = fetch_bounces(limit)
    except MailboxError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(counts.as_dict(), sort_keys=True))
    else:
        click.echo(
            f"bounces: {counts.messages} message(s) read, {counts.reports} report(s): "
            f"{counts.recorded} new, {counts.duplicates} seen before; "
            f"{counts.moved} moved, {counts.deleted} deleted; "
            f"{counts.unreadable} unreadable ({counts.unreadable_waiting} waiting in the "
            f"mailbox); {counts.failed} failed"
        )
    if counts.failed:
        raise SystemExit(1)

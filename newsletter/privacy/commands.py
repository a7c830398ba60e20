"""`newsletter policy import FILE`, `newsletter purge`, `newsletter privacy export|erase|report`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import AppGroup, with_appcontext

from ..ledger import Evidence
from ..models import Channel, utcnow
from ..validation import InvalidInput
from .data_export import audited_data_export, audited_intake_export, subscriber_id_for_address
from .erasure import UnknownSubscriber, erase_address
from .policy import MAX_POLICY_BYTES, PolicyError, import_policy
from .report import processing_record
from .retention import purge

policy_cli = AppGroup(
    "policy",
    help="Privacy-policy versions (the document, not subscribers).",
    short_help="Privacy-policy versions: import one from Markdown.",
)
privacy_cli = AppGroup(
    "privacy",
    help="Data protection: one person's data as JSON and the record of processing.",
    short_help="Data protection: one person's data; the record of processing.",
)


@policy_cli.command(
    "import", short_help="A privacy-policy version from Markdown (not subscribers)."
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(file: Path) -> None:
    """Import a privacy-policy version from Markdown with YAML front matter.

    Subscribers come from a CSV file with `newsletter list import`.

    The effective date comes from an `effective:` or `date:` key, or from a
    "Dato for seneste opdatering: DD.MM.YYYY" line in the text. Versions are
    immutable; importing the same content again changes nothing.
    """
    if file.stat().st_size > MAX_POLICY_BYTES:
        raise click.ClickException(f"{file}: larger than {MAX_POLICY_BYTES // 1024} KiB.")
    try:
        result = import_policy(file.read_bytes(), actor=None)
    except PolicyError as exc:
        raise click.ClickException(f"{file}: {exc}") from exc
    version = result.version
    if result.ignored_keys:
        click.echo(f"ignored front matter keys: {', '.join(result.ignored_keys)}")
    if not result.created:
        click.echo(
            f"already imported as version {version.version} "
            f"(in force from {version.effective_on.isoformat()}); nothing changed"
        )
        return
    click.echo(
        f"imported version {version.version}: {version.title!r}, "
        f"in force from {version.effective_on.isoformat()}"
    )


@click.command("purge")
@with_appcontext
def purge_command() -> None:
    """Apply the retention rules now and print what was done."""
    report = purge(utcnow())
    for line in report.lines():
        click.echo(line)


@privacy_cli.command("export", short_help="One person's data as JSON (GDPR Art. 15, 20).")
@click.argument("email")
def export_command(email: str) -> None:
    """Print everything held about one address as JSON (GDPR Art. 15, 20).

    An address whose signup is still waiting in the intake (no subscriber
    yet) gets the document with those signups only.

    A list's subscribers as CSV is `newsletter list export`.
    """
    try:
        subscriber_id = subscriber_id_for_address(email)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint="EMAIL") from exc
    except UnknownSubscriber:
        # A signup not processed yet (or failed) is data held about the address too.
        found = audited_intake_export(email, actor=None)
        if found is None:
            raise click.ClickException("No subscriber has that address.") from None
        document = found
    else:
        document = audited_data_export(subscriber_id, actor=None)
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


@privacy_cli.command("erase", short_help="Erase everything held about one address (GDPR Art. 17).")
@click.argument("email")
@click.confirmation_option(prompt="Erase everything held about this address? It cannot be undone")
def erase_command(email: str) -> None:
    """Erase everything held about one address, as "Erase me" does (GDPR Art. 17).

    Its subscriber, if any, and its signups still waiting in the intake (or
    failed there) are deleted, and the ledger keeps its events without the
    personal fields. An address whose signup a worker has not processed yet
    has only intake rows: those are deleted. Writes an audit entry.
    """
    try:
        result = erase_address(email, channel=Channel.STAFF, actor=None, evidence=Evidence())
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint="EMAIL") from exc
    if not result.found:
        raise click.ClickException("Nothing is held about that address.")
    erased = result.subscriber
    if erased is None:
        click.echo("no subscriber has that address")
    else:
        click.echo(
            f"erased subscriber #{erased.subscriber_id}: ledger events stripped "
            f"{erased.ledger_events}, deliveries anonymised {erased.deliveries}, "
            f"queued mail deleted {erased.outbox_messages}"
        )
    click.echo(f"signups deleted from the intake: {result.intake_rows}")


@privacy_cli.command(
    "report", short_help="The GDPR Art. 30 record of processing, from the live settings."
)
def report_command() -> None:
    """Print the GDPR Art. 30 record of processing from the live settings."""
    click.echo(processing_record())

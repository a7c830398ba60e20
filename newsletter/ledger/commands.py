"""`newsletter ledger verify` and `newsletter consent proof EMAIL`."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from ..validation import InvalidInput
from .chain import verify_chain
from .proof import consent_proof

ledger_cli = AppGroup("ledger", help="The consent ledger.")
consent_cli = AppGroup("consent", help="Consent evidence.")


@ledger_cli.command("verify")
def verify_command() -> None:
    """Recompute the hash chain; exit 1 on any edited, removed or reordered event."""
    report = verify_chain()
    for problem in report.problems:
        click.echo(f"BROKEN {problem}", err=True)
    if not report.ok:
        click.echo(f"ledger: {len(report.problems)} problem(s) in {report.events} events", err=True)
        raise SystemExit(1)
    click.echo(f"ledger: {report.events} events, chain intact")
    # Keep this line somewhere outside the database (a log, a mail, a notary):
    # a later verify whose chain does not contain it shows that events were
    # removed from the end, which the chain alone cannot prove.
    click.echo(f"head: #{report.head_seq} {report.head_hash}")


@consent_cli.command("proof")
@click.argument("email")
def proof_command(email: str) -> None:
    """Print the consent evidence for one address as JSON."""
    try:
        document = consent_proof(email)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint="EMAIL") from exc
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))

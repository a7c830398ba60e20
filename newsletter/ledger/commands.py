"""`newsletter ledger seal|verify|public-key|keygen` and `newsletter consent proof`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import AppGroup
from sqlalchemy import select

from newsletter_verify import parse_notes

from ..extensions import db
from ..models import LedgerKey
from ..validation import InvalidInput
from .keyring import SigningKeyError, log_origin, signer, write_new_key
from .proof import NothingSealed, consent_bundle, consent_proof
from .seal import LedgerBroken, seal_waiting
from .signing import Signer
from .verify import verify_ledger

ledger_cli = AppGroup("ledger", help="The consent ledger.")
consent_cli = AppGroup("consent", help="Consent evidence.")


@ledger_cli.command("seal")
def seal_command() -> None:
    """Seal the events waiting now into the Merkle tree and print the new checkpoint."""
    try:
        done = seal_waiting()
    except (LedgerBroken, SigningKeyError) as exc:
        click.echo(f"ledger: cannot seal: {exc}", err=True)
        raise SystemExit(1) from exc
    click.echo(f"ledger: sealed {sum(s.added for s in done)} event(s)", err=True)
    click.echo(done[-1].note, nl=False)


@ledger_cli.command("verify")
@click.option(
    "--since",
    "since",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file of checkpoints kept elsewhere: today's tree must extend each.",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="Start from the checkpoint the last successful verify reached.",
)
def verify_command(since: Path | None, incremental: bool) -> None:
    """Recompute every leaf, tree node and checkpoint; exit 1 saying where anything fails."""
    notes = []
    if since is not None:
        try:
            notes = parse_notes(since.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from exc
    report = verify_ledger(incremental=incremental, since=notes)
    for problem in report.problems:
        click.echo(f"BROKEN {problem}", err=True)
    if not report.ok:
        click.echo(f"ledger: {len(report.problems)} problem(s)", err=True)
        raise SystemExit(1)
    checked = f"events #{report.start + 1}.." if report.start else "every event"
    click.echo(
        f"ledger: {report.sealed} events sealed, {report.waiting} waiting; {checked} "
        f"({report.events}) and {report.checkpoints} checkpoint(s) verified"
    )
    if notes:
        click.echo(f"ledger: today's tree extends {len(notes)} checkpoint(s) from {since}")


@ledger_cli.command("public-key")
@click.option("--all", "every", is_flag=True, help="Also the keys that signed older checkpoints.")
def public_key_command(every: bool) -> None:
    """Print the verifier key of the checkpoints (C2SP signed-note vkey)."""
    try:
        current = signer().vkey
    except SigningKeyError as exc:
        click.echo(f"ledger: {exc}", err=True)
        raise SystemExit(1) from exc
    click.echo(current)
    if every:
        for vkey in db.session.scalars(select(LedgerKey.vkey).order_by(LedgerKey.id)):
            if vkey != current:
                click.echo(vkey)


@ledger_cli.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="The key's name (default: the log's origin).")
def keygen_command(path: Path, name: str | None) -> None:
    """Write a new checkpoint signing key to PATH (mode 0600) and print its verifier key."""
    try:
        key: Signer = write_new_key(path, name or log_origin())
    except (OSError, ValueError) as exc:  # an existing file, a path that cannot be made
        raise click.BadParameter(str(exc), param_hint="PATH") from exc
    click.echo(key.vkey)


@consent_cli.command("proof")
@click.argument("email")
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the self-contained, verifiable proof bundle to this file.",
)
def proof_command(email: str, bundle: Path | None) -> None:
    """Print the consent evidence for one address as JSON, or write its proof bundle."""
    try:
        if bundle is None:
            click.echo(json.dumps(consent_proof(email), indent=2, ensure_ascii=False))
            return
        seal_waiting()
        document = consent_bundle(email)
        if not document["events"]:
            raise NothingSealed(f"the ledger holds no sealed event of {email}")
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint="EMAIL") from exc
    except (LedgerBroken, NothingSealed, SigningKeyError) as exc:
        click.echo(f"consent: cannot make a bundle: {exc}", err=True)
        raise SystemExit(1) from exc
    bundle.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo(f"consent: {len(document['events'])} event(s) written to {bundle}")

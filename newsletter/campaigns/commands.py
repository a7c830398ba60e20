"""`newsletter campaign create|start|pause|resume|cancel|status`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
from flask.cli import AppGroup

from ..deliverability.autopause import describe
from ..validation import InvalidInput
from .service import (
    CampaignStateError,
    campaign_progress,
    cancel_campaign,
    create_campaign,
    pause_campaign,
    resume_campaign,
    start_campaign,
)

campaign_cli = AppGroup("campaign", help="Write and send newsletters.")


@campaign_cli.command("create")
@click.option("--list", "list_slug", required=True, help="The list to send to (slug).")
@click.option("--subject", required=True)
@click.option(
    "--body",
    "body_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A Markdown file.",
)
@click.option("--sender", default=None, help="From address (default MAIL_DEFAULT_SENDER).")
def create_command(list_slug: str, subject: str, body_file: Path, sender: str | None) -> None:
    """Create a draft campaign; prints its id."""
    try:
        # utf-8-sig: a byte-order mark (some Windows editors write one) is not content.
        body = body_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.BadParameter("the file is not UTF-8 text", param_hint="--body") from exc
    try:
        campaign = create_campaign(list_slug, subject, body, sender)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{exc.field}") from exc
    click.echo(campaign.id)


PAST = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def _control(action: str, campaign_id: int) -> None:
    actions = {"pause": pause_campaign, "resume": resume_campaign, "cancel": cancel_campaign}
    try:
        actions[action](campaign_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    except CampaignStateError as exc:
        raise click.ClickException(f"cannot {action}: {exc}") from exc
    click.echo(f"campaign {campaign_id}: {PAST[action]}")


@campaign_cli.command("start")
@click.argument("campaign_id", type=int)
@click.option("--at", "at", default=None, help="Schedule for this time (ISO 8601, UTC if no zone).")
def start_command(campaign_id: int, at: str | None) -> None:
    """Start sending now, or schedule it with --at."""
    when = None
    if at is not None:  # an empty --at "$WHEN" must not mean "send now"
        try:
            when = datetime.fromisoformat(at)
        except ValueError as exc:
            raise click.BadParameter(
                "use ISO 8601, e.g. 2026-12-01T08:00", param_hint="--at"
            ) from exc
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    try:
        result = start_campaign(campaign_id, when)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    except CampaignStateError as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc
    if result.scheduled and result.scheduled_at is not None:
        click.echo(f"campaign {campaign_id}: scheduled for {result.scheduled_at.isoformat()}")
    else:
        click.echo(f"campaign {campaign_id}: {result.queued} recipients queued")


@campaign_cli.command("pause")
@click.argument("campaign_id", type=int)
def pause_command(campaign_id: int) -> None:
    """Stop handing out batches (the batch in flight finishes)."""
    _control("pause", campaign_id)


@campaign_cli.command("resume")
@click.argument("campaign_id", type=int)
def resume_command(campaign_id: int) -> None:
    """Continue a paused campaign."""
    _control("resume", campaign_id)


@campaign_cli.command("cancel")
@click.argument("campaign_id", type=int)
def cancel_command(campaign_id: int) -> None:
    """Stop for good; what is still queued is cancelled."""
    _control("cancel", campaign_id)


@campaign_cli.command("status")
@click.argument("campaign_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(campaign_id: int, as_json: bool) -> None:
    """Counts (queued, sent, failed, skipped), rate, ETA, and deliveries taken
    over from a lost worker with the most of them possibly sent twice."""
    try:
        progress = campaign_progress(campaign_id)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(progress.as_dict()))
        return
    eta = "-" if progress.eta_seconds is None else f"{progress.eta_seconds:.0f} s"
    click.echo(
        f"campaign {progress.id} ({progress.status}): {progress.sent}/{progress.total} sent, "
        f"{progress.queued} queued, {progress.failed} failed, {progress.skipped} skipped, "
        f"{progress.cancelled} cancelled; {progress.rate:.1f}/s, ETA {eta}; "
        f"{progress.taken_over} taken over from a lost worker, "
        f"up to {progress.possibly_duplicated} possibly sent twice"
    )
    if progress.pause_reason:
        click.echo(describe(progress.pause_reason))

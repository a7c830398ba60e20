"""`newsletter report deliverability [--json]`: the compliance figures on the command line."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from .autopause import describe
from .compliance import LIMIT, TARGET, WINDOW_DAYS, Figures, deliverability_report

report_cli = AppGroup("report", help="Read-only reports.")

LEVELS = {
    "none": "nothing sent",
    "ok": "ok",
    "over_target": f"OVER the {TARGET * 100:g} % target",
    "over_limit": f"OVER the {LIMIT * 100:g} % limit",
}


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f} %"


def _line(figures: Figures) -> str:
    return (
        f"{figures.sends} sent, {figures.refused} refused; "
        f"hard bounces {figures.hard_bounces} ({_percent(figures.hard_bounce_rate)}), "
        f"soft bounces {figures.soft_bounces} ({_percent(figures.soft_bounce_rate)}), "
        f"complaints {figures.complaints} ({_percent(figures.complaint_rate)}, "
        f"{LEVELS[figures.complaint_level]}), "
        f"unsubscribes {figures.unsubscribes} ({_percent(figures.unsubscribe_rate)})"
    )


@report_cli.command("deliverability")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def deliverability_command(as_json: bool) -> None:
    """Bounce, complaint and unsubscribe rates over the last 30 days and per
    campaign, the complaint rate against the 0.1 % and 0.3 % lines, and any
    mail sent to someone for a list after they left it (must be none).

    Exits with status 1 when the 30-day complaint rate passes 0.3 % or a mail
    followed an unsubscribe, so a cron job notices.
    """
    report = deliverability_report()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        effect = report.effect
        click.echo(f"Last {WINDOW_DAYS} days (since {report.since:%Y-%m-%d %H:%M} UTC):")
        click.echo(f"  {_line(report.window)}")
        gap = (
            ""
            if effect.longest_gap_seconds is None
            else f", the longest {effect.longest_gap_seconds:.0f} s after the unsubscribe"
        )
        click.echo(
            f"  unsubscribes in the window: {effect.withdrawals}; "
            f"mails sent after one of them: {effect.mails_after}{gap}"
        )
        click.echo("Campaigns:" if report.campaigns else "No campaign sent in the window.")
        for campaign in report.campaigns:
            click.echo(f"  #{campaign.id} {campaign.subject!r} ({campaign.status}):")
            click.echo(f"    {_line(campaign.figures)}")
            if campaign.pause_reason:
                click.echo(f"    {describe(campaign.pause_reason)}")
    if report.window.complaint_level == "over_limit" or not report.effect.ok:
        raise SystemExit(1)

"""`newsletter check`: validate a production configuration."""

from __future__ import annotations

import os

import click

from .check import read_settings, run_checks

MARKS = {"ok": "ok     ", "warning": "WARNING", "error": "ERROR  "}


@click.command("check")
@click.option("--offline", is_flag=True, help="Only the settings; do not connect to anything.")
@click.option(
    "--dns",
    is_flag=True,
    help="Also look up the sender's SPF, DKIM and DMARC records (through DNS_RESOLVER), "
    "even with --offline.",
)
def check_command(offline: bool, dns: bool) -> None:
    """Check the settings, database, SMTP, Redis and (--dns) the sender's DNS; exit 1 on errors."""
    config = read_settings(os.path.join(os.getcwd(), "instance"))
    findings = run_checks(config, connect=not offline)
    if dns:
        from .dns_check import run_dns_checks  # dnspython only when asked

        findings += run_dns_checks(config)
    for finding in findings:
        click.echo(f"{MARKS[finding.level]} {finding.setting}: {finding.message}")
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    click.echo(f"{errors} error(s), {warnings} warning(s)")
    if errors:
        raise SystemExit(1)

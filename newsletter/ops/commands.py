"""`newsletter check`: validate a production configuration."""

from __future__ import annotations

import os

import click

from .check import read_settings, run_checks

MARKS = {"ok": "ok     ", "warning": "WARNING", "error": "ERROR  "}


@click.command("check")
@click.option("--offline", is_flag=True, help="Only the settings; do not connect to anything.")
def check_command(offline: bool) -> None:
    """Check the settings, the database, SMTP and Redis; exit 1 on any error."""
    config = read_settings(os.path.join(os.getcwd(), "instance"))
    findings = run_checks(config, connect=not offline)
    for finding in findings:
        click.echo(f"{MARKS[finding.level]} {finding.setting}: {finding.message}")
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    click.echo(f"{errors} error(s), {warnings} warning(s)")
    if errors:
        raise SystemExit(1)

"""The ``newsletter`` command: a FlaskGroup with the product's commands."""

from __future__ import annotations

import copy
import inspect
import ipaddress
import os
import threading

import click
from flask import Flask
from flask.cli import FlaskGroup, ScriptInfo, pass_script_info
from werkzeug.serving import run_simple

from . import create_app
from .config import ConfigError
from .ops.commands import check_command
from .worker.round import run_worker


@click.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@pass_script_info
def run_command(info: ScriptInfo, host: str, port: int) -> None:
    """Development server with an in-process worker and the dev mailbox."""
    os.environ.setdefault("FLASK_DEBUG", "1")
    base_url = f"http://{host}:{port}"
    os.environ.setdefault("NEWSLETTER_BASE_URL", base_url)
    app = info.load_app()
    stop = threading.Event()
    worker = threading.Thread(
        target=run_worker, args=(app, stop), kwargs={"poll_interval": 1.0}, daemon=True
    )
    worker.start()
    click.echo(f" * newsletter running at {base_url}/subscribe")
    if not app.config.get("MAIL_SERVER"):
        click.echo(f" * mails go to the dev mailbox: {base_url}/dev/mailbox")
    debugger, warning = debugger_choice(app.debug, host)
    if warning:
        click.echo(warning, err=True)
    try:
        run_simple(host, port, app, use_reloader=False, use_debugger=debugger, threaded=True)
    finally:
        stop.set()
        worker.join(timeout=10)


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only: ``localhost``,
    127.0.0.0/8 or ::1 (brackets allowed). Anything else, ``0.0.0.0`` and ``::``
    included, may be reachable from the network."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def debugger_choice(debug: bool, host: str) -> tuple[bool, str | None]:
    """Whether `newsletter run` serves Werkzeug's interactive debugger, and a warning
    to print when debug mode wanted it but it stays off.

    The debugger runs any Python typed into an error page, so it is on only in
    debug mode and only on a loopback address, where no one else can reach it.
    """
    if not debug:
        return False, None
    if is_loopback(host):
        return True, None
    return False, (
        f"Warning: the interactive debugger is off because --host {host} is not a "
        "loopback address (it would let anyone who reaches the port run code). "
        "Use --host 127.0.0.1 to have it."
    )


class NewsletterGroup(FlaskGroup):
    """Flask's group, which lists the product's commands even when the app cannot
    load (say, no SECRET_KEY yet): `newsletter --help` must help, not crash."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Our commands plus the app's, without a traceback on a configuration error."""
        names = set(click.Group.list_commands(self, ctx))
        try:
            names.update(ctx.ensure_object(ScriptInfo).load_app().cli.list_commands(ctx))
        except ConfigError as exc:
            click.echo(f"Note: {exc.args[0].splitlines()[0]}", err=True)
        return sorted(names)


def _make_group() -> FlaskGroup:
    from flask_migrate.cli import db as db_cli

    group = NewsletterGroup(create_app=create_app, help="newsletter: consent-first newsletters.")
    # The commands also live on app.cli (see register_commands), so that
    # `flask --app wsgi ...` has them too; registering them here as well lists
    # them without loading the app. Each loads the app when it runs.
    group.add_command(run_command)
    group.add_command(db_cli)
    group.add_command(check_command)  # reads settings itself: works when the app cannot load
    for command in _product_commands():
        group.add_command(command)
    return group


def _product_commands() -> list[click.Command]:
    from .campaigns.commands import campaign_cli
    from .deliverability.commands import bounces_cli
    from .deliverability.report_commands import report_cli
    from .imports.commands import import_command
    from .ledger.commands import consent_cli, ledger_cli
    from .privacy.commands import policy_cli, privacy_cli, purge_command
    from .staff.commands import staff_cli
    from .subscriptions.commands import export_command, list_cli
    from .worker.commands import worker_command

    # A list's CSV commands sit together under `list`; the import lives in its
    # own package, so it joins the group here (add_command is idempotent).
    list_cli.add_command(import_command)
    return [
        worker_command,
        ledger_cli,
        consent_cli,
        list_cli,
        campaign_cli,
        staff_cli,
        alias(export_command, "list export"),
        alias(import_command, "list import"),
        policy_cli,
        privacy_cli,
        purge_command,
        bounces_cli,
        report_cli,
    ]


def alias(command: click.Command, of: str) -> click.Command:
    """``command`` under its former top-level name, for scripts written before it
    joined a group: the same options and behaviour, and help that names the
    command it stands for (``of``, such as ``"list export"``)."""
    twin = copy.copy(command)
    summary = command.get_short_help_str(limit=200)
    twin.short_help = f"Alias of `{of}`: {summary[:1].lower()}{summary[1:]}"
    twin.help = f"Alias of `newsletter {of}`.\n\n{inspect.cleandoc(command.help or '')}"
    return twin


def register_commands(app: Flask) -> None:
    """Attach the product's commands to ``app.cli``."""
    for command in _product_commands():
        app.cli.add_command(command)


cli = _make_group()


def main() -> None:
    """Entry point of the ``newsletter`` console script.

    A configuration problem is the operator's to fix, not a crash: print the
    message alone (no traceback) and exit with status 2.
    """
    try:
        cli.main(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"Configuration error: {exc}", err=True)
        raise SystemExit(2) from None

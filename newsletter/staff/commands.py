"""`newsletter staff create|list|reset-2fa`."""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from ..models import Role
from ..validation import InvalidInput
from . import service, totp
from .passwords import generate_password

staff_cli = AppGroup("staff", help="Staff accounts for the /admin console.")


@staff_cli.command("create")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=Role.EDITOR.value,
    show_default=True,
    help="owner: accounts and settings; editor: campaigns, lists, subscribers; viewer: read.",
)
@click.option("--name", default="", help="The person's name.")
@click.option(
    "--generate-password",
    "generate",
    is_flag=True,
    help="Make a random password and print it once (the default without a terminal).",
)
def create_command(email: str, role: str, name: str, generate: bool) -> None:
    """Create a staff account; the password is asked for or generated."""
    interactive = sys.stdin.isatty()
    if generate or not interactive:
        password, show = generate_password(), True
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        show = False
    try:
        user = service.create_staff(email, Role(role), password, name=name)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint=exc.field) from exc
    click.echo(f"created {user.role} {user.email} (id {user.id})")
    if show:
        click.echo(f"password (shown once, store it now): {password}")


@staff_cli.command("list")
def list_command() -> None:
    """Print every account: id, role, status, two-factor, address."""
    for user in service.list_staff():
        status = "active" if user.is_active else "inactive"
        second = "2fa" if user.totp_secret else "no-2fa"
        click.echo(f"{user.id}\t{user.role}\t{status}\t{second}\t{user.email}")


@staff_cli.command("reset-2fa")
@click.argument("email")
def reset_two_factor_command(email: str) -> None:
    """Turn off someone's two-factor login (a lost phone); they enrol again."""
    user = service.find_by_address(email)
    if user is None:
        raise click.BadParameter("no staff account with this address", param_hint="email")
    totp.disable(user, actor=None)
    click.echo(f"two-factor login turned off for {user.email}")

"""Roles: who may open which staff view."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TypeVar, cast

from flask import abort, request
from flask_login import current_user

from ..ledger.evidence import minimise_ip
from ..models import Role, StaffUser

F = TypeVar("F", bound=Callable[..., object])


def requires(role: Role) -> Callable[[F], F]:
    """Let only staff with ``role`` or higher in; others get 403.

    The blueprint has already made sure someone is logged in.
    """

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: object, **kwargs: object) -> object:
            if not staff().may(role):
                abort(403)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def staff() -> StaffUser:
    """The logged-in staff member (typed)."""
    return cast(StaffUser, current_user._get_current_object())


def client_ip() -> str | None:
    """The client's address for the audit trail, minimised as IP_LOGGING says."""
    from flask import current_app

    return minimise_ip(request.remote_addr, str(current_app.config["IP_LOGGING"]))

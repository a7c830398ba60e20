"""Staff accounts: create, authenticate, change password, role and status.

Each function that writes is one transaction (``@transactional``): its change
and its audit entry commit together, or neither does.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ..extensions import db
from ..models import ConsoleSetting, Role, StaffUser, utcnow
from ..service_messages import in_page_language
from ..service_messages import page_gettext as _
from ..transaction import transactional
from ..validation import InvalidInput, clean_name, normalise_email
from . import audit, totp
from .passwords import (
    WeakPassword,
    check_new_password,
    hash_password,
    needs_rehash,
    verify_password,
)

REQUIRE_TWO_FACTOR = "require_two_factor"


def _staff_email(raw: str) -> str:
    """A staff address, validated and lower-cased (logins are case-insensitive)."""
    try:
        _display, key = normalise_email(raw)
    except InvalidInput as exc:
        raise _translated(exc) from exc
    return key


def _staff_name(raw: str) -> str:
    """A staff member's display name (the signup form's rules)."""
    try:
        return clean_name(raw)
    except InvalidInput as exc:
        raise _translated(exc) from exc


def _translated(exc: InvalidInput) -> InvalidInput:
    """The shared rules' refusal (English, which the signup page translates as it
    shows it) in the console page's language."""
    return InvalidInput(exc.field, in_page_language(exc.message))


def get_staff(staff_id: int) -> StaffUser | None:
    """The account with this id, or None."""
    return db.session.get(StaffUser, staff_id)


def load_session_user(user_id: str) -> StaffUser | None:
    """Flask-Login's loader: "id:version"; an old version or inactive account is None."""
    staff_id, _sep, version = user_id.partition(":")
    if not staff_id.isdigit() or not version.isdigit():
        return None
    user = db.session.get(StaffUser, int(staff_id))
    if user is None or not user.is_active or user.session_version != int(version):
        return None
    return user


@transactional
def create_staff(
    email: str,
    role: Role,
    password: str,
    *,
    name: str = "",
    actor: StaffUser | None = None,
    ip: str | None = None,
) -> StaffUser:
    """Create an account; InvalidInput names the field when something is wrong."""
    address = _staff_email(email)
    try:
        check_new_password(password, address)
    except WeakPassword as exc:
        raise InvalidInput("password", str(exc)) from exc
    exists = db.session.scalar(select(func.count()).where(StaffUser.email == address))
    if exists:
        raise InvalidInput("email", _("A staff account with this address already exists."))
    user = StaffUser(
        email=address, name=_staff_name(name), role=role, password_hash=hash_password(password)
    )
    db.session.add(user)
    db.session.flush()
    audit.record(
        actor, "staff.create", "staff", user.id, details={"email": address, "role": role}, ip=ip
    )
    return user


def login_address(typed: str) -> str:
    """The account address a typed address names, "" when it is no valid address.

    It is the uniqueness key of the shared address rules: Unicode normalised, the
    domain in Unicode whether typed as IDNA or not, everything case-folded (so
    ``BOSS@``, ``boss@`` and the same with a long s, U+017F, are one account). The
    login, its rate limit and the command line all find accounts with this function.
    """
    try:
        return _staff_email(typed)
    except InvalidInput:
        return ""


def find_by_address(typed: str) -> StaffUser | None:
    """The account a typed address names (see :func:`login_address`), or None."""
    address = login_address(typed)
    if not address:
        return None
    return db.session.scalar(select(StaffUser).where(StaffUser.email == address))


@transactional
def authenticate(email: str, password: str) -> StaffUser | None:
    """The active account with this address and password, or None.

    An unknown address costs one argon2 verification too (see passwords).
    """
    user = find_by_address(email)
    if not verify_password(user.password_hash if user else None, password):
        return None
    assert user is not None
    if not user.is_active:
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


@transactional
def record_login(user: StaffUser, ip: str | None) -> None:
    """Stamp the login time and audit it."""
    user.last_login_at = utcnow()
    audit.record(user, "staff.login", "staff", user.id, ip=ip)


@transactional
def record_failed_login(email: str, ip: str | None) -> None:
    """Audit a failed login (the address as typed, cut to the column size)."""
    audit.record(None, "staff.login_failed", "staff", "", details={"email": email[:320]}, ip=ip)


@transactional
def end_sessions(user: StaffUser) -> None:
    """End every session of the account on the server (logout): the session
    version moves on, so no copy of an old session cookie works any more."""
    user.session_version += 1


@transactional
def disable_own_two_factor(user: StaffUser, password: str, *, ip: str | None = None) -> None:
    """Turn one's own two-factor login off, only with the password again: a
    session left open must not be enough to weaken the account."""
    if not password:
        raise InvalidInput("password", _("Enter your password to turn two-factor login off."))
    if not verify_password(user.password_hash, password):
        raise InvalidInput("password", _("The current password is wrong."))
    totp.disable(user, actor=user, ip=ip)


@transactional
def change_password(user: StaffUser, current: str, new: str, *, ip: str | None = None) -> None:
    """Change a password; every other session of this account ends."""
    if not verify_password(user.password_hash, current):
        raise InvalidInput("current_password", _("The current password is wrong."))
    try:
        check_new_password(new, user.email)
    except WeakPassword as exc:
        raise InvalidInput("new_password", str(exc)) from exc
    user.password_hash = hash_password(new)
    user.password_changed_at = utcnow()
    user.session_version += 1
    audit.record(user, "staff.password_change", "staff", user.id, ip=ip)


@transactional
def update_staff(
    user: StaffUser,
    *,
    role: Role,
    is_active: bool,
    name: str,
    actor: StaffUser | None,
    ip: str | None = None,
) -> None:
    """Change an account's role, name or status; the last active owner stays."""
    before = {"role": str(user.role), "is_active": user.is_active, "name": user.name}
    demotes_owner = user.role == Role.OWNER and (role != Role.OWNER or not is_active)
    if demotes_owner and _active_owner_count() <= 1:
        raise InvalidInput("role", _("There must always be at least one active owner."))
    user.role, user.name = role, _staff_name(name)
    if user.is_active != is_active:
        user.is_active = is_active
        user.session_version += 1  # deactivation ends its sessions at once
    after = {"role": str(user.role), "is_active": user.is_active, "name": user.name}
    delta = audit.changes(before, after)
    if delta:
        audit.record(actor, "staff.update", "staff", user.id, details=delta, ip=ip)


def _active_owner_count() -> int:
    """How many active owner accounts there are."""
    query = select(func.count()).where(StaffUser.role == Role.OWNER, StaffUser.is_active)
    return int(db.session.scalar(query) or 0)


def list_staff() -> list[StaffUser]:
    """Every account, owners first, then by address."""
    users = db.session.scalars(select(StaffUser).order_by(StaffUser.email)).all()
    return sorted(users, key=lambda u: -u.role.rank)


def two_factor_required() -> bool:
    """True when an owner requires two-factor login for everyone."""
    setting = db.session.get(ConsoleSetting, REQUIRE_TWO_FACTOR)
    return bool(setting and setting.value)


@transactional
def set_two_factor_required(required: bool, *, actor: StaffUser, ip: str | None = None) -> None:
    """Require (or stop requiring) two-factor login for every account."""
    before = two_factor_required()
    setting = db.session.get(ConsoleSetting, REQUIRE_TWO_FACTOR)
    if setting is None:
        setting = ConsoleSetting(key=REQUIRE_TWO_FACTOR, value=required)
        db.session.add(setting)
    setting.value = required
    if before != required:
        audit.record(
            actor,
            "settings.update",
            "setting",
            REQUIRE_TWO_FACTOR,
            details={REQUIRE_TWO_FACTOR: {"before": before, "after": required}},
            ip=ip,
        )

"""The key that signs checkpoints, and the name of the log it signs for."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import current_app

from .signing import Signer, load_or_create

DEV_KEY_FILE = "ledger-signing.key"


def log_origin() -> str:
    """The origin line a new log's checkpoints start with: the site's host and
    ``/consent-ledger``. Fixed in the tree row at the first seal."""
    host = urlsplit(str(current_app.config.get("BASE_URL") or "")).hostname or "localhost"
    return f"{host}/consent-ledger"


def signing_key_path() -> Path:
    """LEDGER_SIGNING_KEY_FILE, or the key generated into the instance folder."""
    configured = current_app.config.get("LEDGER_SIGNING_KEY_FILE")
    return Path(configured) if configured else Path(current_app.instance_path) / DEV_KEY_FILE


def signer() -> Signer:
    """The checkpoint signer, read once per process (and per key file).

    A configured file must exist; the instance key is created on first use,
    named after the log's origin.
    """
    path = signing_key_path()
    cache: dict[Path, Signer] = current_app.extensions.setdefault("ledger_signers", {})
    if path not in cache:
        if current_app.config.get("LEDGER_SIGNING_KEY_FILE") and not path.exists():
            raise SigningKeyError(
                f"LEDGER_SIGNING_KEY_FILE {path} does not exist "
                "(make a key with `newsletter ledger keygen PATH`)"
            )
        try:
            cache[path] = load_or_create(path, log_origin())
        except (OSError, ValueError) as exc:
            raise SigningKeyError(f"the ledger signing key cannot be used: {exc}") from exc
    return cache[path]


class SigningKeyError(Exception):
    """The checkpoint signing key cannot be used: its configured file is
    missing, unreadable, too widely readable or not a key."""


def write_new_key(path: Path, name: str) -> Signer:
    """Generate a signing key named ``name`` into a new file (mode 0600);
    refuses to overwrite an existing one."""
    if path.exists():
        raise FileExistsError(f"{path} exists already; keys are never overwritten")
    return load_or_create(path, name)

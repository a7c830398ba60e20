"""The consent ledger's public face: its latest signed checkpoint and its verifier key.

Anyone may fetch both, with no cookie and no login: a person checking their
consent proof, an auditor, or a witness keeping checkpoints elsewhere (a
checkpoint saved today lets anyone prove later that the log only grew). Both
answers are plain text, exactly what ``newsletter-verify`` reads:

- ``GET /ledger/checkpoint``: the newest C2SP signed note (a tlog checkpoint),
  404 with one plain sentence before the first seal. Cached for ten seconds at
  most: the worker seals every LEDGER_SEAL_INTERVAL seconds.
- ``GET /ledger/key``: the verifier key that signs new checkpoints (C2SP
  signed-note vkey) and a newline. Cached for an hour: it changes only when
  the operator rotates the key.

Both send ``Access-Control-Allow-Origin: *``. The data is public and carries
nothing about anyone; the routes read no cookie and grant nothing, so a page
on another origin (a verifier running in a browser, a witness's dashboard)
reading them gains nothing it could not fetch itself. Without credentials the
wildcard is what the Fetch standard intends for such data.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from ..ledger.keyring import SigningKeyError, signer
from ..ledger.seal import latest_checkpoint

bp = Blueprint("ledger", __name__)
log = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"
CHECKPOINT_MAX_AGE = 10
KEY_MAX_AGE = 3600


def _plain(body: str, status: int, max_age: int) -> Response:
    """A public, cacheable plain-text answer readable from any origin."""
    response = Response(body, status=status, content_type=TEXT)
    response.headers["Cache-Control"] = f"public, max-age={max_age}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get("/ledger/checkpoint")
def checkpoint() -> ResponseReturnValue:
    """The latest signed checkpoint note, byte for byte as it was signed."""
    latest = latest_checkpoint()
    if latest is None:
        return _plain(_("No checkpoint has been signed yet.") + "\n", 404, CHECKPOINT_MAX_AGE)
    return _plain(latest.note, 200, CHECKPOINT_MAX_AGE)


@bp.get("/ledger/key")
def key() -> ResponseReturnValue:
    """The verifier key of the checkpoint signer; 503 with a sentence (and the
    reason in the log) while the configured key cannot be used."""
    try:
        vkey = signer().vkey
    except SigningKeyError as exc:
        log.error("/ledger/key: %s", exc)
        return _plain(_("The verifier key is not available just now.") + "\n", 503, 0)
    return _plain(vkey + "\n", 200, KEY_MAX_AGE)

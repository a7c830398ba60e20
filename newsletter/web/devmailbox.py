"""/dev/mailbox: the mails the app "sent" in development, stored as .eml files.

Registered only in debug mode with no MAIL_SERVER, so it can never expose
anyone's mail in production.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template
from flask.typing import ResponseReturnValue

bp = Blueprint("devmailbox", __name__, url_prefix="/dev/mailbox")
NAME = re.compile(r"^[0-9T]+-[0-9]+\.eml$")
LINK = re.compile(r"https?://[^\s<>\"]+")


def _folder() -> Path:
    return Path(current_app.config["MAILBOX_DIR"])


def _read(path: Path) -> EmailMessage:
    with path.open("rb") as handle:
        return BytesParser(policy=policy.default).parse(handle)


@bp.get("/")
def index() -> ResponseReturnValue:
    """Newest first: date, recipient, subject."""
    paths = sorted(_folder().glob("*.eml"), reverse=True) if _folder().exists() else []
    mails = [(p.name, _read(p)) for p in paths[:200]]
    return render_template("dev/mailbox.html", mails=mails)


@bp.get("/<name>")
def show(name: str) -> ResponseReturnValue:
    """One mail: headers, the text part, and its links made clickable."""
    if not NAME.fullmatch(name) or not (_folder() / name).is_file():
        abort(404)
    message = _read(_folder() / name)
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    return render_template(
        "dev/message.html", name=name, message=message, text=text, links=LINK.findall(text)
    )

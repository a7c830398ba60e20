"""The development mailbox: with no MAIL_SERVER the worker writes .eml files, and in
debug mode /dev/mailbox shows them; everywhere else the page does not exist.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import OutboxMessage, OutboxStatus, Subscription, SubscriptionStatus
from newsletter.subscriptions.lists import DEFAULT_CONSENT_TEXT, create_list
from newsletter.worker.round import run_worker

from .fixtures.smtp import SMTPServer

CONFIRM_LINK = re.compile(r"http://newsletter\.test(/confirm/[A-Za-z0-9_.\-]+)")
MAILBOX_ROW = re.compile(r'<a href="/dev/mailbox/([^"]+)">')


@pytest.fixture
def dev_app(app_factory: Callable[..., Flask]) -> Iterator[Flask]:
    """The app as `newsletter run` makes it: debug on, no MAIL_SERVER."""
    application = app_factory(MAIL_SERVER=None, DEBUG=True)
    assert application.debug
    with application.app_context():
        create_list("nyhedsbrev", "Nyhedsbrev", DEFAULT_CONSENT_TEXT, default=True)
        yield application


@pytest.fixture
def dev_client(dev_app: Flask) -> FlaskClient:
    """A browser on the development app."""
    return dev_app.test_client()


def run_dev_worker(app: Flask) -> None:
    """Run the real worker once, with no transaction of ours open."""
    db.session.commit()
    run_worker(app, threading.Event(), once=True)


def eml_files(app: Flask) -> list[Path]:
    """The mails in the dev mailbox folder, oldest first."""
    folder = Path(app.config["MAILBOX_DIR"])
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def signup(client: FlaskClient, email: str) -> None:
    """Sign up on the hosted form."""
    response = client.post(
        "/subscribe", data={"email": email}, headers={"Origin": "http://newsletter.test"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    db.session.commit()


def test_worker_writes_eml_files_and_the_mailbox_shows_them(
    dev_app: Flask, dev_client: FlaskClient, smtp_server: SMTPServer
) -> None:
    signup(dev_client, "dev-reader@example.org")
    assert eml_files(dev_app) == []  # only queued so far
    run_dev_worker(dev_app)

    (path,) = eml_files(dev_app)
    assert smtp_server.recorder.connections == 0  # no SMTP server involved at all
    assert path.parent == Path(dev_app.config["MAILBOX_DIR"])
    stored = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert stored["To"] == "dev-reader@example.org"
    assert stored["Subject"] == "Please confirm your subscription"
    db.session.commit()
    assert db.session.scalars(select(OutboxMessage.status)).all() == [OutboxStatus.SENT]
    db.session.commit()

    index = dev_client.get("/dev/mailbox/")
    assert index.status_code == 200
    page = index.get_data(as_text=True)
    assert "dev-reader@example.org" in page
    assert "Please confirm your subscription" in page
    assert MAILBOX_ROW.findall(page) == [path.name]
    assert "Set-Cookie" not in index.headers

    shown = dev_client.get(f"/dev/mailbox/{path.name}")
    assert shown.status_code == 200
    text = shown.get_data(as_text=True)
    assert "Please confirm your subscription" in text
    assert "dev-reader@example.org" in text
    links = CONFIRM_LINK.findall(text)
    assert links, text
    assert f'<a href="http://newsletter.test{links[0]}">' in text  # clickable


def test_following_the_link_from_the_dev_mailbox_confirms(
    dev_app: Flask, dev_client: FlaskClient
) -> None:
    signup(dev_client, "clicker@example.org")
    run_dev_worker(dev_app)
    (path,) = eml_files(dev_app)
    page = dev_client.get(f"/dev/mailbox/{path.name}").get_data(as_text=True)
    confirm_path = urlsplit("http://newsletter.test" + CONFIRM_LINK.findall(page)[0]).path
    db.session.commit()

    assert dev_client.get(confirm_path).status_code == 200
    assert dev_client.post(confirm_path).status_code == 200
    db.session.commit()
    status = db.session.scalars(select(Subscription.status)).one()
    assert status == SubscriptionStatus.ACTIVE

    # The welcome mail (a list mail) lands in the dev mailbox too, newest first.
    run_dev_worker(dev_app)
    assert len(eml_files(dev_app)) == 2
    welcome = BytesParser(policy=policy.default).parsebytes(eml_files(dev_app)[-1].read_bytes())
    assert welcome["Subject"] == "Welcome to Nyhedsbrev"
    assert str(welcome["List-Unsubscribe"]).startswith("<http://newsletter.test/unsubscribe/")
    assert b"List-Unsubscribe: <http://newsletter.test/unsubscribe/" in (
        eml_files(dev_app)[-1].read_bytes()
    )
    index = dev_client.get("/dev/mailbox/").get_data(as_text=True)
    assert index.index("Welcome to Nyhedsbrev") < index.index("Please confirm your subscription")


def test_dev_mailbox_is_not_registered_without_debug(
    app_factory: Callable[..., Flask], smtp_server: SMTPServer
) -> None:
    app = app_factory(MAIL_SERVER=None)
    assert not app.debug
    assert "devmailbox" not in app.blueprints
    with app.app_context():
        create_list("nyhedsbrev", "Nyhedsbrev", DEFAULT_CONSENT_TEXT, default=True)
        client = app.test_client()
        signup(client, "nodebug@example.org")
        run_dev_worker(app)
        # Mails still go to the folder (no MAIL_SERVER) but nobody can browse it.
        (path,) = eml_files(app)
        assert client.get("/dev/mailbox/").status_code == 404
        assert client.get("/dev/mailbox").status_code == 404
        assert client.get(f"/dev/mailbox/{path.name}").status_code == 404
        db.session.commit()


def test_dev_mailbox_is_not_registered_when_a_mail_server_is_set(
    app_factory: Callable[..., Flask], smtp_server: SMTPServer
) -> None:
    app = app_factory(DEBUG=True)  # MAIL_SERVER is the loopback test server
    assert app.debug
    assert app.config["MAIL_SERVER"]
    assert "devmailbox" not in app.blueprints
    with app.app_context():
        client = app.test_client()
        assert client.get("/dev/mailbox/").status_code == 404
        assert client.get("/dev/mailbox/20260101T000000000000-00000001.eml").status_code == 404
        db.session.commit()


def test_dev_mailbox_refuses_names_outside_the_pattern(
    dev_app: Flask, dev_client: FlaskClient, tmp_path: Path
) -> None:
    folder = Path(dev_app.config["MAILBOX_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder.parent / "secret.eml"
    secret.write_bytes(b"Subject: secret\r\n\r\nnot for the browser\r\n")
    (folder / "notes.eml").write_bytes(b"Subject: notes\r\n\r\nwrong name\r\n")
    (folder / "20260101T000000000000-00000001.eml.bak").write_bytes(b"Subject: bak\r\n\r\n")
    # A directory whose name fits the pattern is not a mail either.
    (folder / "20260101T000000000000-00000002.eml").mkdir()
    (folder / "20260101T000000000000-00000004.eml\n").write_bytes(b"Subject: x\r\n\r\nnewline\r\n")

    for path in (
        "/dev/mailbox/..%2fsecret.eml",
        "/dev/mailbox/..%2F..%2F..%2Fetc%2Fpasswd",
        "/dev/mailbox/%2e%2e%2fsecret.eml",
        "/dev/mailbox/../secret.eml",
        "/dev/mailbox/..\\secret.eml",
        "/dev/mailbox/notes.eml",
        "/dev/mailbox/20260101T000000000000-00000001.eml.bak",
        "/dev/mailbox/20260101T000000000000-00000002.eml",
        "/dev/mailbox/20260101T000000000000-00000003.eml",  # fits, but no such file
        "/dev/mailbox/20260101T000000000000-00000001.eml%00",
        "/dev/mailbox/20260101T000000000000-00000004.eml%0A",  # "$" alone would match this
    ):
        response = dev_client.get(path)
        assert response.status_code == 404, path
        assert b"not for the browser" not in response.data, path
    db.session.commit()

"""The production path of docs/deploy.md, run: Debian's nginx with the shipped site
file (deploy/nginx/newsletter.conf) terminating TLS in front of gunicorn started
with newsletter-web.service's command, PostgreSQL, and a ``newsletter worker``.

- A signup over https reaches the mailbox, and every link in the mail is https;
  the confirmation link, followed through nginx, confirms.
- With TRUSTED_PROXIES=1 the address in the ledger is the one nginx saw (the
  client connects from its own loopback address, nginx from 127.0.0.1), and an
  X-Forwarded-For the client sends itself changes nothing.
- App responses over https carry HSTS; plain http is redirected to https.
- A request for any other host name (forged Host, forged or missing TLS server
  name) gets nginx's default server, which answers nothing, and never reaches
  gunicorn.

PostgreSQL only: web processes and a worker are separate processes on one database.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from flask import Flask
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.models import ConsentEvent, MailingList, SignupIntake, Subscriber

from .conftest import BACKEND, TEST_SECRET
from .fixtures.mailflow import LINK, html_of, link_path, text_of
from .fixtures.nginx import HOST, Site, running_site
from .fixtures.smtp import SMTPServer
from .test_sending_guarantees import (  # noqa: F401 (start_worker is a fixture)
    StartWorker,
    start_worker,
    wait_for,
)

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(
        BACKEND != "postgresql",
        reason="the production path is web processes and a worker on PostgreSQL "
        "(docs/deploy.md). Run with NEWSLETTER_TEST_BACKEND=postgresql",
    ),
]

BASE_URL = f"https://{HOST}"
HSTS = "max-age=31536000; includeSubDomains"
CLIENT = "127.0.0.2"  # a visitor; nginx itself connects to gunicorn from 127.0.0.1
FORGER = "127.0.0.3"  # a visitor who sends X-Forwarded-For
FORGED_FOR = "203.0.113.9"


@pytest.fixture
def site(
    app: Flask, default_list: MailingList, database_url: str, tmp_path: Path
) -> Iterator[Site]:
    """nginx and gunicorn serving BASE_URL behind one trusted proxy, full IPs logged."""
    db.session.commit()
    settings = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET,
        "BASE_URL": BASE_URL,
        "TRUSTED_PROXIES": "1",
        "IP_LOGGING": "full",
        "LEDGER_SIGNING_KEY_FILE": str(app.config["LEDGER_SIGNING_KEY_FILE"]),
    }
    with running_site(tmp_path, settings) as running:
        yield running


@pytest.fixture
def worker(app: Flask, start_worker: StartWorker) -> None:  # noqa: F811
    """A ``newsletter worker`` process with the web processes' BASE_URL and key."""
    start_worker(BASE_URL=BASE_URL, LEDGER_SIGNING_KEY_FILE=app.config["LEDGER_SIGNING_KEY_FILE"])


def sign_up(site: Site, email: str, source: str, headers: dict[str, str] | None = None) -> int:
    """POST the hosted form over https from ``source``, from a page of BASE_URL; the status."""
    reply = site.request(
        "POST",
        "/subscribe",
        body=urlencode({"email": email}),
        headers={"Origin": BASE_URL, **(headers or {})},
        source=source,
    )
    return reply.status


def mail_to(smtp_server: SMTPServer, address: str) -> EmailMessage:
    """The first mail the SMTP server received for ``address`` (waits up to 30 s)."""
    found: list[EmailMessage] = []

    def arrived() -> bool:
        found[:] = [m for m in smtp_server.messages if m["To"].addresses[0].addr_spec == address]
        return bool(found)

    wait_for(arrived, 30, f"a mail to {address}")
    return found[0]


def ledger_of(address: str) -> list[tuple[str, str | None]]:
    """(event, ip) of every ledger event for ``address``, in order, as committed."""
    db.session.commit()
    rows = db.session.execute(
        select(ConsentEvent.event, ConsentEvent.ip)
        .where(ConsentEvent.email == address)
        .order_by(ConsentEvent.seq)
    ).all()
    db.session.commit()
    return [(str(event), ip) for event, ip in rows]


def nginx_saw(site: Site, request_line: str) -> list[str]:
    """The client address nginx logged for each request with this request line."""
    return [e.peer for e in site.access_log() if e.request == f"{request_line} HTTP/1.1"]


@pytest.mark.usefixtures("worker")
def test_a_signup_over_https_reaches_the_mailbox_with_https_links_and_the_address_nginx_saw(
    site: Site, smtp_server: SMTPServer
) -> None:
    address = "https-signup@example.org"
    assert sign_up(site, address, CLIENT) == 200, site.logs()

    mail = mail_to(smtp_server, address)
    links = LINK.findall(text_of(mail)) + LINK.findall(html_of(mail))
    assert links
    assert {urlsplit(link).scheme for link in links} == {"https"}, links
    assert {urlsplit(link).netloc for link in links if "/confirm/" in link} == {HOST}

    # The confirmation link, followed through nginx: a page, then its button.
    confirm = link_path(mail, "confirm")
    page = site.request("GET", confirm, source=CLIENT)
    assert page.status == 200
    assert page.headers["Strict-Transport-Security"] == HSTS
    assert site.request("POST", confirm, body="", source=CLIENT).status == 200

    assert nginx_saw(site, "POST /subscribe") == [CLIENT]
    assert ledger_of(address) == [("requested", CLIENT), ("confirmed", CLIENT)], site.logs()


@pytest.mark.usefixtures("worker")
def test_an_x_forwarded_for_sent_by_the_client_is_not_its_address_in_the_ledger(
    site: Site,
) -> None:
    address = "forged-for@example.org"
    assert sign_up(site, address, FORGER, {"X-Forwarded-For": FORGED_FOR}) == 200, site.logs()

    wait_for(lambda: bool(ledger_of(address)), 30, "the worker's ledger event")
    assert ledger_of(address) == [("requested", FORGER)]
    # nginx did pass the forged header on, with the address it saw appended.
    posted = [e for e in site.access_log() if e.request == "POST /subscribe HTTP/1.1"]
    assert [(e.peer, e.forwarded, e.status) for e in posted] == [(FORGER, FORGED_FOR, 200)]


def test_https_answers_carry_hsts_and_http_is_redirected_to_https(site: Site) -> None:
    reply = site.request("GET", "/subscribe?list=nyhedsbrev")
    assert reply.status == 200
    assert reply.headers.get_all("Strict-Transport-Security") == [HSTS]
    assert reply.headers["Server"] == "nginx"  # server_tokens off: no version
    assert 'name="email"' in reply.body  # the signup form, from the app

    plain = site.request("GET", "/subscribe?list=nyhedsbrev&via=http", https=False)
    assert plain.status == 301
    assert plain.headers["Location"] == f"{BASE_URL}/subscribe?list=nyhedsbrev&via=http"
    assert plain.headers.get("Strict-Transport-Security") is None  # never over http

    # nginx answered the http request itself; only the https one reached gunicorn.
    def logged(path: str) -> list[tuple[int, int]]:
        return [(e.port, e.status) for e in site.access_log() if path in e.request]

    wait_for(lambda: bool(logged("via=http")), 5, "nginx's access log")
    assert logged("via=http") == [(site.http_port, 301)]
    wait_for(lambda: "?list=nyhedsbrev" in site.gunicorn_log.read_text(), 5, "gunicorn's log")
    assert site.request("GET", "/healthz?after-http").status == 200
    wait_for(lambda: "/healthz?after-http" in site.gunicorn_log.read_text(), 5, "gunicorn's log")
    assert site.gunicorn_log.read_text().count("GET /subscribe?list=nyhedsbrev") == 1
    assert "via=http" not in site.gunicorn_log.read_text()


def test_a_request_for_another_host_gets_the_default_server_and_never_reaches_the_app(
    site: Site,
) -> None:
    probe = "/subscribe?probe=forged-host"
    form = urlencode({"email": "forged-host@example.org"})

    # Our certificate, our server name in the handshake, a forged Host: closed unanswered.
    with pytest.raises(http.client.RemoteDisconnected):
        site.request("GET", probe, host="evil.example")
    with pytest.raises(http.client.RemoteDisconnected):
        site.request(
            "POST",
            probe,
            body=form,
            host="evil.example",
            headers={"Origin": "https://evil.example"},
        )
    # Another server name, or none, in the handshake: the handshake is refused.
    for sni in ("evil.example", None):
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            site.request("GET", probe, sni=sni, host="evil.example")
    # Plain http for another host: closed unanswered, no redirect to anywhere.
    with pytest.raises(http.client.RemoteDisconnected):
        site.request("GET", probe, host="evil.example", https=False)

    # Three requests reached nginx (a refused handshake carries none), all 444.
    logged = [(e.port, e.host, e.status) for e in site.access_log() if probe in e.request]
    https, plain = site.https_port, site.http_port
    assert logged == [(https, "evil.example", 444)] * 2 + [(plain, "evil.example", 444)]
    # The same request for our host name does reach the app, and is logged there.
    assert site.request("GET", f"{probe}&control").status == 200
    wait_for(lambda: "&control" in site.gunicorn_log.read_text(), 5, "gunicorn's access log")
    assert f"{probe} " not in site.gunicorn_log.read_text()
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(SignupIntake)) == 0
    assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 0

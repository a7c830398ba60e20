"""Public pages: no cookies, strict security headers, same-origin assets, health, log
redaction and safe configuration.

The token pages are reached with real tokens taken from real mails.
"""

from __future__ import annotations

import http.client
import logging
import os
import secrets
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from newsletter import create_app
from newsletter.config import ConfigError, normalise_database_url
from newsletter.extensions import db
from newsletter.models import MailingList
from newsletter.web import RedactTokens

from .conftest import TEST_SECRET
from .fixtures.mailflow import link_path
from .fixtures.properties import PROPERTIES

PostForm = Callable[..., TestResponse]
TOKEN = "eyJzIjoiQWJDZEVmR2hJaktsTW5PcCJ9.ZkXyWq.Q2hhbmdlZC1zaWduYXR1cmUtdmFsdWUtMTIzNDU2"


@dataclass(frozen=True)
class Call:
    """One request to a public route and what it must answer."""

    name: str
    method: str
    path: str
    status: int
    token_page: bool = False


@pytest.fixture
def public_responses(
    client: FlaskClient,
    default_list: MailingList,
    post_form: PostForm,
    subscribe: Callable[..., EmailMessage],
    subscribed: Callable[..., EmailMessage],
) -> list[tuple[Call, TestResponse]]:
    """Every public route, called the way a person or a mail client calls it."""
    confirm = link_path(subscribe("pending@example.org"), "confirm")
    welcome = subscribed("active@example.org")
    unsubscribe = link_path(welcome, "unsubscribe")
    manage = link_path(welcome, "manage")
    db.session.commit()

    calls: list[tuple[Call, Callable[[], TestResponse]]] = [
        (Call("signup form", "GET", "/subscribe", 200), lambda: client.get("/subscribe")),
        (
            Call("signup", "POST", "/subscribe", 200),
            lambda: post_form("/subscribe", {"email": "new@example.org"}),
        ),
        (Call("confirm page", "GET", confirm, 200, True), lambda: client.get(confirm)),
        (Call("confirm", "POST", confirm, 200, True), lambda: client.post(confirm)),
        (Call("unsubscribe page", "GET", unsubscribe, 200, True), lambda: client.get(unsubscribe)),
        (Call("manage page", "GET", manage, 200, True), lambda: client.get(manage)),
        (
            Call("manage save", "POST", manage, 200, True),
            lambda: client.post(manage, data={"lists": [str(default_list.id)], "locale": "en"}),
        ),
        (
            Call("one-click unsubscribe", "POST", unsubscribe, 200, True),
            lambda: client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}),
        ),
        (
            Call("invalid link", "GET", f"/confirm/{TOKEN}", 400, True),
            lambda: client.get(f"/confirm/{TOKEN}"),
        ),
        (Call("health", "GET", "/healthz", 200), lambda: client.get("/healthz")),
        (
            Call("API signup", "POST", "/api/v1/subscriptions", 202),
            lambda: client.post("/api/v1/subscriptions", json={"email": "api@example.org"}),
        ),
        (Call("not found", "GET", "/no-such-page", 404), lambda: client.get("/no-such-page")),
    ]
    answered = []
    for call, make in calls:
        response = make()
        assert response.status_code == call.status, (call, response.get_data(as_text=True))
        answered.append((call, response))
    db.session.commit()
    return answered


def test_public_routes_set_no_cookie(
    public_responses: list[tuple[Call, TestResponse]], client: FlaskClient
) -> None:
    for call, response in public_responses:
        assert "Set-Cookie" not in response.headers, call
        assert response.headers.getlist("Set-Cookie") == [], call
    assert client.get_cookie("session") is None


def csp_directives(header: str) -> dict[str, list[str]]:
    """Content-Security-Policy as {directive: [sources]}."""
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def test_public_routes_send_strict_security_headers(
    public_responses: list[tuple[Call, TestResponse]],
) -> None:
    for call, response in public_responses:
        headers = response.headers
        csp = headers.get("Content-Security-Policy")
        assert csp, call
        assert "unsafe-inline" not in csp, call
        assert "unsafe-eval" not in csp, call
        directives = csp_directives(csp)
        assert directives["frame-ancestors"] == ["'none'"], call
        assert directives["default-src"] == ["'self'"], call
        assert directives["script-src"] == ["'self'"], call
        assert directives["object-src"] == ["'none'"], call
        assert headers.get("X-Content-Type-Options") == "nosniff", call
        assert headers.get("Referrer-Policy") == "no-referrer", call
        assert headers.get("X-Frame-Options") == "DENY", call
        # BASE_URL is http:// in the tests: no HSTS on a plain-HTTP deployment.
        assert "Strict-Transport-Security" not in headers, call
        if call.token_page:
            assert headers.get("Cache-Control") == "no-store", call


def test_hsts_only_when_base_url_is_https(
    app: Flask, app_factory: Callable[..., Flask], client: FlaskClient
) -> None:
    assert "Strict-Transport-Security" not in client.get("/healthz").headers
    db.session.commit()  # the request ran in our app context: close its transaction

    https_app = app_factory(BASE_URL="https://news.example")
    for path in ("/healthz", "/subscribe", "/no-such-page"):
        response = https_app.test_client().get(path, base_url="https://news.example")
        hsts = response.headers.get("Strict-Transport-Security")
        assert hsts is not None, path
        max_age = int(hsts.split(";")[0].split("=")[1])
        assert max_age >= 31536000


class AssetParser(HTMLParser):
    """Collects what a page loads (and anything inline a strict CSP would block)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[tuple[str, str]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for attribute in ("src", "href", "srcset", "action", "poster", "data"):
            value = values.get(attribute)
            if value is not None and (tag != "a" or attribute != "href"):
                self.loads.append((tag, value))
        if any(name.startswith("on") for name in values) or "style" in values:
            self.inline.append(f"<{tag}> with inline handler or style")
        if tag == "style":
            self.inline.append("<style> element")
        if tag == "script" and not values.get("src"):
            self.inline.append("inline <script>")


def is_same_origin(url: str) -> bool:
    """A relative URL or an absolute path on this host (not //other.host)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return False
    return not url.startswith("//") and not url.startswith("\\")


def test_public_pages_load_nothing_from_another_origin(
    public_responses: list[tuple[Call, TestResponse]],
) -> None:
    html_pages = [(c, r) for c, r in public_responses if r.mimetype == "text/html"]
    assert len(html_pages) >= 9
    for call, response in html_pages:
        parser = AssetParser()
        parser.feed(response.get_data(as_text=True))
        assert parser.loads, f"{call.name}: expected at least the stylesheet"
        for tag, url in parser.loads:
            assert is_same_origin(url), (call.name, tag, url)
        assert parser.inline == [], call.name
    assert not is_same_origin("//cdn.example/x.css")
    assert not is_same_origin("https://cdn.example/x.css")
    assert is_same_origin("/static/style.css")


# --- /healthz ----------------------------------------------------------------------------


def test_healthz_ok(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json()["status"] == "ok"


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_healthz_is_503_json_when_the_database_is_unreachable(
    app: Flask, app_factory: Callable[..., Flask], tmp_path: Path, backend: str
) -> None:
    # ``app`` first: the factory empties the tables through the first app it made.
    url = (
        "postgresql+psycopg://nobody:hunter2@127.0.0.1:1/none"
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'no-such-directory' / 'db.sqlite'}"
    )
    broken = app_factory(DATABASE_URL=url)
    response = broken.test_client().get("/healthz")

    assert response.status_code == 503
    assert response.is_json
    body = response.get_json()
    assert body["status"] == "error"
    text = response.get_data(as_text=True)
    assert "hunter2" not in text
    assert "Traceback" not in text
    assert "Set-Cookie" not in response.headers
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


# --- log redaction -----------------------------------------------------------------------


def werkzeug_record(path: str) -> logging.LogRecord:
    """A request line as werkzeug's development server logs it."""
    return logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '127.0.0.1 - - [01/Jan/2026 12:00:00] "%s" %s %s',
        (f"POST {path} HTTP/1.1", "200", "-"),
        None,
    )


@pytest.mark.parametrize("kind", ["confirm", "unsubscribe", "manage"])
def test_redact_tokens_filter_keeps_a_six_character_prefix(kind: str) -> None:
    record = werkzeug_record(f"/{kind}/{TOKEN}")
    assert RedactTokens().filter(record) is True  # never drops a record
    message = record.getMessage()
    assert TOKEN not in message
    assert TOKEN[6:12] not in message
    assert f"/{kind}/{TOKEN[:6]}…" in message
    assert message.startswith('127.0.0.1 - - [01/Jan/2026 12:00:00] "POST /')
    assert message.endswith(' HTTP/1.1" 200 -')


def test_redact_tokens_leaves_other_lines_alone() -> None:
    record = werkzeug_record("/subscribe?list=nyhedsbrev")
    before = record.getMessage()
    assert RedactTokens().filter(record) is True
    assert record.getMessage() == before
    assert record.args  # untouched, still lazily formatted


def test_werkzeug_logger_redacts_tokens(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        logging.getLogger("werkzeug").info(
            '%s - - [%s] "%s" %s %s',
            "127.0.0.1",
            "01/Jan/2026 12:00:00",
            f"GET /unsubscribe/{TOKEN} HTTP/1.1",
            "200",
            "-",
        )
    assert TOKEN not in caplog.text
    assert f"/unsubscribe/{TOKEN[:6]}…" in caplog.text


def test_development_server_request_log_is_redacted(
    app: Flask,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The real werkzeug server logs the request line without the token."""
    confirm = link_path(subscribe("logged@example.org"), "confirm")
    token = confirm.rsplit("/", 1)[1]
    db.session.commit()
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.handle_request)
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        thread.start()
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        try:
            connection.request("GET", confirm)
            response = connection.getresponse()
            assert response.status == 200
            response.read()
        finally:
            connection.close()
            thread.join(timeout=10)
            server.server_close()
    request_lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any(f"/confirm/{token[:6]}…" in line for line in request_lines), request_lines
    assert token not in caplog.text


def escaped(text: str) -> str:
    """Every character of ``text`` as a %-escape."""
    return "".join(f"%{ord(c):02X}" for c in text)


TOKEN_CHARACTERS = string.ascii_letters + string.digits + "_.-"


@st.composite
def spelled_token_paths(draw: st.DrawFn) -> tuple[str, str]:
    """A link token and a path to it, any of whose characters (route's or
    token's) may be %-escaped in either case of hex."""
    token = draw(st.text(TOKEN_CHARACTERS, min_size=20, max_size=120))
    route = draw(st.sampled_from(["confirm", "unsubscribe", "manage", "data"]))

    def spell(text: str) -> str:
        flags = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
        upper = draw(st.booleans())
        return "".join(
            (escaped(c) if upper else escaped(c).lower()) if flag else c
            for c, flag in zip(text, flags, strict=True)
        )

    slashes = draw(st.sampled_from(["/", "//"]))  # Werkzeug redirects "//" (and logs it)
    return token, f"{slashes}{spell(route)}{slashes}{spell(token)}"


@settings(PROPERTIES, max_examples=200)
@given(spelled_token_paths())
def test_any_spelling_of_a_token_path_is_logged_with_a_short_prefix(
    app: Flask, caplog: pytest.LogCaptureFixture, token_path: tuple[str, str]
) -> None:
    """Whichever characters a client %-escapes, the logged line decodes to at most
    the token's first six characters (gunicorn logs the request line as sent)."""
    token, path = token_path
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        logging.getLogger("werkzeug").info(
            '%s - - [%s] "%s" %s %s', "127.0.0.1", "01/Jan/2026", f"GET {path} HTTP/1.1", 200, "-"
        )
    assert "…" in caplog.text
    assert token[6:] not in unquote(caplog.text)


# --- configuration safety ----------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No FLASK_DEBUG and no NEWSLETTER_ settings from the surrounding shell."""
    import os

    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    return monkeypatch


def production_config(tmp_path: Path, **settings: object) -> dict[str, object]:
    """Settings as in production: not testing, not debug."""
    config: dict[str, object] = {
        "TESTING": False,
        "DEBUG": False,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'config.sqlite'}",
    }
    config.update(settings)
    return config


@pytest.mark.usefixtures("clean_env")
def test_missing_secret_key_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        create_app(production_config(tmp_path))
    message = str(raised.value)
    assert "NEWSLETTER_SECRET_KEY" in message
    assert "not set" in message
    assert "secrets.token_urlsafe" in message  # says how to make one


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("weak", ["short", "changeme", "x" * 31])
def test_weak_secret_key_refuses_to_start(tmp_path: Path, weak: str) -> None:
    with pytest.raises(ConfigError, match="too weak"):
        create_app(production_config(tmp_path, SECRET_KEY=weak))


@pytest.mark.usefixtures("clean_env")
def test_strong_secret_key_starts(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(36)
    assert len(key) == 48
    app = create_app(production_config(tmp_path, SECRET_KEY=key))
    assert app.config["SECRET_KEY"] == key
    assert not app.debug
    assert not app.testing


@pytest.mark.usefixtures("clean_env")
def test_secret_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", TEST_SECRET)
    app = create_app(production_config(tmp_path))
    assert app.config["SECRET_KEY"] == TEST_SECRET


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db.example/news", "postgresql+psycopg://u:p@db.example/news"),
        ("postgresql://u@db.example:5433/news", "postgresql+psycopg://u@db.example:5433/news"),
        ("postgresql+psycopg://u@db/news", "postgresql+psycopg://u@db/news"),
        ("sqlite:////var/lib/newsletter.db", "sqlite:////var/lib/newsletter.db"),
    ],
)
def test_database_urls_are_normalised_to_psycopg3(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected


@pytest.mark.usefixtures("clean_env")
def test_postgres_url_from_the_environment_uses_psycopg3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
    config = production_config(tmp_path, SECRET_KEY=TEST_SECRET)
    del config["DATABASE_URL"]
    app = create_app(config)
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://nobody@127.0.0.1:1/none"
    with app.app_context():
        assert db.engine.dialect.name == "postgresql"
        assert db.engine.dialect.driver == "psycopg"
        db.engine.dispose()


@pytest.mark.usefixtures("clean_env")
def test_prefixed_environment_variables_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_CONFIRM_MAX_AGE", "60")
    monkeypatch.setenv("NEWSLETTER_ALLOWED_ORIGINS", "https://www.example.dk, https://example.dk")
    app = create_app(production_config(tmp_path, SECRET_KEY=TEST_SECRET))
    assert app.config["CONFIRM_MAX_AGE"] == 60
    assert app.config["ALLOWED_ORIGINS"] == ["https://www.example.dk", "https://example.dk"]


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("source", ["config", "environment"])
def test_invalid_ip_logging_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    config = production_config(tmp_path, SECRET_KEY=TEST_SECRET)
    if source == "config":
        config["IP_LOGGING"] = "everything"
    else:
        monkeypatch.setenv("NEWSLETTER_IP_LOGGING", "everything")
    with pytest.raises(ConfigError, match="IP_LOGGING"):
        create_app(config)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("mode", ["full", "truncated", "none"])
def test_valid_ip_logging_values_start(tmp_path: Path, mode: str) -> None:
    app = create_app(production_config(tmp_path, SECRET_KEY=TEST_SECRET, IP_LOGGING=mode))
    assert app.config["IP_LOGGING"] == mode


# --- the development server's debugger ------------------------------------------------------


@pytest.mark.parametrize(
    ("debug", "host", "enabled", "warned"),
    [
        (False, "127.0.0.1", False, False),
        (False, "0.0.0.0", False, False),  # noqa: S104 (a value under test, no bind)
        (True, "127.0.0.1", True, False),
        (True, "127.8.9.10", True, False),
        (True, "localhost", True, False),
        (True, "::1", True, False),
        (True, "[::1]", True, False),
        (True, "0.0.0.0", False, True),  # noqa: S104
        (True, "::", False, True),
        (True, "192.168.1.20", False, True),
        (True, "::ffff:127.0.0.1", False, True),
        (True, "news.example.org", False, True),
        (True, "", False, True),
    ],
)
def test_debugger_only_in_debug_mode_and_only_on_loopback(
    debug: bool, host: str, enabled: bool, warned: bool
) -> None:
    """The debugger runs any code typed into an error page: never reachable from the network."""
    from newsletter.cli import debugger_choice

    choice, warning = debugger_choice(debug, host)
    assert choice is enabled
    assert (warning is not None) is warned
    if warning:
        assert "debugger is off" in warning


# Werkzeug's debugger answers this on any path with its own style sheet.
DEBUGGER_PROBE = "/?__debugger__=yes&cmd=resource&f=style.css"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dev_server_answer(tmp_path: Path, flask_debug: str, path: str) -> tuple[int, str]:
    """Start the real `newsletter run` on a loopback port with FLASK_DEBUG set as
    given; (status, Content-Type) of one GET of ``path``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "FLASK_"))}
    env.update(
        FLASK_DEBUG=flask_debug,
        NEWSLETTER_SECRET_KEY=TEST_SECRET,
        NEWSLETTER_DATABASE_URL=f"sqlite:///{tmp_path / 'dev.sqlite'}",
        NEWSLETTER_MAILBOX_DIR=str(tmp_path / "mailbox"),
    )
    script = Path(sys.executable).with_name("newsletter")
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(
            [str(script), "run", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    connection.request("GET", path)
                    break
                except OSError:
                    assert server.poll() is None, (tmp_path / "server.log").read_text()
                    assert time.monotonic() < deadline, "newsletter run did not start"
                    time.sleep(0.1)
            response = connection.getresponse()
            response.read()
            connection.close()
            return response.status, response.getheader("Content-Type") or ""
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_newsletter_run_without_debug_mode_has_no_debugger(tmp_path: Path) -> None:
    status, content_type = dev_server_answer(tmp_path, "0", DEBUGGER_PROBE)
    assert not content_type.startswith("text/css"), (status, content_type)


def test_newsletter_run_in_debug_mode_on_loopback_has_the_debugger(tmp_path: Path) -> None:
    """The probe above finds the debugger when it is there."""
    status, content_type = dev_server_answer(tmp_path, "1", DEBUGGER_PROBE)
    assert (status, content_type.split(";")[0]) == (200, "text/css")

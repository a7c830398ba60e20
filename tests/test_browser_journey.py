"""The staff console end to end, in headless Chromium with the real worker running.

An owner creates an editor and requires two-factor login; the editor enrols,
logs in with a code, imports a CSV, composes a campaign with its live preview,
sends a test to themself, starts the campaign and watches the progress bar
reach 100 % without reloading; the owner then finds all of it in the audit log.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pyotp
import pytest
from flask import Flask
from playwright.sync_api import expect

from newsletter.extensions import db
from newsletter.models import Role
from newsletter.worker.round import run_worker

from .fixtures.smtp import SMTPServer
from .fixtures.staff import STAFF_PASSWORD

pytestmark = pytest.mark.browser
EDITOR = "editor@example.org"
EDITOR_PASSWORD = "a long editor password"
CSV = "email,name,consented_at,source\n" + "".join(
    f"reader{n}@example.org,Reader {n},2024-03-01,Messe 2024\n" for n in range(25)
)


@pytest.fixture
def worker(app: Flask) -> Iterator[None]:
    """The real worker loop in a thread, polling every 0.2 s."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_worker, args=(app, stop), kwargs={"poll_interval": 0.2}, daemon=True
    )
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


def received(smtp_server: SMTPServer, subject: str) -> list[tuple[str, ...]]:
    """The envelope recipients of each mail with this subject received so far."""
    with smtp_server.recorder.lock:
        return [tuple(r.rcpt_tos) for r in smtp_server.recorder.received
                if r.message["Subject"] == subject]  # fmt: skip


def log_in(page, base: str, email: str, password: str, secret: str | None = None) -> None:
    """Log in through the form (and the code step)."""
    page.goto(f"{base}/admin/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    if secret:
        page.wait_for_url("**/admin/login/code")
        page.get_by_label("Six-digit code").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Continue").click()


def test_owner_editor_import_campaign_audit(
    app: Flask,
    default_list,
    make_staff,
    live_server_factory,
    browser,
    smtp_server: SMTPServer,
    worker: None,
    tmp_path,
) -> None:
    owner = make_staff(Role.OWNER, email="owner@example.org", totp=True)
    owner_secret = owner.totp_secret
    db.session.close()  # SQLite has one writer: the server and the worker need it
    base = live_server_factory(app).url
    owner_page = browser.new_context(locale="en-US").new_page()
    editor_page = browser.new_context(locale="en-US").new_page()

    # The owner creates the editor and requires two-factor login for everyone.
    log_in(owner_page, base, "owner@example.org", STAFF_PASSWORD, owner_secret)
    owner_page.goto(f"{base}/admin/staff/new")
    owner_page.get_by_label("E-mail").fill(EDITOR)
    owner_page.get_by_label("Role").select_option("editor")
    owner_page.get_by_label("Password (leave empty to generate one)").fill(EDITOR_PASSWORD)
    owner_page.get_by_role("button", name="Create account").click()
    expect(owner_page.get_by_role("heading", name="Account created")).to_be_visible()
    owner_page.goto(f"{base}/admin/staff")
    owner_page.get_by_label("Require two-factor login for every account").check()
    owner_page.get_by_role("button", name="Save settings").click()

    # The editor must enrol, then logs in with a code.
    log_in(editor_page, base, EDITOR, EDITOR_PASSWORD)
    editor_page.wait_for_url("**/admin/account/two-factor")
    secret = editor_page.locator("figcaption code").inner_text()
    # The previous step's code: the login below then uses a newer one (never reused).
    editor_page.get_by_label("Six-digit code").fill(pyotp.TOTP(secret).at(time.time() - 30))
    editor_page.get_by_role("button", name="Turn two-factor login on").click()
    editor_page.get_by_role("button", name="Log out").click()
    log_in(editor_page, base, EDITOR, EDITOR_PASSWORD, secret)
    editor_page.wait_for_url(f"{base}/admin/")

    # The editor imports a CSV with consent evidence; the worker runs it.
    csv_path = tmp_path / "readers.csv"
    csv_path.write_text(CSV)
    editor_page.goto(f"{base}/admin/imports")
    editor_page.get_by_label("CSV file (UTF-8)").set_input_files(str(csv_path))
    editor_page.get_by_role("button", name="Upload and preview").click()
    editor_page.get_by_role("button", name="Check and import").click()
    editor_page.wait_for_function(
        "() => document.body.innerText.includes('25')"
        " && !document.querySelector('#import-progress')",
        timeout=60_000,
    )

    # Compose with the live preview, send a test, start, watch the progress.
    editor_page.goto(f"{base}/admin/campaigns/new")
    editor_page.get_by_label("Subject").fill("Nyt fra Inklusio")
    editor_page.get_by_label("Body (Markdown)").fill("# Hej {{ name }}\n\nLæs mere om os.")
    # The page swaps in a fresh iframe per preview (hidden until it has loaded).
    preview = editor_page.frame_locator("iframe.mail-preview:not([hidden])").last
    preview.get_by_role("heading", name=re.compile("Hej")).wait_for(timeout=30_000)
    editor_page.get_by_role("button", name="Save draft").click()
    editor_page.get_by_role("button", name=re.compile("Send a test to me")).click()
    deadline = time.monotonic() + 30
    while received(smtp_server, "[Test] Nyt fra Inklusio") != [(EDITOR,)]:
        assert time.monotonic() < deadline, "the test mail did not arrive"
        time.sleep(0.2)
    editor_page.get_by_role("button", name=re.compile("Send now to 25 subscribers")).click()
    editor_page.wait_for_function(
        "() => { const bar = document.getElementById('progress-bar');"
        " return bar && bar.max > 0 && bar.value === bar.max; }",
        timeout=90_000,
    )
    assert editor_page.locator("[data-field=sent]").inner_text() == "25"
    assert sorted(to for (to,) in received(smtp_server, "Nyt fra Inklusio")) == sorted(
        f"reader{n}@example.org" for n in range(25)
    )

    # The owner sees the editor's work in the audit log.
    owner_page.goto(f"{base}/admin/audit?actor={EDITOR}")
    log = owner_page.locator("table.audit").inner_text()
    for action in ("staff.2fa_enable", "staff.login", "import.queue", "campaign.create",
                   "campaign.test_mail", "campaign.start"):  # fmt: skip
        assert action in log, action

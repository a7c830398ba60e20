"""The Nu HTML Checker (vnu-jar from npm, run with the machine's Java) finds no error
on any public page, in either language, nor in the HTML of the mails we send."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from newsletter.campaigns.service import create_campaign, start_campaign

from .fixtures.mailflow import html_of, link_path
from .fixtures.pages import CAMPAIGN, public_pages, seed_site
from .test_accessibility import need_tool, with_lang

VNU = Path(__file__).parent / "js" / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
ORIGIN = {"Origin": "http://newsletter.test"}


def vnu_errors(files: list[Path]) -> dict[str, list[str]]:
    """Run the checker once over all files; the errors per file (warnings are not failures)."""
    need_tool(VNU)
    java = shutil.which("java")
    if not java:
        if os.environ.get("CI") == "true":
            pytest.fail("java is not installed (CI=true): .ci/run must install it")
        pytest.skip("java is not installed")
    result = subprocess.run(
        [java, "-jar", str(VNU), "--format", "json", "--exit-zero-always", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    errors: dict[str, list[str]] = {}
    for message in json.loads(result.stderr or result.stdout)["messages"]:
        if message["type"] == "error" or message.get("subType") == "fatal":
            name = Path(message.get("url", "?").removeprefix("file:")).name
            where = f"line {message.get('lastLine', '?')}"
            errors.setdefault(name, []).append(f"{where}: {message['message']}")
    return errors


def report(errors: dict[str, list[str]]) -> str:
    """One block per file, for the assertion message."""
    return "\n".join(f"{name}:\n  " + "\n  ".join(lines) for name, lines in errors.items())


@pytest.mark.parametrize("lang", ["da", "en"])
def test_every_public_page_is_valid_html(
    app: Flask, client: FlaskClient, tmp_path: Path, lang: str
) -> None:
    seeded = seed_site()
    files = []
    for state in public_pages(seeded):
        path = with_lang(state.start, lang)
        if state.form is None:
            response = client.get(path)
        else:
            response = client.post(path, data=state.form, headers=ORIGIN)
        assert response.mimetype == "text/html", state.name
        file = tmp_path / f"{state.name}.{lang}.html"
        file.write_bytes(response.get_data())
        files.append(file)
    errors = vnu_errors(files)
    assert errors == {}, report(errors)


def test_the_html_of_every_mail_is_valid(
    app: Flask,
    client: FlaskClient,
    tmp_path: Path,
    default_list: object,
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    files = []
    for lang in ("da", "en"):
        signup = {"email": f"{lang}@example.org", "name": "Læser", "locale": lang}
        assert client.post("/api/v1/subscriptions", json=signup).status_code == 202
        (confirmation,) = deliver()
        client.post(link_path(confirmation, "confirm"))
        (welcome,) = deliver()
        for kind, mail in (("confirm", confirmation), ("welcome", welcome)):
            file = tmp_path / f"mail-{kind}.{lang}.html"
            file.write_text(html_of(mail), encoding="utf-8")
            files.append(file)
    campaign = create_campaign("nyhedsbrev", "Nyt fra Inklusio", CAMPAIGN)
    start_campaign(campaign.id)
    for mail in deliver():
        file = tmp_path / f"mail-campaign.{mail['To'].addresses[0].username}.html"
        file.write_text(html_of(mail), encoding="utf-8")
        files.append(file)
    assert len(files) == 6
    errors = vnu_errors(files)
    assert errors == {}, report(errors)

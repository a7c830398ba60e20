"""The production server: gunicorn with gunicorn.conf.py serves the app, logs JSON, hides tokens."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ZZtopSecretTokenValue0123456789abcdefghij"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, deadline: float) -> int:
    """GET ``url`` until it answers; its status."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_gunicorn_serves_with_json_logs(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "NEWSLETTER_SECRET_KEY": "s" * 48,
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_BASE_URL": "https://news.example.org",
        "NEWSLETTER_LOG_FORMAT": "json",
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(gunicorn), "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            assert wait_for(f"{base}/healthz", time.monotonic() + 30) == 200
            assert wait_for(f"{base}/unsubscribe/{TOKEN}", time.monotonic() + 5) == 400
            # The same token %-escaped: routed the same, logged as sent.
            encoded = "".join(f"%{ord(c):02X}" for c in TOKEN[:3]) + TOKEN[3:]
            assert wait_for(f"{base}/unsubscribe/{encoded}", time.monotonic() + 5) == 400
        finally:
            server.terminate()
            server.wait(timeout=30)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [r for r in records if r.get("logger") == "gunicorn.access"]
    assert any("/healthz" in r["message"] for r in access)
    assert TOKEN not in "\n".join(lines)
    assert TOKEN[6:] not in unquote("\n".join(lines))
    assert any("/unsubscribe/ZZtopS…" in r["message"] for r in access)

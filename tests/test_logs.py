"""LOG_FORMAT=json: one JSON object a line, with link tokens cut short."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from newsletter.ops.logs import _NewsletterJSONHandler


@pytest.fixture
def json_logging_cleanup() -> Iterator[None]:
    """Remove the JSON handler from the root logger after the test."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if isinstance(handler, _NewsletterJSONHandler):
            root.removeHandler(handler)
    root.setLevel(level)


def test_json_lines_without_full_tokens(app_factory, capsys, json_logging_cleanup) -> None:
    app_factory(LOG_FORMAT="json")
    app_factory(LOG_FORMAT="json")  # a second app does not double the handler
    token = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    logging.getLogger("werkzeug").info('"GET /unsubscribe/%s HTTP/1.1" 200 -', token)
    # Only this logger's lines: the suite's SMTP server thread may log a closed
    # connection of an earlier test (logger "mail.log") at the same moment.
    lines = [
        line for line in capsys.readouterr().err.splitlines() if '"logger": "werkzeug"' in line
    ]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "INFO"
    assert record["logger"] == "werkzeug"
    assert "/unsubscribe/AbCdEf…" in record["message"]
    assert token not in lines[0]


def test_text_is_the_default(app_factory) -> None:
    app_factory()
    assert not any(isinstance(h, _NewsletterJSONHandler) for h in logging.getLogger().handlers)

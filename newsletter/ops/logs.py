"""Logging: plain text by default, one JSON object a line with LOG_FORMAT=json.

Whatever the format, link tokens in logged paths are cut to a short prefix
(web.RedactTokens) and no setting value is ever logged.
"""

from __future__ import annotations

import logging

from flask import Flask
from pythonjsonlogger.json import JsonFormatter

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _NewsletterJSONHandler(logging.StreamHandler):
    """Marks the handler we installed, so a second app does not add another."""


def configure_logging(app: Flask) -> None:
    """Install the JSON handler on the root logger when LOG_FORMAT is json."""
    from ..web import RedactTokens

    level = str(app.config.get("LOG_LEVEL", "INFO")).upper()
    if str(app.config.get("LOG_FORMAT", "text")).lower() != "json":
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _NewsletterJSONHandler):
            root.removeHandler(handler)
    handler = _NewsletterJSONHandler()
    handler.setFormatter(
        JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger"})
    )
    handler.addFilter(RedactTokens())
    root.addHandler(handler)
    root.setLevel(level)
    # gunicorn's and Werkzeug's loggers pass records up to the root handler.
    for name in ("gunicorn.error", "gunicorn.access", "werkzeug"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True

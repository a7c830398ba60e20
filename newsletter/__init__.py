"""newsletter: a consent-first newsletter manager."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import load_config


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the application: settings, extensions, blueprints, commands."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder="../templates",
        static_folder="../static",
    )
    load_config(app, test_config)

    from .web.params import RowIdConverter

    # Before any blueprint adds its routes: `<id:...>` is how they take a row id.
    app.url_map.converters["id"] = RowIdConverter

    from .ops.logs import configure_logging

    configure_logging(app)

    from . import admin, database, web
    from .cli import register_commands
    from .extensions import babel, db, limiter, mail, migrate
    from .i18n import select_locale

    database.init_app(app)
    migrations = os.path.normpath(os.path.join(app.root_path, "..", "migrations"))
    migrate.init_app(app, db, directory=migrations, render_as_batch=True, compare_type=True)
    mail.init_app(app)
    limiter.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    web.init_app(app)
    admin.init_app(app)
    register_commands(app)
    proxies = int(app.config["TRUSTED_PROXIES"])
    if proxies > 0:
        # Behind N reverse proxies, take the client address and scheme from
        # the headers they set (rate limits and the ledger's IP depend on it).
        # Never X-Forwarded-Host: the proxy passes Host, and origins and links
        # come from BASE_URL (web.origin), so a client header has no say in them.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=0
        )
    return app

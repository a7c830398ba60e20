"""The app as served in production, plus one route that benchmarks/signup_load.py
uses as its floor: the cheapest signup that is durable before it is answered.

POST /bench/floor does what any signup must do before it may answer 202:
the rate limit (Redis), JSON parsing, address validation, the evidence, and
one INSERT of all of it, committed. No lists, no subscriber row, no outbox,
no ledger. Whatever the real signup costs above this is the cost of our
design; the floor itself is the cost of the stack (gunicorn, Flask,
SQLAlchemy, PostgreSQL's commit). Never deployed: only the benchmark loads
this module.
"""

from __future__ import annotations

import json

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from newsletter import create_app
from newsletter.extensions import csrf, db, limiter
from newsletter.ledger import evidence_from_request
from newsletter.validation import InvalidInput, normalise_email
from newsletter.web.signup import signup_rate_limit


def add_floor_route(app: Flask) -> None:
    """Create the floor's table and add POST /bench/floor to ``app``."""
    with app.app_context():
        db.session.execute(
            text(
                "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, email text,"
                " email_key text, ip text, user_agent text, source_url text, lists text,"
                " received_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        db.session.commit()
    app.add_url_rule("/bench/floor", "bench_floor", floor, methods=["POST"])


@csrf.exempt
@limiter.limit(signup_rate_limit)
def floor() -> ResponseReturnValue:
    """Validate, store the request with its evidence in one row, answer 202."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify(error="The body is not a JSON object."), 400
    try:
        email, email_key = normalise_email(str(data.get("email") or ""))
    except InvalidInput as exc:
        return jsonify(error=exc.message, field=exc.field), 422
    evidence = evidence_from_request(request)
    db.session.execute(
        text(
            "INSERT INTO bench_floor (email, email_key, ip, user_agent, source_url, lists)"
            " VALUES (:email, :key, :ip, :agent, :source, :lists)"
        ),
        {
            "email": email,
            "key": email_key,
            "ip": evidence.ip,
            "agent": evidence.user_agent,
            "source": evidence.source_url,
            "lists": json.dumps(data.get("lists") or []),
        },
    )
    db.session.commit()
    return jsonify(status="accepted"), 202


def create_floor_app() -> Flask:
    """The production app with the floor's route: gunicorn serves
    ``floor_app:create_floor_app()`` (benchmarks/signup_load.py)."""
    app = create_app()
    add_floor_route(app)
    return app

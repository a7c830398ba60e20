"""GET /api/openapi.json: the JSON API's OpenAPI 3.1 document.

Written by hand next to the view it describes (web/api.py) and checked in the
suite by schemathesis, which sends generated requests and compares every
answer with this document.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from ..validation import MAX_EMAIL, MAX_LISTS, MAX_NAME

bp = Blueprint("openapi", __name__)

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, in words."},
        "field": {"type": "string", "description": "The request field that is wrong."},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def document(languages: list[str]) -> dict[str, Any]:
    """The OpenAPI document for this installation's languages."""
    signup = {
        "type": "object",
        "required": ["email"],
        "properties": {
            "email": {"type": "string", "format": "email", "maxLength": MAX_EMAIL},
            # Optional fields may be null: null means "not given".
            "name": {"type": ["string", "null"], "maxLength": MAX_NAME},
            "lists": {
                "type": ["array", "null"],
                "description": "List slugs; none = the default list.",
                "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"},
                "maxItems": MAX_LISTS,
            },
            # "" is accepted as "not given" too (validation.clean_locale).
            "locale": {"type": ["string", "null"], "enum": [*languages, "", None]},
        },
    }
    accepted = {
        "type": "object",
        "required": ["status", "message"],
        "properties": {
            "status": {"const": "accepted"},
            "message": {"type": "string"},
            "privacy_policy": {"type": "string", "format": "uri"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "newsletter signup API",
            "version": "1",
            "description": (
                "Double opt-in signup. The answer is the same whether the address is new, "
                "pending, subscribed or unsubscribed: it reveals nothing. The person gets "
                "a confirmation mail; nothing else happens until they confirm."
            ),
        },
        "paths": {
            "/api/v1/subscriptions": {
                "post": {
                    "operationId": "createSubscription",
                    "summary": "Ask for a subscription (a confirmation mail is sent).",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": signup}},
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted; check the inbox to confirm.",
                            "content": {"application/json": {"schema": accepted}},
                        },
                        "400": _error(
                            "The body is not a JSON object, or a text in it is not valid "
                            "Unicode (a lone surrogate such as `\\udcff`); `field` names it."
                        ),
                        "403": _error("The request's Origin may not sign people up."),
                        "413": _error("The body is too large."),
                        "415": _error("The body is not JSON."),
                        "422": _error("A field is wrong; `field` names it."),
                        "429": _error("Too many signups from this address; try later."),
                    },
                },
                "options": {
                    "operationId": "preflight",
                    "summary": "CORS preflight; allowed for ALLOWED_ORIGINS only.",
                    "responses": {
                        "204": {"description": "The origin may call the API."},
                        "403": {"description": "The origin may not."},
                    },
                },
            }
        },
    }


@bp.get("/api/openapi.json")
def openapi_json() -> ResponseReturnValue:
    """The OpenAPI document as JSON."""
    return jsonify(document(list(current_app.config["LANGUAGES"])))

"""The public archive of campaigns marked public: /archive, web views, Atom feed."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("archive", __name__)

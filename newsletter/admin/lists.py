"""Staff console: lists (routes are added to the admin blueprint here)."""

from __future__ import annotations

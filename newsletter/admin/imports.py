"""Staff console: imports (routes are added to the admin blueprint here)."""

from __future__ import annotations

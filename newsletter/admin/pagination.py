"""Page numbers for list views: parse ?page=, count, slice."""

from __future__ import annotations

from dataclasses import dataclass

from flask import request

MAX_PAGE = 10_000


@dataclass(frozen=True)
class Page:
    """Which slice of a result a list view shows."""

    number: int
    size: int

    @property
    def offset(self) -> int:
        """Rows to skip."""
        return (self.number - 1) * self.size


def requested_page(size: int = 50) -> Page:
    """The page asked for in ?page=, bounded; anything unparsable is page 1."""
    raw = request.args.get("page", "1")
    number = int(raw) if raw.isdigit() else 1
    return Page(number=min(max(number, 1), MAX_PAGE), size=size)

"""Page numbers for list views: parse ?page=, count, slice."""

from __future__ import annotations

from dataclasses import dataclass

from ..web.params import query_number

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

    @property
    def is_last_allowed(self) -> bool:
        """Whether this is MAX_PAGE, past which no page may be asked for."""
        return self.number >= MAX_PAGE


def requested_page(size: int = 50) -> Page:
    """The page asked for in ?page= (1 when absent); not 1 to MAX_PAGE in ASCII digits is a 400."""
    return Page(number=query_number("page", MAX_PAGE, default=1), size=size)

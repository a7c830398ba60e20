"""Bulk inserts: COPY on PostgreSQL, executemany elsewhere.

An import (or a burst of events) writes up to a few hundred thousand rows in one transaction.
PostgreSQL's COPY takes them in one stream, several times faster than an
INSERT per row (even pipelined); SQLite's executemany is already a tight loop
in one process. Values go through each column's own bind processing (UTC
timestamps, enums, JSON), so both paths store exactly what the ORM would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, insert

from .extensions import db

CHUNK = 5000


def bulk_insert(table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in the caller's transaction."""
    if not rows:
        return
    connection = db.session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql":
        for start in range(0, len(rows), CHUNK):
            db.session.execute(insert(table), list(rows[start : start + CHUNK]))
        return
    names = list(rows[0])
    # Column defaults (Python-side) are filled in as an INSERT would.
    defaults = {
        c.key: getattr(c.default, "arg", None)
        for c in table.columns
        if c.key not in names and c.default is not None and c.default.is_scalar
    }
    columns = [*names, *defaults]
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    ]
    fixed = list(defaults.values())
    driver = connection.connection.driver_connection
    assert driver is not None
    quoted = ", ".join(f'"{name}"' for name in columns)
    statement = f'COPY "{table.name}" ({quoted}) FROM STDIN'
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            values = [row[name] for name in names] + fixed
            copy.write_row(
                [
                    p(v) if p is not None and v is not None else v
                    for p, v in zip(processors, values, strict=True)
                ]
            )

"""Exit 0 when the test PostgreSQL server answers, 1 (with the reason) when not."""

from __future__ import annotations

import os
import sys

import sqlalchemy as sa

URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def main() -> int:
    """Try one connection with a short timeout."""
    engine = sa.create_engine(URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL at {engine.url.render_as_string()} is not reachable: {exc.orig}")
        return 1
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

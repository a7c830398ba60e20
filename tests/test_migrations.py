"""Migrations: an empty database upgrades to head, matches the models, and downgrades cleanly.

Each test gets a brand-new, empty database of the backend under test (a new
SQLite file, or a new PostgreSQL database made from the admin URL and dropped
afterwards), so nothing the session fixture created can hide a missing step.
The drift check uses Alembic's own autogenerate comparison with the
``compare_type`` hook of ``migrations/env.py``; a deliberately drifted model
shows that the check can fail.
"""

from __future__ import annotations

import ast
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import check, downgrade, upgrade

from newsletter import create_app
from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.ledger.keyring import log_origin, write_new_key
from newsletter.models import Channel, UTCDateTime
from newsletter.subscriptions.lists import create_list

from .conftest import BACKEND, POSTGRES_ADMIN_URL, TEST_SECRET
from .fixtures.intake import SignupRequest, sign_up_now
from .fixtures.ledger import seal_and_verify

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def env_hooks() -> dict[str, Callable[..., Any]]:
    """``compare_type`` and ``render_item`` exactly as written in migrations/env.py.

    env.py cannot be imported outside an Alembic run (it configures the
    migration context at import), so its two hook functions are compiled on
    their own; the test then follows any change made to them.
    """
    source = (MIGRATIONS / "env.py").read_text()
    tree = ast.parse(source)
    hooks = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in {"compare_type", "render_item"}
    ]
    assert {h.name for h in hooks} == {"compare_type", "render_item"}
    namespace: dict[str, Any] = {"sa": sa, "UTCDateTime": UTCDateTime}
    module = ast.Module(body=list[ast.stmt](hooks), type_ignores=[])
    code = compile(module, str(MIGRATIONS / "env.py"), "exec")
    exec(code, namespace)  # noqa: S102  (our own migrations/env.py)
    return {name: namespace[name] for name in ("compare_type", "render_item")}


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """A new, empty database of the backend under test."""
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite'}"
        return
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"newsletter_migrations_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def fresh_app(empty_database_url: str, tmp_path: Path) -> Iterator[Flask]:
    """An app on the empty database, with its app context pushed and a
    checkpoint signing key of its own."""
    key_file = tmp_path / "ledger-signing.key"
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": empty_database_url,
            "SECRET_KEY": TEST_SECRET,
            "MAILBOX_DIR": str(tmp_path / "mailbox"),
            "LEDGER_SIGNING_KEY_FILE": str(key_file),
        }
    )
    with app.app_context():
        write_new_key(key_file, log_origin())
        yield app
        db.session.remove()
        db.engine.dispose()


def table_names() -> set[str]:
    """The tables in the database now."""
    with db.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def differences(metadata: sa.MetaData) -> list[Any]:
    """What autogenerate would put in a new migration to reach ``metadata``."""
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": env_hooks()["compare_type"]}
        )
        return list(compare_metadata(context, metadata))


def copy_of_models() -> sa.MetaData:
    """A copy of the models' metadata that a test may change freely."""
    copy = sa.MetaData(naming_convention=db.metadata.naming_convention)
    for table in db.metadata.sorted_tables:
        table.to_metadata(copy)
    return copy


def flatten(diffs: list[Any]) -> list[tuple[Any, ...]]:
    """Alembic nests column modifications in lists; flatten to one list of tuples."""
    flat: list[tuple[Any, ...]] = []
    for diff in diffs:
        flat.extend(diff if isinstance(diff, list) else [diff])
    return flat


def test_upgrade_on_an_empty_database_reaches_head_without_drift(fresh_app: Flask) -> None:
    assert table_names() == set()
    upgrade()

    heads = ScriptDirectory(str(MIGRATIONS)).get_heads()
    with db.engine.connect() as conn:
        assert [MigrationContext.configure(conn).get_current_revision()] == heads
        head = conn.execute(sa.text("SELECT * FROM ledger_head")).mappings().all()
        tree = {
            name: conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()  # noqa: S608
            for name in ("ledger_tree", "ledger_nodes", "ledger_checkpoints", "ledger_keys")
        }
    # The empty ledger: a head at seq 0 (nothing chained any more) and an unsealed tree.
    assert [dict(row) for row in head] == [{"id": 1, "seq": 0}]
    assert tree == dict.fromkeys(tree, 0)
    assert table_names() == set(db.metadata.tables) | {"alembic_version"}

    # The drift test: the migrated schema is exactly what the models describe.
    assert differences(db.metadata) == []
    # And Alembic's own check, which goes through env.py as `newsletter db check` does.
    check()


def test_migrated_database_takes_events_from_the_empty_ledger_head(fresh_app: Flask) -> None:
    upgrade()
    create_list("nyhedsbrev", "Nyhedsbrev", "Ja tak.", default=True)
    sign_up_now(SignupRequest(email="first@example.org", channel=Channel.API, evidence=Evidence()))
    with db.engine.connect() as conn:
        events = conn.execute(sa.text("SELECT seq, event FROM consent_events")).all()
        head = conn.execute(sa.text("SELECT seq FROM ledger_head WHERE id = 1")).scalar_one()
    assert [tuple(row) for row in events] == [(1, "requested")]
    assert head == 1
    report = seal_and_verify()
    assert report.ok, report.problems
    assert (report.events, report.sealed, report.waiting, report.checkpoints) == (1, 1, 0, 1)


def test_downgrade_to_base_leaves_no_application_tables(fresh_app: Flask) -> None:
    upgrade()
    downgrade(revision="base")
    assert table_names() <= {"alembic_version"}
    with db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is None
    # The round trip works: up again from nothing.
    upgrade()
    assert set(db.metadata.tables) <= table_names()
    assert differences(db.metadata) == []


def test_a_drifted_model_is_reported(fresh_app: Flask) -> None:
    upgrade()

    extra_column = copy_of_models()
    extra_column.tables["subscribers"].append_column(sa.Column("nickname", sa.String(50)))
    found = [
        (d[0], d[2], d[3].name) for d in flatten(differences(extra_column)) if d[0] == "add_column"
    ]
    assert found == [("add_column", "subscribers", "nickname")]

    extra_table = copy_of_models()
    sa.Table("drift_probe", extra_table, sa.Column("id", sa.Integer, primary_key=True))
    diffs = flatten(differences(extra_table))
    assert [(d[0], d[1].name) for d in diffs] == [("add_table", "drift_probe")]

    missing_table = copy_of_models()
    missing_table.remove(missing_table.tables["outbox"])
    kinds = {(d[0], getattr(d[1], "name", None)) for d in flatten(differences(missing_table))}
    assert ("remove_table", "outbox") in kinds


def test_a_changed_column_type_is_reported(fresh_app: Flask) -> None:
    upgrade()
    changed = copy_of_models()
    changed.tables["lists"].c.slug.type = sa.String(128)
    diffs = [d for d in flatten(differences(changed)) if d[0] == "modify_type"]
    assert [(d[2], d[3]) for d in diffs] == [("lists", "slug")]


def test_env_compare_type_treats_utc_datetime_as_datetime() -> None:
    compare_type = env_hooks()["compare_type"]
    assert compare_type(None, None, None, sa.DateTime(), UTCDateTime()) is False
    assert compare_type(None, None, None, sa.String(32), UTCDateTime()) is True
    assert compare_type(None, None, None, sa.String(32), sa.String(64)) is None  # Alembic decides
    render_item = env_hooks()["render_item"]
    assert render_item("type", UTCDateTime(), None) == "sa.DateTime()"
    assert render_item("type", sa.String(), None) is False

"""The service transaction rule: commit on success, roll back and re-raise on failure, nest."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import event, func, select

from newsletter.extensions import db
from newsletter.models import MailingList
from newsletter.transaction import in_transaction, transactional, unit_of_work


def stored_slugs(app: Flask) -> set[str]:
    """Slugs as another connection sees them (only committed rows)."""
    with db.engine.connect() as conn:
        return set(conn.scalars(select(MailingList.slug)))


@transactional
def add_list(slug: str, *, fail: bool = False) -> int:
    """A service that writes one row and may fail after writing it."""
    row = MailingList(slug=slug, name=slug)
    db.session.add(row)
    db.session.flush()
    if fail:
        raise RuntimeError("after the write")
    return row.id


@transactional
def add_two(first: str, second: str, *, fail_second: bool = False) -> None:
    """A service calling another service twice: one transaction."""
    add_list(first)
    assert in_transaction()
    add_list(second, fail=fail_second)


def test_success_commits_and_returns_the_outcome(app: Flask) -> None:
    row_id = add_list("kept")
    assert isinstance(row_id, int)
    assert stored_slugs(app) == {"kept"}
    assert not in_transaction()


def test_failure_rolls_back_and_reraises(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="after the write"):
        add_list("gone", fail=True)
    assert stored_slugs(app) == set()
    # The session is usable again: no half-failed transaction is left behind.
    assert db.session.scalar(select(func.count()).select_from(MailingList)) == 0


def test_nested_services_are_one_transaction(app: Flask) -> None:
    with pytest.raises(RuntimeError):
        add_two("first", "second", fail_second=True)
    assert stored_slugs(app) == set()  # the first write went with the second
    add_two("first", "second")
    assert stored_slugs(app) == {"first", "second"}


def test_a_block_commits_only_at_its_outer_end(app: Flask) -> None:
    commits: list[object] = []
    record = commits.append  # one bound method, so the same one can be removed
    event.listen(db.engine, "commit", record)
    try:
        with unit_of_work():
            add_list("inner")
            assert commits == []  # not yet: the outer block decides
        assert len(commits) == 1
    finally:
        event.remove(db.engine, "commit", record)
    assert stored_slugs(app) == {"inner"}


def test_any_exception_in_a_block_rolls_it_back(app: Flask) -> None:
    def failing_block() -> None:
        with unit_of_work():
            add_list("other")
            raise KeyError("any exception")

    with pytest.raises(KeyError):
        failing_block()
    assert stored_slugs(app) == set()

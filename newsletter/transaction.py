"""One rule for service functions: the transaction is theirs, on success and on failure.

A function decorated with :func:`transactional` (or a block inside
:func:`unit_of_work`) commits the session when it returns and rolls it back
when anything raises, then re-raises. Calls nest: only the outermost one
commits or rolls back, so a service may call another service and the two
writes stay one transaction. Views and commands never call ``commit`` or
``rollback`` themselves (a test checks this): they call a service and render
its outcome or its error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from .extensions import db

P = ParamSpec("P")
R = TypeVar("R")

_depth: ContextVar[int] = ContextVar("transaction_depth", default=0)


@contextmanager
def unit_of_work() -> Iterator[None]:
    """Commit what the block wrote when it ends; roll back and re-raise on any exception.

    Inside another unit of work the block joins it: the outermost one decides.
    """
    depth = _depth.get()
    token = _depth.set(depth + 1)
    try:
        yield
    except BaseException:
        if depth == 0:
            db.session.rollback()
        raise
    else:
        if depth == 0:
            db.session.commit()
    finally:
        _depth.reset(token)


def transactional(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` as one unit of work (see :func:`unit_of_work`)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with unit_of_work():
            return function(*args, **kwargs)

    return wrapper


def in_transaction() -> bool:
    """True inside a :func:`unit_of_work` (a service may then leave committing to its caller)."""
    return _depth.get() > 0


def discard_failed_transaction() -> None:
    """Roll back what the session holds after a request failed outside any service.

    Only the app's error handlers call this (the database gone mid-request, a
    health check that could not reach it). Services roll back their own
    failures; what is left then is the transaction the view's reads began, or
    one on a connection the database dropped. Ending it here, before the error
    page is rendered, leaves nothing half written and returns a sound session
    (a broken connection is invalidated, the pool replaces it). It lives in
    this module so that views and commands never roll back themselves.
    """
    db.session.rollback()

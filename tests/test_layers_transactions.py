"""Views and commands never commit or roll back: services own their transaction.

Every module of the console (newsletter/admin/), of the public site and API
(newsletter/web/), and every module that defines a click command is read with
``ast``; a call of ``.commit(...)`` or ``.rollback(...)`` in any of them fails,
with no exceptions. A service is ``@transactional`` (newsletter/transaction.py)
and the view renders its outcome or its error.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"
FORBIDDEN = frozenset({"commit", "rollback"})


def defines_commands(tree: ast.Module) -> bool:
    """True when a function is decorated as a click command or group
    (``@click.command(...)``, ``@some_group.command(...)``) or a group is made."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and target.attr in {"command", "group"}:
                    return True
        if isinstance(node, ast.Call):
            called = node.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
            if name in {"AppGroup", "FlaskGroup", "Group"}:
                return True
    return False


def parsed() -> dict[str, ast.Module]:
    """Every module of the package by its path inside it."""
    return {
        str(path.relative_to(PACKAGE)): ast.parse(path.read_text(), str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def views_and_commands() -> dict[str, ast.Module]:
    """The modules the rule covers."""
    return {
        name: tree
        for name, tree in parsed().items()
        if name.startswith(("admin/", "web/")) or defines_commands(tree)
    }


def test_the_rule_covers_the_console_the_site_and_every_command_module() -> None:
    covered = set(views_and_commands())
    assert {"admin/lists.py", "admin/campaigns.py", "web/__init__.py", "web/public.py"} <= covered
    commands = {name for name in covered if not name.startswith(("admin/", "web/"))}
    assert {
        "cli.py",
        "campaigns/commands.py",
        "privacy/commands.py",
        "staff/commands.py",
        "subscriptions/commands.py",
        "imports/commands.py",
        "ledger/commands.py",
        "ops/commands.py",
    } <= commands
    assert "transaction.py" not in covered


def test_no_view_or_command_commits_or_rolls_back() -> None:
    found = [
        f"{name}:{node.lineno} calls .{node.func.attr}()"
        for name, tree in views_and_commands().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in FORBIDDEN
    ]
    assert found == [], "views and commands leave the transaction to the service: " + "; ".join(
        found
    )

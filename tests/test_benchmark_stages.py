"""The profile stages of benchmarks/send_throughput.py name functions that exist.

A stage counts the py-spy samples whose stack holds a function of that name; a
name no code has any more counts nothing, and the profile shows 0 % for a stage
that still costs time. Each name must be a function or method of the package
or of the library the stage is about.
"""

from __future__ import annotations

import ast
import smtplib
from pathlib import Path

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from benchmarks.send_throughput import STAGES

PACKAGE = Path(__file__).resolve().parents[1] / "newsletter"
# Stages about library code: the class each name is a method of.
LIBRARIES = {"SMTP": smtplib.SMTP, "Connection": Connection, "Session": Session}


def package_functions() -> set[str]:
    """Every function of the package, by name and as Class.method."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        names.add(f"{node.name}.{item.name}")
    return names


def test_every_stage_names_a_function_that_exists() -> None:
    known = package_functions()
    missing = []
    for label, needles in STAGES:
        for needle in needles:
            owner, _, method = needle.rpartition(".")
            if needle in known or (owner in LIBRARIES and hasattr(LIBRARIES[owner], method)):
                continue
            missing.append((label, needle))
    assert missing == []

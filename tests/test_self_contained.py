"""The project runs from a clone stored anywhere: nothing reads a folder beside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("newsletter", "tests", "benchmarks", "scripts", "migrations", ".ci")
# The folder laid beside the clone for the developers (never there for a user).
OUTSIDE = re.compile(r"\.\./" + "shared|" + "shared/" + "seed")


def test_no_file_reaches_outside_the_repository() -> None:
    """No source, test, script or CI file names a path beside the clone."""
    offenders = []
    for folder in SCANNED:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in {".py", ".sh", ".cfg", ""} or not path.is_file():
                continue
            if "node_modules" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    for name in ("Makefile", "wsgi.py", "gunicorn.conf.py"):
        text = (ROOT / name).read_text(encoding="utf-8")
        offenders += [f"{name}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert offenders == []

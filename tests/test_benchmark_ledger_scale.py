"""benchmarks/ledger_scale.py keeps working: a tiny run on the test backend.

The script asserts what it measures (every verification passes, each bundle
holds the person's five events, ``newsletter-verify`` accepts the bundle), so
a run that exits 0 and prints every row of its table means the benchmark
still drives the ledger as the code has it. The figures themselves are not
checked: they are measurements, not tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import BACKEND, POSTGRES_ADMIN_URL

ROOT = Path(__file__).resolve().parents[1]
ROWS = (
    "events (people)",
    "seal, 20,000 events a checkpoint",
    "verify (full)",
    "day: 40 events sealed",
    "verify --incremental",
    "consent_bundle, 5 events (3 people)",
    "verify_bundle (in-process)",
    "newsletter-verify (process)",
)


def test_a_tiny_run_builds_seals_verifies_and_proves() -> None:
    backend = ["--sqlite"] if BACKEND == "sqlite" else ["--database-url", POSTGRES_ADMIN_URL]
    command = [sys.executable, str(ROOT / "benchmarks" / "ledger_scale.py"), "--quick"]
    command += ["--events", "400", "--daily", "40", "--daily-checkpoints", "4"]
    command += ["--people", "3", "--runs", "1", *backend]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for row in ROWS:
        assert any(line.startswith(row) for line in lines), (row, done.stdout)
    assert re.search(r"^events \(people\)\s+400 \(", done.stdout, re.M), done.stdout
    assert re.search(r"^day: 40 events sealed\s+\S+ s\s+4 checkpoints$", done.stdout, re.M)
    assert re.search(r"^verify --incremental\s+\S+ s \(40 events\)", done.stdout, re.M)

"""The package layering holds: lower layers never import higher ones, and no package cycles.

The contracts live in pyproject.toml ([tool.importlinter]) and are checked by
import-linter over every import in newsletter/, function-level ones included:
models < validation < ledger/mail/staff < features < worker/web/admin/cli/ops.
It runs in its own process, so it leaves nothing behind in the test session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_every_import_contract_is_kept() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],  # reads pyproject.toml in cwd
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout, result.stdout

"""The package layering holds: lower layers never import higher ones, and no package cycles.

The contracts live in pyproject.toml ([tool.importlinter]) and are checked by
import-linter over every import in newsletter/, function-level ones included:
models < validation < ledger/mail/staff < features < worker/web/admin/cli/ops.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_contract_is_kept(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 0, report

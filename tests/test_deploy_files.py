"""The production files in deploy/ are valid, agree with each other and with the app,
and docs/deploy.md shows them as they are.

- The systemd units pass ``systemd-analyze verify`` (where systemd is installed;
  a structural check otherwise) and start what the suite runs: gunicorn with
  gunicorn.conf.py, and ``newsletter worker``, both with /etc/newsletter.env.
- The web unit's GUNICORN_BIND is the nginx site's upstream.
- The example environment file names only settings the app has (newsletter/config.py
  DEFAULTS or the README's settings table), and systemd and a shell read it alike.
- Every deploy/ file docs/deploy.md shows is shown exactly as it is.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.config import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
WEB_UNIT = DEPLOY / "systemd" / "newsletter-web.service"
WORKER_UNIT = DEPLOY / "systemd" / "newsletter-worker@.service"
SITE = DEPLOY / "nginx" / "newsletter.conf"
ENV_EXAMPLE = DEPLOY / "newsletter.env.example"
DOC = ROOT / "docs" / "deploy.md"
APP_DIR = "/srv/newsletter/app"  # where docs/deploy.md installs the app
ENV_LINE = re.compile(r"(NEWSLETTER_[A-Z0-9_]+)=(.*)")


def unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, as systemd reads a unit file (no continuation lines)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{number}: a setting outside a section"
        key, equals, value = line.partition("=")
        assert equals, f"{path.name}:{number}: not KEY=value: {raw!r}"
        assert key.strip().isidentifier(), f"{path.name}:{number}: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.parametrize("unit", [WEB_UNIT, WORKER_UNIT], ids=lambda p: p.name)
def test_the_units_are_complete_services_of_the_newsletter_user(unit: Path) -> None:
    sections = unit_sections(unit)
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    assert service["User"] == ["newsletter"]
    assert service["WorkingDirectory"] == [APP_DIR]
    assert service["EnvironmentFile"] == ["/etc/newsletter.env"]
    assert service["Restart"] == ["always"]
    assert service["KillSignal"] == ["SIGTERM"]  # workers finish their batch on it
    assert len(service["ExecStart"]) == 1
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_units_start_what_the_suite_runs() -> None:
    web = unit_sections(WEB_UNIT)["Service"]
    worker = unit_sections(WORKER_UNIT)["Service"]
    venv = f"{APP_DIR}/.venv/bin"
    assert shlex.split(web["ExecStart"][0]) == [
        f"{venv}/gunicorn",
        "-c",
        "gunicorn.conf.py",
        "wsgi:app",
    ]
    assert (ROOT / "gunicorn.conf.py").is_file()
    assert (ROOT / "wsgi.py").is_file()
    # tests/test_sending_guarantees.py's start_worker runs this command.
    assert shlex.split(worker["ExecStart"][0]) == [f"{venv}/newsletter", "worker"]


def test_gunicorn_listens_where_nginx_proxies_to() -> None:
    environment = dict(
        item.split("=", 1)
        for line in unit_sections(WEB_UNIT)["Service"]["Environment"]
        for item in shlex.split(line)
    )
    upstream = re.search(r"upstream newsletter_web \{\s*server ([^;\s]+);", SITE.read_text())
    assert upstream is not None
    assert environment["GUNICORN_BIND"] == upstream.group(1)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_verifies_the_units(tmp_path: Path) -> None:
    """``systemd-analyze verify`` with the app directory at this checkout's (it checks
    that ExecStart names an executable); any warning fails."""
    venv = str(Path(sys.executable).parent.parent)
    units = []
    for unit, name in [
        (WEB_UNIT, "newsletter-web.service"),
        (WORKER_UNIT, "newsletter-worker@1.service"),  # an instance of the template
    ]:
        text = unit.read_text().replace(f"{APP_DIR}/.venv", venv).replace(APP_DIR, str(ROOT))
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    result = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")


def readme_settings() -> set[str]:
    """The setting names in the README's settings table."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def env_example() -> dict[str, str]:
    """NEWSLETTER_ name -> value, as systemd's EnvironmentFile= reads the example:
    comment lines skipped, one pair of double quotes around a value removed."""
    values: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = ENV_LINE.fullmatch(line)
        assert match, f"{ENV_EXAMPLE.name}:{number}: not NEWSLETTER_NAME=value: {line!r}"
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        assert "#" not in value, f"{ENV_EXAMPLE.name}:{number}: systemd keeps a # in the value"
        assert name not in values, f"{name} twice"
        values[name] = value
    return values


def test_the_environment_example_names_only_settings_the_app_has() -> None:
    known = set(DEFAULTS) | readme_settings()
    assert {"SECRET_KEY", "DATABASE_URL", "MAIL_SERVER", "TRUSTED_PROXIES"} <= known
    names = {name.removeprefix("NEWSLETTER_") for name in env_example()}
    assert names - known == set()
    assert {"SECRET_KEY", "BASE_URL", "DATABASE_URL", "TRUSTED_PROXIES"} <= names
    assert env_example()["NEWSLETTER_TRUSTED_PROXIES"] == "1"  # nginx, one proxy


def test_a_shell_reads_the_environment_example_as_systemd_does() -> None:
    """docs/deploy.md loads it with ``set -a; . /etc/newsletter.env`` for the commands."""
    script = f"set -a; . {shlex.quote(str(ENV_EXAMPLE))}; env -0"
    output = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    shell = dict(
        item.split("=", 1) for item in output.split("\0") if item.startswith("NEWSLETTER_")
    )
    assert shell == env_example()


def shown_in_doc() -> dict[str, str]:
    """deploy/ path -> the fenced block docs/deploy.md shows under a link to it."""
    shown = re.findall(
        r"\]\(\.\./(deploy/[^)]+)\)[^\n]*:\n\n```[a-z]*\n(.*?)^```\n",
        DOC.read_text(),
        flags=re.DOTALL | re.MULTILINE,
    )
    paths = [path for path, _ in shown]
    assert len(paths) == len(set(paths)), paths
    return dict(shown)


def test_docs_show_every_deploy_file_as_it_is() -> None:
    shown = shown_in_doc()
    files = {str(path.relative_to(ROOT)) for path in (WEB_UNIT, WORKER_UNIT, SITE, ENV_EXAMPLE)}
    assert set(shown) == files
    for path, block in shown.items():
        assert block == (ROOT / path).read_text(), f"docs/deploy.md's copy of {path} differs"


def test_docs_hold_no_other_copy_of_a_unit_or_site() -> None:
    """Only the blocks above are units, nginx configuration or environment files."""
    doc = DOC.read_text()
    shown = shown_in_doc()
    blocks = re.findall(r"^```([a-z]*)\n(.*?)^```\n", doc, flags=re.DOTALL | re.MULTILINE)
    for language, block in blocks:
        if block in shown.values():
            continue
        assert language not in {"ini", "nginx"}, block
        assert "[Service]" not in block
        assert not re.search(r"^NEWSLETTER_[A-Z_]+=", block, re.MULTILINE), block

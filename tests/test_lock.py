"""The lock files agree with pyproject.toml, and this environment was installed from them.

pyproject.toml keeps the version ranges (for installing the package as a library);
requirements/runtime.lock and requirements/dev.lock pin exact versions with hashes
(`make lock` refreshes them; `make install`, `make run`, `make test` and .ci/run install
from dev.lock). A dependency added to pyproject.toml without `make lock`, or a range
that no longer admits the locked version, fails here.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]


def locked(name: str) -> dict[str, str]:
    """Package -> version of a lock file; every pin must carry a hash."""
    text = (ROOT / "requirements" / name).read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        found = PIN.match(block)
        if found is None:
            continue
        assert "--hash=sha256:" in block, f"{name}: {found.group(1)} has no hash"
        pins[canonicalize_name(found.group(1))] = found.group(2)
    return pins


RUNTIME = [Requirement(text) for text in pyproject()["dependencies"]]
DEV = [Requirement(text) for text in pyproject()["optional-dependencies"]["dev"]]


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [("runtime.lock", RUNTIME), ("dev.lock", RUNTIME + DEV)],
)
def test_every_requirement_is_locked_at_a_version_its_range_admits(
    lock: str, requirements: list[Requirement]
) -> None:
    pins = locked(lock)
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in {lock}: make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {requirement.name}=={pins[name]}, outside {requirement.specifier}"
        )


def test_the_runtime_lock_is_the_dev_lock_without_the_dev_tools() -> None:
    runtime, dev = locked("runtime.lock"), locked("dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_this_environment_has_exactly_the_locked_versions() -> None:
    """`make install` installed dev.lock: each locked package is here at its version."""
    pins = locked("dev.lock")
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()
    }
    wrong = {
        name: (version, installed.get(name))
        for name, version in pins.items()
        if installed.get(name) != version
    }
    assert wrong == {}, f"locked vs installed: {wrong}; run `make install` again"

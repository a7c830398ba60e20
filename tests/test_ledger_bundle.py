"""Consent proof bundles end to end: `newsletter consent proof EMAIL --bundle`,
checked by newsletter_verify.py alone (a copy in an empty directory, `python
-I`: no app, no settings, no database), with the key from `ledger public-key`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.ledger.signing import Signer
from newsletter.models import Channel, ConsentEvent
from newsletter.privacy.erasure import erase_address

from .conftest import TEST_SECRET
from .fixtures.intake import SignupRequest, sign_up_now
from .fixtures.ledger_history import History

VERIFIER = Path(__file__).resolve().parent.parent / "newsletter_verify.py"


@pytest.fixture
def auditor(tmp_path: Path, runner: FlaskCliRunner) -> Path:
    """An empty directory with a copy of newsletter_verify.py and the public key."""
    place = tmp_path / "auditor"
    place.mkdir()
    shutil.copy(VERIFIER, place / "newsletter_verify.py")
    db.session.commit()
    key = runner.invoke(args=["ledger", "public-key"])
    assert key.exit_code == 0
    (place / "ledger.vkey").write_text(key.stdout, encoding="utf-8")
    return place


def make_bundle(runner: FlaskCliRunner, place: Path, email: str) -> Path:
    path = place / "bundle.json"
    db.session.commit()
    result = runner.invoke(args=["consent", "proof", email, "--bundle", str(path)])
    assert result.exit_code == 0, result.output
    return path


def check(place: Path, bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the auditor's copy of newsletter_verify.py on the bundle."""
    command = [sys.executable, "-I", "newsletter_verify.py", bundle.name, *extra]
    if "--key" not in extra:
        command += ["--key", "ledger.vkey"]
    return subprocess.run(
        command, cwd=place, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_bundle_verifies_with_the_public_key_alone(
    history: History, runner: FlaskCliRunner, auditor: Path
) -> None:
    bundle = make_bundle(runner, auditor, "Alice@Example.org")
    done = check(auditor, bundle)
    assert done.returncode == 0, done.stderr
    summary = done.stdout
    assert "Consent record of Alice@example.org: every check holds." in summary
    assert "tree size 9" in summary
    assert "5 event(s)" in summary
    for expected in (
        "requested, list nyhedsbrev, consent text v1",
        "requested, list tech, consent text v1",
        "confirmed, list tech",
        "withdrawn, list tech",
        "policy v2",
        "via form",
        "via confirm_link",
        "via unsubscribe_page",
        "Withdrawals: 1",
    ):
        assert expected in summary, expected
    withdrawals = summary.split("Withdrawals: 1\n")[1].splitlines()
    assert len(withdrawals) == 1
    assert "withdrawn, list tech" in withdrawals[0]
    assert " UTC, " in withdrawals[0]

    # Its events were sealed under three checkpoints; all are proven under the last.
    document = json.loads(bundle.read_text(encoding="utf-8"))
    assert sorted(e["index"] for e in document["events"]) == [0, 1, 4, 5, 7]
    assert document["checkpoint"].split("\n")[1] == "9"


def test_a_bundle_holds_nothing_about_anyone_else(
    history: History, runner: FlaskCliRunner, auditor: Path
) -> None:
    text = make_bundle(runner, auditor, "alice@example.org").read_text(encoding="utf-8")
    events = db.session.scalars(select(ConsentEvent)).all()
    own = [e for e in events if e.subscriber_id == history.alice.id]
    others = [e for e in events if e.subscriber_id != history.alice.id]
    assert len(own) == 5
    mine = {
        str(value)
        for e in own
        for value in (e.email, e.ip, e.user_agent, e.source_url, e.email_digest, e.salt)
    }
    secrets = {
        str(value)
        for e in others
        for value in (e.email, e.ip, e.user_agent, e.source_url, e.email_digest, e.salt)
        if value is not None
    } - mine
    assert {"bob@example.org", "carol@example.org", "curl/8.5"} <= secrets
    for secret in secrets:
        assert secret not in text, secret
    assert all(str(e.personal_commitment) not in text for e in others)
    assert "bob" not in text.lower()
    assert "carol" not in text.lower()


def edit_leaf(document: dict[str, Any]) -> None:
    withdrawn = next(e for e in document["events"] if '"withdrawn"' in e["leaf"])
    withdrawn["leaf"] = withdrawn["leaf"].replace('"withdrawn"', '"confirmed"')


def edit_text(document: dict[str, Any]) -> None:
    entry = next(iter(document["consent_texts"].values()))
    entry["text"] += " Og alt andet."


def edit_salt(document: dict[str, Any]) -> None:
    document["events"][0]["salt"] = "ab" * 32


def edit_personal(document: dict[str, Any]) -> None:
    document["events"][0]["personal"]["ip"] = "198.51.100.7"


def edit_proof(document: dict[str, Any]) -> None:
    proof = document["events"][1]["inclusion_proof"]
    proof[0] = "00" * 32


def edit_checkpoint(document: dict[str, Any]) -> None:
    document["checkpoint"] = document["checkpoint"].replace("\n9\n", "\n10\n", 1)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (edit_leaf, "inclusion proof does not match the checkpoint root"),
        (edit_text, "consent_texts: the text under"),
        (edit_salt, "do not match the leaf's commitment"),
        (edit_personal, "do not match the leaf's commitment"),
        (edit_proof, "event 2 (index "),
        (edit_checkpoint, "checkpoint: signature does not verify"),
    ],
    ids=["leaf", "text", "salt", "personal", "proof", "checkpoint"],
)
def test_an_edited_bundle_fails(
    history: History,
    runner: FlaskCliRunner,
    auditor: Path,
    edit: Callable[[dict[str, Any]], None],
    named: str,
) -> None:
    bundle = make_bundle(runner, auditor, "alice@example.org")
    assert check(auditor, bundle).returncode == 0
    document = json.loads(bundle.read_text(encoding="utf-8"))
    edit(document)
    bundle.write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
    done = check(auditor, bundle)
    assert done.returncode == 1, done.stdout
    assert named in done.stderr
    assert done.stdout == ""


def test_another_key_fails(history: History, runner: FlaskCliRunner, auditor: Path) -> None:
    bundle = make_bundle(runner, auditor, "alice@example.org")
    other = Signer.generate("newsletter.test/consent-ledger").vkey
    (auditor / "other.vkey").write_text(other + "\n", encoding="utf-8")
    done = check(auditor, bundle, "--key", "other.vkey")
    assert done.returncode == 1
    assert "checkpoint: signature does not verify with key newsletter.test/consent-ledger+" in (
        done.stderr
    )


def test_a_bundle_against_a_witness_checkpoint(
    history: History, app: Any, runner: FlaskCliRunner, auditor: Path
) -> None:
    witness = auditor / "witness.log"
    app.config["LEDGER_CHECKPOINT_LOG"] = str(witness)
    bundle = make_bundle(runner, auditor, "alice@example.org")  # seals: logs 4, 7, 9
    assert check(auditor, bundle, "--checkpoint", witness.name).returncode == 0

    sign_up_now(SignupRequest(email="dave@example.org", channel=Channel.API, evidence=Evidence()))
    older = make_bundle(runner, auditor, "bob@example.org")
    older.rename(auditor / "bob.json")
    sign_up_now(SignupRequest(email="erin@example.org", channel=Channel.API, evidence=Evidence()))
    assert runner.invoke(args=["ledger", "seal"]).exit_code == 0
    done = check(auditor, auditor / "bob.json", "--checkpoint", witness.name)
    assert done.returncode == 1
    assert "the bundle was made against newsletter.test/consent-ledger at tree size 10" in (
        done.stderr
    )


def test_erasure_leaves_the_log_verifiable_and_the_bundle_anonymous(
    history: History, runner: FlaskCliRunner, auditor: Path
) -> None:
    erase_address("alice@example.org", channel=Channel.STAFF, actor=None, evidence=Evidence())
    result = runner.invoke(args=["ledger", "seal"])
    assert result.exit_code == 0
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert "10 events sealed" in result.output
    bundle = make_bundle(runner, auditor, "alice@example.org")
    document = json.loads(bundle.read_text(encoding="utf-8"))
    assert [json.loads(e["leaf"])["event"] for e in document["events"]][-1] == "erased"
    assert all(e["personal"] is None and e["salt"] is None for e in document["events"])
    assert "@" not in json.dumps(document["events"])
    done = check(auditor, bundle)
    assert done.returncode == 0, done.stderr
    assert "6 event(s)" in done.stdout
    assert "erased" in done.stdout


def test_a_bundle_after_secret_key_rotation_verifies(
    history: History, app_factory: Callable[..., Any], auditor: Path
) -> None:
    """Events written before SECRET_KEY was rotated carry the old pseudonym:
    the bundle names the one its events carry."""
    db.session.commit()
    rotated = app_factory(
        SECRET_KEY="rotated-secret-key-0123456789-abcdefghijklmnop",
        SECRET_KEY_FALLBACKS=[TEST_SECRET],
        LEDGER_KEY=None,
    )
    with rotated.app_context():
        bundle = make_bundle(rotated.test_cli_runner(), auditor, "alice@example.org")
        db.session.remove()
    done = check(auditor, bundle)
    assert done.returncode == 0, done.stderr
    assert "5 event(s)" in done.stdout


def test_no_bundle_for_an_address_without_events(
    history: History, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "bundle.json"
    result = runner.invoke(args=["consent", "proof", "stranger@example.org", "--bundle", str(path)])
    assert result.exit_code == 1
    assert "consent: cannot make a bundle: the ledger holds no sealed event of" in result.stderr
    assert not path.exists()

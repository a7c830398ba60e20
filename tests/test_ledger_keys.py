"""The keys: the checkpoint signing key (`ledger public-key`, `ledger keygen`, a
missing key file, rotation: old checkpoints keep verifying with the old key)
and SECRET_KEY rotation for the keyed address pseudonyms."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import delete

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.ledger.keys import email_digest, email_digests, ledger_keys
from newsletter.ledger.proof import consent_proof
from newsletter.ledger.seal import seal_waiting
from newsletter.ledger.verify import verify_ledger
from newsletter.models import Channel, LedgerKey, MailingList
from newsletter_verify import parse_checkpoint, parse_note, parse_vkey, verify_note

from .conftest import TEST_SECRET
from .fixtures.intake import SignupRequest, sign_up_now
from .fixtures.ledger import seal_and_verify
from .fixtures.ledger_history import History


def sign_up(*emails: str) -> None:
    for email in emails:
        sign_up_now(SignupRequest(email=email, channel=Channel.API, evidence=Evidence()))
    db.session.commit()


def cli(runner: FlaskCliRunner, *args: str) -> tuple[int, str, str]:
    db.session.commit()
    result = runner.invoke(args=list(args))
    return result.exit_code, result.stdout, result.stderr


def test_public_key_prints_a_vkey_that_parses(app: Flask, runner: FlaskCliRunner) -> None:
    code, stdout, _ = cli(runner, "ledger", "public-key")
    assert code == 0
    assert stdout.count("\n") == 1
    verifier = parse_vkey(stdout)
    key_file = Path(app.config["LEDGER_SIGNING_KEY_FILE"]).read_text()
    assert key_file.startswith(f"PRIVATE+KEY+{verifier.name}+{verifier.key_hash.hex()}+")


def test_keygen_writes_a_private_key_file_once(runner: FlaskCliRunner, tmp_path: Path) -> None:
    path = tmp_path / "new.key"
    code, vkey, _ = cli(runner, "ledger", "keygen", str(path))
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    verifier = parse_vkey(vkey)
    assert verifier.name == "newsletter.test/consent-ledger"
    assert path.read_text().startswith(f"PRIVATE+KEY+{verifier.name}+{verifier.key_hash.hex()}+")

    before = path.read_bytes()
    code, _, stderr = cli(runner, "ledger", "keygen", str(path))
    assert code == 2
    assert "exists" in stderr
    assert path.read_bytes() == before


def test_keygen_into_a_path_that_cannot_be_made_is_a_usage_error(
    runner: FlaskCliRunner, tmp_path: Path
) -> None:
    for path in (tmp_path / "plain-file" / "new.key", tmp_path / ("k" * 300)):
        (tmp_path / "plain-file").write_text("x")
        code, _, stderr = cli(runner, "ledger", "keygen", str(path))
        assert code == 2
        assert "Invalid value for PATH" in stderr


def test_a_missing_key_file_fails_the_seal_clearly(
    app: Flask, runner: FlaskCliRunner, default_list: MailingList, tmp_path: Path
) -> None:
    sign_up("a@example.org")
    missing = tmp_path / "nowhere" / "ledger.key"
    app.config["LEDGER_SIGNING_KEY_FILE"] = str(missing)
    code, stdout, stderr = cli(runner, "ledger", "seal")
    assert code == 1
    assert stdout == ""
    assert f"ledger: cannot seal: LEDGER_SIGNING_KEY_FILE {missing} does not exist" in stderr
    assert not missing.exists()  # a configured key is never made up
    code, _, stderr = cli(runner, "ledger", "public-key")
    assert code == 1
    assert "does not exist" in stderr


def test_a_key_file_others_can_read_fails_the_seal_clearly(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "open.key"
    assert cli(runner, "ledger", "keygen", str(path))[0] == 0
    path.chmod(0o644)
    app.config["LEDGER_SIGNING_KEY_FILE"] = str(path)
    code, _, stderr = cli(runner, "ledger", "seal")
    assert code == 1
    assert "ledger: cannot seal: the ledger signing key cannot be used" in stderr
    assert "readable by its owner only" in stderr


def test_rotation_keeps_old_checkpoints_verifiable(
    app: Flask, runner: FlaskCliRunner, default_list: MailingList, tmp_path: Path
) -> None:
    key_a = cli(runner, "ledger", "public-key")[1].strip()
    sign_up("a@example.org", "b@example.org")
    note_a = cli(runner, "ledger", "seal")[1]

    path_b = tmp_path / "b.key"
    code, key_b, _ = cli(runner, "ledger", "keygen", str(path_b))
    assert code == 0
    key_b = key_b.strip()
    app.config["LEDGER_SIGNING_KEY_FILE"] = str(path_b)
    sign_up("c@example.org")
    note_b = cli(runner, "ledger", "seal")[1]

    assert verify_note(parse_note(note_a), parse_vkey(key_a))
    assert not verify_note(parse_note(note_a), parse_vkey(key_b))
    assert verify_note(parse_note(note_b), parse_vkey(key_b))
    assert parse_checkpoint(parse_note(note_b).body).size == 3
    assert cli(runner, "ledger", "public-key")[1] == key_b + "\n"
    assert cli(runner, "ledger", "public-key", "--all")[1] == f"{key_b}\n{key_a}\n"
    code, output, stderr = cli(runner, "ledger", "verify")
    assert code == 0, stderr
    assert "2 checkpoint(s) verified" in output

    # The old checkpoint verifies with the kept key A, and only with it.
    db.session.execute(delete(LedgerKey).where(LedgerKey.vkey == key_a))
    db.session.commit()
    assert [str(p) for p in verify_ledger().problems] == [
        "checkpoint 2: its signature does not verify"
    ]


def test_after_a_rotation_the_newest_checkpoint_is_cosigned_with_the_new_key(
    app: Flask,
    runner: FlaskCliRunner,
    client: FlaskClient,
    default_list: MailingList,
    tmp_path: Path,
) -> None:
    """Nothing waits after the rotation: the seal adds the new key's signature to
    the newest checkpoint, so /ledger/checkpoint verifies with /ledger/key."""
    key_a = cli(runner, "ledger", "public-key")[1].strip()
    sign_up("a@example.org")
    note_a = cli(runner, "ledger", "seal")[1]
    path_b = tmp_path / "b.key"
    key_b = cli(runner, "ledger", "keygen", str(path_b))[1].strip()
    app.config["LEDGER_SIGNING_KEY_FILE"] = str(path_b)
    assert not verify_note(parse_note(client.get("/ledger/checkpoint").text), parse_vkey(key_b))

    code, note, _ = cli(runner, "ledger", "seal")
    assert code == 0
    assert note.startswith(note_a)  # the same checkpoint, one more signature line
    served = parse_note(client.get("/ledger/checkpoint").text)
    assert client.get("/ledger/key").text.strip() == key_b
    assert verify_note(served, parse_vkey(key_b))
    assert verify_note(served, parse_vkey(key_a))  # the old signature stays
    assert cli(runner, "ledger", "seal")[1] == note  # signed once
    code, _, stderr = cli(runner, "ledger", "verify")
    assert code == 0, stderr


def test_seal_waiting_signs_with_the_configured_key(
    app: Flask, default_list: MailingList, tmp_path: Path, runner: FlaskCliRunner
) -> None:
    path = tmp_path / "c.key"
    vkey = cli(runner, "ledger", "keygen", str(path))[1]
    app.config["LEDGER_SIGNING_KEY_FILE"] = str(path)
    sign_up("a@example.org")
    (done,) = seal_waiting()
    assert verify_note(parse_note(done.note), parse_vkey(vkey))


def test_an_unreadable_ledger_key_is_named(
    runner: FlaskCliRunner, default_list: MailingList
) -> None:
    sign_up("a@example.org")
    seal_waiting()
    db.session.add(LedgerKey(vkey="not+a+key"))
    db.session.commit()
    code, _, stderr = cli(runner, "ledger", "verify")
    assert code == 1
    assert "BROKEN ledger keys: unreadable key:" in stderr
    assert "checkpoint" not in stderr  # the real key still verifies them


def test_old_events_verify_after_secret_key_rotation(
    app_factory: Callable[..., Flask], history: History
) -> None:
    new_secret = "rotated-secret-key-0123456789-abcdefghijklmnop"
    old_digest = email_digest(history.alice.email_key)
    db.session.commit()  # no open transaction while another app works on the database

    rotated = app_factory(
        SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=[TEST_SECRET], LEDGER_KEY=None
    )
    with rotated.app_context():
        assert len(ledger_keys()) == 2
        report = verify_ledger()
        assert report.ok, report.problems
        # The disputed address is still found, under the old pseudonym.
        proof = consent_proof("alice@example.org")
        assert len(proof["events"]) == 5
        assert old_digest in email_digests("alice@example.org")
        assert proof["email_digest"] != old_digest  # new events use the new key
        sign_up_now(
            SignupRequest(
                email="after-rotation@example.org", channel=Channel.API, evidence=Evidence()
            )
        )
        report = seal_and_verify()
        assert report.ok, report.problems
        assert report.events == history.events + 1
        db.session.remove()

    forgotten = app_factory(SECRET_KEY=new_secret, SECRET_KEY_FALLBACKS=[], LEDGER_KEY=None)
    with forgotten.app_context():
        # Without the old key the old events are not attributed to their subscribers.
        problems = verify_ledger().problems
        assert problems
        assert {p.reason for p in problems} == {"attributed to another subscriber"}
        db.session.remove()

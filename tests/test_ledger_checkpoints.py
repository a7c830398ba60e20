"""The stored tree and its signed checkpoints: tampered nodes and notes, a cut
tail and a rewritten past (caught with a checkpoint kept outside the
database), and incremental verification."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select, update

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.ledger.seal import seal_waiting
from newsletter.ledger.signing import Signer
from newsletter.ledger.verify import verify_ledger
from newsletter.models import Channel, LedgerCheckpoint, LedgerNode

from .fixtures.intake import SignupRequest, sign_up_now
from .fixtures.ledger_history import (
    History,
    cut_tail,
    execute,
    places,
    reseal_from_scratch,
    save,
    verify_cli,
)


def set_node(level: int, idx: int, digest: bytes) -> None:
    db.session.execute(
        update(LedgerNode)
        .where(LedgerNode.level == level, LedgerNode.idx == idx)
        .values(hash=digest)
    )
    db.session.commit()


def set_note(size: int, note: str) -> None:
    db.session.execute(
        update(LedgerCheckpoint).where(LedgerCheckpoint.size == size).values(note=note)
    )
    db.session.commit()


def note_of(size: int) -> str:
    note = db.session.scalar(select(LedgerCheckpoint.note).where(LedgerCheckpoint.size == size))
    assert note is not None
    return note


def test_the_history_has_a_checkpoint_per_seal(history: History) -> None:
    assert list(db.session.scalars(select(LedgerCheckpoint.size).order_by("size"))) == [4, 7, 9]


def test_a_tampered_interior_node_is_caught(history: History, runner: FlaskCliRunner) -> None:
    set_node(1, 0, b"\x07" * 32)
    assert places(verify_ledger()) == {"tree node 1/0"}
    code, output = verify_cli(runner)
    assert code == 1
    assert "BROKEN tree node 1/0: missing or not the hash of its children" in output


def test_a_tampered_stored_leaf_is_caught(history: History) -> None:
    set_node(0, 5, b"\x07" * 32)
    assert {"event #6", "tree node 1/2"} <= places(verify_ledger())


@pytest.mark.parametrize("part", ["size", "root", "signature"])
def test_a_tampered_checkpoint_note_is_caught(
    history: History, runner: FlaskCliRunner, part: str
) -> None:
    origin, size, root, blank, signature, end = note_of(7).split("\n")
    if part == "size":
        size = "8"
    elif part == "root":
        root = base64.b64encode(b"\x07" * 32).decode()
    else:
        name, sig = signature.rsplit(" ", 1)
        raw = bytearray(base64.b64decode(sig))
        raw[-1] ^= 1
        signature = f"{name} {base64.b64encode(bytes(raw)).decode()}"
    set_note(7, "\n".join([origin, size, root, blank, signature, end]))
    assert [str(p) for p in verify_ledger().problems] == [
        "checkpoint 7: its signature does not verify"
    ]
    code, output = verify_cli(runner)
    assert code == 1
    assert "BROKEN checkpoint 7: its signature does not verify" in output


def test_a_checkpoint_signed_by_another_key_is_caught(
    history: History, runner: FlaskCliRunner
) -> None:
    body = note_of(9).split("\n\n")[0] + "\n"
    stranger = Signer.generate(body.split("\n")[0])
    set_note(9, stranger.sign_note(body))
    report = verify_ledger()
    assert "checkpoint 9" in places(report)
    assert "its signature does not verify" in {p.reason for p in report.problems}
    code, output = verify_cli(runner)
    assert code == 1
    assert "BROKEN checkpoint 9: its signature does not verify" in output


def test_a_cut_tail_passes_plain_verify_but_not_since_a_logged_checkpoint(
    history: History, app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    """An intruder deletes the newest events and rewinds the head, the tree,
    its nodes and checkpoints to match (re-signing with the key): only a
    checkpoint kept outside the database shows it."""
    log = tmp_path / "checkpoints.log"
    app.config["LEDGER_CHECKPOINT_LOG"] = str(log)
    assert runner.invoke(args=["ledger", "seal"]).exit_code == 0  # logs what is unlogged
    kept = shutil.copy(log, tmp_path / "kept.log")
    app.config["LEDGER_CHECKPOINT_LOG"] = None

    cut_tail(6)
    assert verify_ledger().ok
    code, output = verify_cli(runner)
    assert code == 0, output
    code, output = verify_cli(runner, "--since", str(kept))
    assert code == 1
    assert "BROKEN checkpoint file (size 7): the log now holds only 6 sealed events" in output
    assert "BROKEN checkpoint file (size 9)" in output
    assert "size 4" not in output  # the checkpoint of 4 events is still extended


def test_a_rewritten_past_resigned_with_the_key_fails_since_a_saved_checkpoint(
    history: History, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    sealed = runner.invoke(args=["ledger", "seal"])
    assert sealed.exit_code == 0
    saved = save(tmp_path / "checkpoint.txt", sealed.stdout)
    assert verify_cli(runner, "--since", str(saved))[0] == 0

    execute("UPDATE consent_events SET event = 'withdrawn' WHERE seq = 2")
    reseal_from_scratch()
    assert verify_ledger().ok  # the database agrees with itself again
    code, output = verify_cli(runner, "--since", str(saved))
    assert code == 1
    assert "BROKEN checkpoint file (size 9): today's tree does not extend it" in output


def test_a_past_rewritten_and_signed_with_another_key_fails_since_a_saved_checkpoint(
    history: History, app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    """An intruder without the key signs the rewritten tree with a key of their
    own (which the seal records as a ledger key): the saved checkpoint shows it."""
    saved = save(tmp_path / "checkpoint.txt", runner.invoke(args=["ledger", "seal"]).stdout)
    intruder = tmp_path / "intruder.key"
    assert runner.invoke(args=["ledger", "keygen", str(intruder)]).exit_code == 0
    app.config["LEDGER_SIGNING_KEY_FILE"] = str(intruder)
    execute("UPDATE consent_events SET event = 'confirmed' WHERE event = 'withdrawn'")
    reseal_from_scratch()
    code, output = verify_cli(runner, "--since", str(saved))
    assert code == 1
    assert "BROKEN checkpoint file (size 9): today's tree does not extend it" in output


def test_a_since_file_signed_by_another_key_is_refused(
    history: History, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    body = note_of(9).split("\n\n")[0] + "\n"
    forged = save(tmp_path / "forged.txt", Signer.generate("mallory").sign_note(body))
    code, output = verify_cli(runner, "--since", str(forged))
    assert code == 1
    assert "BROKEN checkpoint file: not signed by any key of this ledger" in output


def sign_up_more(*emails: str) -> None:
    for email in emails:
        sign_up_now(SignupRequest(email=email, channel=Channel.API, evidence=Evidence()))
    seal_waiting()


def test_incremental_verify_checks_only_what_was_sealed_since(
    history: History, runner: FlaskCliRunner
) -> None:
    assert verify_ledger().ok  # a full run: verified up to 9
    sign_up_more("dave@example.org", "erin@example.org")
    report = verify_ledger(incremental=True)
    assert report.ok, report.problems
    assert (report.start, report.events, report.sealed) == (9, 2, 11)
    code, output = verify_cli(runner, "--incremental")
    assert code == 0, output
    assert "events #12.." in output  # the previous run reached 11

    # Tampering with a new event is caught; an old one is left to a full run.
    sign_up_more("frank@example.org")
    execute("UPDATE consent_events SET channel = 'staff' WHERE seq = 12")
    execute("UPDATE consent_events SET channel = 'staff' WHERE seq = 1")
    report = verify_ledger(incremental=True)
    assert (report.start, places(report)) == (11, {"event #12"})
    code, output = verify_cli(runner, "--incremental")
    assert code == 1
    assert "BROKEN event #12" in output
    assert {"event #1", "event #12"} <= places(verify_ledger())


def test_incremental_verify_reports_a_tampered_edge_node_of_its_start(history: History) -> None:
    assert verify_ledger().ok
    sign_up_more("dave@example.org")
    set_node(3, 0, b"\x07" * 32)  # the tree of 9 is (3, 0) and (0, 8)
    report = verify_ledger(incremental=True)
    assert report.start == 9
    assert "checkpoint 9" in places(report)
    assert any("the stored tree no longer matches it" in p.reason for p in report.problems)
    assert "tree node 3/0" in places(verify_ledger())


def test_incremental_verify_after_a_failed_run_starts_where_the_last_good_one_did(
    history: History,
) -> None:
    assert verify_ledger().ok
    sign_up_more("dave@example.org")
    execute("UPDATE consent_events SET channel = 'staff' WHERE seq = 10")
    assert not verify_ledger(incremental=True).ok
    sign_up_more("erin@example.org")
    report = verify_ledger(incremental=True)
    assert (report.start, places(report)) == (9, {"event #10"})


def test_a_log_emptied_down_to_its_tree_row_fails_since_a_saved_checkpoint(
    history: History, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    saved = save(tmp_path / "checkpoint.txt", runner.invoke(args=["ledger", "seal"]).stdout)
    for table in ("consent_events", "ledger_nodes", "ledger_checkpoints", "ledger_tree"):
        execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
    execute("UPDATE ledger_head SET seq = 0")
    assert verify_cli(runner)[0] == 0
    code, output = verify_cli(runner, "--since", str(saved))
    assert code == 1
    assert "BROKEN checkpoint file (size 9): the log now holds only 0 sealed events" in output

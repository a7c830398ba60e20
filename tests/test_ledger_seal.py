"""`newsletter ledger seal`: what it signs, when it refuses, the checkpoint log
file, and concurrent sealers."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select, update

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.ledger.seal import Sealed, seal_waiting
from newsletter.ledger.verify import verify_ledger
from newsletter.models import Channel, LedgerCheckpoint, LedgerNode, LedgerTree, MailingList
from newsletter_verify import parse_checkpoint, parse_note, parse_notes, parse_vkey, verify_note

from .conftest import BACKEND
from .fixtures.intake import SignupRequest, sign_up_now
from .fixtures.ledger_history import execute


def sign_up(*emails: str) -> None:
    for email in emails:
        sign_up_now(SignupRequest(email=email, channel=Channel.API, evidence=Evidence()))
    db.session.commit()


def checkpoints() -> list[int]:
    return list(db.session.scalars(select(LedgerCheckpoint.size).order_by(LedgerCheckpoint.size)))


def seal_cli(runner: FlaskCliRunner) -> tuple[int, str, str]:
    db.session.commit()
    result = runner.invoke(args=["ledger", "seal"])
    return result.exit_code, result.stdout, result.stderr


def test_seal_prints_a_checkpoint_that_verifies_with_the_public_key(
    runner: FlaskCliRunner, default_list: MailingList
) -> None:
    sign_up("a@example.org", "b@example.org")
    code, note_text, stderr = seal_cli(runner)
    assert code == 0, stderr
    assert "sealed 2 event(s)" in stderr
    vkey = runner.invoke(args=["ledger", "public-key"]).stdout
    note = parse_note(note_text)
    assert verify_note(note, parse_vkey(vkey))
    checkpoint = parse_checkpoint(note.body)
    assert (checkpoint.origin, checkpoint.size) == ("newsletter.test/consent-ledger", 2)
    tree = db.session.scalars(select(LedgerTree)).one()
    assert (tree.size, tree.root_hash) == (2, checkpoint.root.hex())

    # Nothing waiting: the same checkpoint again, and no new row.
    code, again, stderr = seal_cli(runner)
    assert (code, again) == (0, note_text)
    assert "sealed 0 event(s)" in stderr
    assert checkpoints() == [2]


def test_the_first_seal_signs_the_empty_tree(runner: FlaskCliRunner) -> None:
    code, note_text, _ = seal_cli(runner)
    assert code == 0
    checkpoint = parse_checkpoint(parse_note(note_text).body)
    assert checkpoint.size == 0
    assert checkpoint.root.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert verify_ledger().ok


@pytest.mark.parametrize(("deleted", "named"), [(2, "event #2 is missing"), (3, "event #3")])
def test_seal_refuses_a_missing_event_and_names_it(
    runner: FlaskCliRunner, default_list: MailingList, deleted: int, named: str
) -> None:
    sign_up("a@example.org")
    seal_waiting()
    sign_up("b@example.org", "c@example.org")
    execute("DELETE FROM consent_events WHERE seq = :seq", seq=deleted)
    code, stdout, stderr = seal_cli(runner)
    assert code == 1
    assert stdout == ""
    assert "ledger: cannot seal:" in stderr
    assert named in stderr
    assert checkpoints() == [1]
    assert db.session.scalar(select(func.count()).select_from(LedgerNode)) == 1


def test_the_checkpoint_log_gets_every_checkpoint_once_in_order(
    app: Flask, runner: FlaskCliRunner, default_list: MailingList, tmp_path: Path
) -> None:
    log = tmp_path / "witness" / "checkpoints.log"
    log.parent.mkdir()
    app.config["LEDGER_CHECKPOINT_LOG"] = str(log)
    notes = []
    for email in ("a@example.org", "b@example.org", "c@example.org"):
        sign_up(email)
        notes.append(seal_cli(runner)[1])
    assert seal_cli(runner)[1] == notes[-1]  # nothing new: nothing logged again
    assert log.read_text(encoding="utf-8") == "".join(note + "\n" for note in notes)
    assert [parse_checkpoint(n.body).size for n in parse_notes(log.read_text())] == [1, 2, 3]

    # A log path that cannot be written: the seal succeeds, and the next seal
    # writes what is missing, in order.
    app.config["LEDGER_CHECKPOINT_LOG"] = str(log.parent)  # a directory
    sign_up("d@example.org")
    assert seal_cli(runner)[0] == 0
    sign_up("e@example.org")
    assert seal_cli(runner)[0] == 0
    app.config["LEDGER_CHECKPOINT_LOG"] = str(log)
    assert seal_cli(runner)[0] == 0
    sizes = [parse_checkpoint(n.body).size for n in parse_notes(log.read_text())]
    assert sizes == [1, 2, 3, 4, 5]
    assert checkpoints() == sizes


@pytest.mark.skipif(BACKEND != "postgresql", reason="real concurrent transactions")
@pytest.mark.parametrize("first", [True, False], ids=["first seal", "later seal"])
def test_concurrent_seals_make_one_consistent_tree(
    app: Flask, default_list: MailingList, first: bool, tmp_path: Path
) -> None:
    log = tmp_path / "checkpoints.log"
    app.config["LEDGER_CHECKPOINT_LOG"] = str(log)
    if not first:
        sign_up("early@example.org")
        seal_waiting()
    sign_up(*(f"p{n}@example.org" for n in range(20)))
    threads_n = 4
    barrier = threading.Barrier(threads_n)
    results: list[list[Sealed]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=30)
                results.append(seal_waiting())
                db.session.remove()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    started = [threading.Thread(target=work) for _ in range(threads_n)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=60)
    assert errors == []
    total = 20 + (0 if first else 1)
    assert sum(s.added for done in results for s in done) == 20
    assert {done[-1].size for done in results} == {total}
    assert len({done[-1].note for done in results}) == 1
    db.session.expire_all()
    assert checkpoints()[-1] == total
    report = verify_ledger()
    assert report.ok, report.problems
    assert report.sealed == total
    logged = [parse_checkpoint(n.body).size for n in parse_notes(log.read_text())]
    assert logged == checkpoints()


def test_seal_refuses_to_extend_a_tree_whose_edge_was_changed(
    runner: FlaskCliRunner, default_list: MailingList
) -> None:
    sign_up("a@example.org", "b@example.org", "c@example.org")
    seal_waiting()
    db.session.execute(
        update(LedgerNode).where(LedgerNode.level == 1, LedgerNode.idx == 0).values(hash=b"\7" * 32)
    )
    sign_up("d@example.org")
    code, _, stderr = seal_cli(runner)
    assert code == 1
    assert "the stored tree of 3 events no longer hashes to its root" in stderr
    assert checkpoints() == [3]


@pytest.mark.skipif(BACKEND != "postgresql", reason="real concurrent transactions")
def test_verify_while_events_are_appended_and_sealed_finds_nothing_wrong(
    app: Flask, default_list: MailingList
) -> None:
    """Verify reads the tree, the checkpoints, the events and the head in
    separate statements while appends and seals go on: none of them is a
    problem."""
    sign_up("first@example.org")
    seal_waiting()
    assert verify_ledger().ok
    done = threading.Event()
    errors: list[BaseException] = []
    reports = []

    def write() -> None:
        try:
            with app.app_context():
                for n in range(60):
                    sign_up(f"w{n}@example.org")
                    seal_waiting()
                db.session.remove()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    def check() -> None:
        try:
            with app.app_context():
                while not done.is_set():
                    reports.append(verify_ledger())
                db.session.remove()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=check)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(reports) > 3
    assert [r.problems for r in reports if not r.ok] == []


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from newsletter.ledger.witness import _append
path = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
limit = path.stat().st_size + 40  # room for part of the note only
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    _append(path, sys.argv[2])
except OSError as exc:
    print(exc.errno)
"""


def test_a_checkpoint_the_disk_cannot_take_leaves_no_half_note(tmp_path: Path) -> None:
    """The kernel refuses the write part way (RLIMIT_FSIZE, as a full disk would):
    the file is cut back to its whole notes, and the next seal writes the note again."""
    log = tmp_path / "checkpoints.log"
    log.write_text("first note\n\n")
    note = "example.org/consent-ledger\n12\n" + "A" * 44 + "\n\n\u2014 sig\n\n"
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(log), note],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stdout.strip() == str(errno.EFBIG), done.stderr
    assert log.read_text() == "first note\n\n"

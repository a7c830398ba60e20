"""`newsletter campaign create|start|pause|resume|cancel|status` and the worker's progress.

The commands run through Flask's CLI runner against the real database; the
counts that ``status`` prints are checked after the real worker
(``newsletter worker --once``) has sent to the loopback SMTP server. The
progress reporter draws a bar with ``\\r`` on a terminal and logs plain lines
otherwise.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select, update

from newsletter.campaigns.delivery import DeliveryBatch
from newsletter.campaigns.progress import ProgressReporter
from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    MailingList,
    utcnow,
)

from .fixtures.mailflow import link_path
from .fixtures.smtp import SMTPServer

Deliver = Callable[[], list[EmailMessage]]
Subscribed = Callable[..., EmailMessage]
JSON_KEYS = {
    "id", "status", "total", "queued", "sent", "failed", "skipped", "cancelled", "rate",
    "eta_seconds", "taken_over", "possibly_duplicated", "pause_reason",
}  # fmt: skip
BODY = "# Nyt fra os\n\nHej {{ name }}, her er ugens nyt om æøå.\n"


def invoke(runner: FlaskCliRunner, *args: str) -> Result:
    """Run a command; our own transaction is closed first (SQLite has one writer)."""
    db.session.commit()
    result = runner.invoke(args=list(args))
    db.session.commit()  # see what the command committed, not a stale snapshot
    return result


def body_file(tmp_path: Path, content: str | bytes = BODY, name: str = "nyt.md") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def campaigns() -> list[Campaign]:
    db.session.commit()
    return list(db.session.scalars(select(Campaign).order_by(Campaign.id)))


def delivery_count(campaign_id: int) -> int:
    db.session.commit()
    return (
        db.session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.campaign_id == campaign_id)
        )
        or 0
    )


def status_json(runner: FlaskCliRunner, campaign_id: int) -> dict[str, object]:
    result = invoke(runner, "campaign", "status", str(campaign_id), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert isinstance(data, dict)
    return data


def draft(runner: FlaskCliRunner, tmp_path: Path, subject: str = "Ugens nyt") -> int:
    result = invoke(
        runner,
        "campaign", "create", "--list", "nyhedsbrev", "--subject", subject,
        "--body", str(body_file(tmp_path)),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return int(result.output.strip())


# --- create ------------------------------------------------------------------------------


def test_create_prints_the_id_of_a_new_draft(
    runner: FlaskCliRunner, default_list: MailingList, tmp_path: Path
) -> None:
    result = invoke(
        runner,
        "campaign", "create", "--list", "nyhedsbrev", "--subject", "Ugens nyt: æøå",
        "--body", str(body_file(tmp_path)),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (campaign,) = campaigns()
    assert result.output == f"{campaign.id}\n"
    assert campaign.status == CampaignStatus.DRAFT
    assert campaign.subject == "Ugens nyt: æøå"
    assert campaign.body_markdown == BODY
    assert campaign.list_id == default_list.id
    assert campaign.sender == "Inklusio <nyhedsbrev@newsletter.test>"  # MAIL_DEFAULT_SENDER
    assert campaign.rendered_html is None  # rendered only when sending starts
    assert delivery_count(campaign.id) == 0


def test_create_takes_a_sender_and_ignores_a_byte_order_mark(
    runner: FlaskCliRunner, default_list: MailingList, tmp_path: Path
) -> None:
    path = body_file(tmp_path, "\ufeff" + BODY)

    result = invoke(
        runner,
        "campaign", "create", "--list", "nyhedsbrev", "--subject", "S", "--body", str(path),
        "--sender", "Redaktionen <redaktion@newsletter.test>",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (campaign,) = campaigns()
    assert campaign.sender == "Redaktionen <redaktion@newsletter.test>"
    assert campaign.body_markdown == BODY  # no invisible U+FEFF at the start


@pytest.mark.parametrize(
    ("arguments", "content", "message"),
    [
        (["--list", "nope"], BODY, "Unknown list: nope"),
        (["--subject", "   "], BODY, "Give a subject of 1 to 200 characters"),
        (["--subject", "x" * 201], BODY, "Give a subject of 1 to 200 characters"),
        (["--subject", "Hej\r\nBcc: victim@example.org"], BODY, "control characters"),
        (["--sender", "a@newsletter.test\nBcc: victim@example.org"], BODY, "control characters"),
        ([], "   \n\n", "Give a body"),
        ([], "Hej, caf\xe9 på latin-1\n".encode("latin-1"), "the file is not UTF-8 text"),
    ],
    ids=[
        "unknown-list",
        "empty-subject",
        "long-subject",
        "subject-crlf",
        "sender-lf",
        "empty-body",
        "latin-1-file",
    ],
)
def test_create_refuses_bad_input_with_a_clear_message(
    runner: FlaskCliRunner,
    default_list: MailingList,
    tmp_path: Path,
    arguments: list[str],
    content: str | bytes,
    message: str,
) -> None:
    options = {
        "--list": "nyhedsbrev",
        "--subject": "S",
        "--body": str(body_file(tmp_path, content)),
    }
    for name, value in zip(arguments[::2], arguments[1::2], strict=True):
        options[name] = value

    result = invoke(runner, "campaign", "create", *[part for kv in options.items() for part in kv])

    assert result.exit_code == 2, result.output  # a usage error, named
    assert message in result.output
    assert "Error: Invalid value for" in result.output
    assert campaigns() == []


def test_create_with_a_missing_file_fails(
    runner: FlaskCliRunner, default_list: MailingList, tmp_path: Path
) -> None:
    missing = tmp_path / "findes-ikke.md"

    result = invoke(
        runner,
        "campaign", "create", "--list", "nyhedsbrev", "--subject", "S", "--body", str(missing),
    )  # fmt: skip

    assert result.exit_code == 2
    assert "--body" in result.output
    assert "does not exist" in result.output
    assert campaigns() == []


# --- start -------------------------------------------------------------------------------


def test_start_prints_the_number_queued_and_a_second_start_fails(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Subscribed,
    tmp_path: Path,
) -> None:
    for n in range(3):
        subscribed(f"reader{n}@example.org")
    campaign_id = draft(runner, tmp_path)

    result = invoke(runner, "campaign", "start", str(campaign_id))

    assert result.exit_code == 0, result.output
    assert result.output == f"campaign {campaign_id}: 3 recipients queued\n"
    (campaign,) = campaigns()
    assert campaign.status == CampaignStatus.SENDING
    assert delivery_count(campaign_id) == 3

    again = invoke(runner, "campaign", "start", str(campaign_id))

    assert again.exit_code == 1
    assert f"cannot start: campaign {campaign_id} is sending" in again.output
    assert delivery_count(campaign_id) == 3  # nothing queued twice


@pytest.mark.parametrize(
    ("at", "expected", "printed"),
    [
        ("2030-01-01T08:00", datetime(2030, 1, 1, 8, 0, tzinfo=UTC), "2030-01-01T08:00:00+00:00"),
        (
            "2030-01-01T08:00+02:00",
            datetime(2030, 1, 1, 6, 0, tzinfo=UTC),
            "2030-01-01T08:00:00+02:00",
        ),
    ],
    ids=["utc", "offset"],
)
def test_start_at_a_time_schedules_the_campaign(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Subscribed,
    tmp_path: Path,
    at: str,
    expected: datetime,
    printed: str,
) -> None:
    subscribed("reader@example.org")
    campaign_id = draft(runner, tmp_path)

    result = invoke(runner, "campaign", "start", str(campaign_id), "--at", at)

    assert result.exit_code == 0, result.output
    assert result.output == f"campaign {campaign_id}: scheduled for {printed}\n"
    (campaign,) = campaigns()
    assert campaign.status == CampaignStatus.SCHEDULED
    assert campaign.scheduled_at == expected
    assert delivery_count(campaign_id) == 0
    assert status_json(runner, campaign_id)["status"] == "scheduled"


def test_a_scheduled_campaign_is_sent_by_the_worker_when_its_time_comes(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Subscribed,
    smtp_server: SMTPServer,
    tmp_path: Path,
) -> None:
    subscribed("reader@example.org")
    campaign_id = draft(runner, tmp_path, subject="Planlagt")
    assert invoke(runner, "campaign", "start", str(campaign_id), "--at", "2030-01-01T08:00")
    assert invoke(runner, "worker", "--once").exit_code == 0
    assert status_json(runner, campaign_id)["status"] == "scheduled"  # not yet

    db.session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id)
        .values(scheduled_at=utcnow() - timedelta(seconds=1))
    )
    result = invoke(runner, "worker", "--once")

    assert result.exit_code == 0, result.output
    assert [m["Subject"] for m in smtp_server.messages].count("Planlagt") == 1
    data = status_json(runner, campaign_id)
    assert (data["status"], data["sent"], data["total"]) == ("done", 1, 1)


@pytest.mark.parametrize("at", ["tomorrow", "2030-13-01T08:00", "01/02/2030", ""])
def test_start_with_a_malformed_time_fails_and_sends_nothing(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Subscribed,
    tmp_path: Path,
    at: str,
) -> None:
    """An empty --at (say, an unset shell variable) used to mean "send now"."""
    subscribed("reader@example.org")
    campaign_id = draft(runner, tmp_path)

    result = invoke(runner, "campaign", "start", str(campaign_id), "--at", at)

    assert result.exit_code == 2
    assert "--at" in result.output
    assert "ISO 8601" in result.output
    (campaign,) = campaigns()
    assert campaign.status == CampaignStatus.DRAFT
    assert delivery_count(campaign_id) == 0


def test_start_at_a_past_time_starts_now_and_says_so(
    runner: FlaskCliRunner, default_list: MailingList, tmp_path: Path
) -> None:
    """With nobody to send to, a past --at used to print "scheduled" for a finished one."""
    campaign_id = draft(runner, tmp_path)

    result = invoke(runner, "campaign", "start", str(campaign_id), "--at", "2020-01-01T08:00")

    assert result.exit_code == 0, result.output
    assert result.output == f"campaign {campaign_id}: 0 recipients queued\n"
    (campaign,) = campaigns()
    assert campaign.status == CampaignStatus.DONE


def test_start_and_status_of_an_unknown_campaign_fail(
    runner: FlaskCliRunner, default_list: MailingList
) -> None:
    for command in (["start", "999"], ["status", "999"], ["status", "999", "--json"]):
        result = invoke(runner, "campaign", *command)
        assert result.exit_code == 1, command
        assert "Error: no campaign 999" in result.output
    result = invoke(runner, "campaign", "status", "abc")
    assert result.exit_code == 2
    assert "is not a valid integer" in result.output


# --- status ------------------------------------------------------------------------------


def test_status_counts_after_a_real_worker_run(
    app: Flask,
    client: FlaskClient,
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Subscribed,
    smtp_server: SMTPServer,
    tmp_path: Path,
) -> None:
    welcome = {}
    for name in ("anna", "bo", "gone", "leaving"):
        welcome[name] = subscribed(f"{name}@example.org")
    campaign_id = draft(runner, tmp_path)
    assert invoke(runner, "campaign", "start", str(campaign_id)).exit_code == 0

    before = status_json(runner, campaign_id)
    assert set(before) == JSON_KEYS
    assert before == {
        "id": campaign_id, "status": "sending", "total": 4, "queued": 4, "sent": 0,
        "failed": 0, "skipped": 0, "cancelled": 0, "rate": 0.0, "eta_seconds": None,
        "taken_over": 0, "possibly_duplicated": 0, "pause_reason": None,
    }  # fmt: skip

    smtp_server.recorder.refuse["gone@example.org"] = "550 5.1.1 no such user"
    unsubscribe = link_path(welcome["leaving"], "unsubscribe")
    assert client.post(unsubscribe).status_code == 200  # after the start: skipped
    result = invoke(runner, "worker", "--once")
    assert result.exit_code == 0, result.output

    after = status_json(runner, campaign_id)
    assert set(after) == JSON_KEYS
    assert {k: after[k] for k in JSON_KEYS - {"rate"}} == {
        "id": campaign_id, "status": "done", "total": 4, "queued": 0, "sent": 2,
        "failed": 1, "skipped": 1, "cancelled": 0, "eta_seconds": 0.0,
        "taken_over": 0, "possibly_duplicated": 0, "pause_reason": None,
    }  # fmt: skip
    assert isinstance(after["rate"], float)
    assert after["rate"] > 0

    text = invoke(runner, "campaign", "status", str(campaign_id))
    assert text.exit_code == 0, text.output
    assert text.output.startswith(
        f"campaign {campaign_id} (done): 2/4 sent, 0 queued, 1 failed, 1 skipped, 0 cancelled; "
    )
    assert text.output.rstrip().endswith(
        "ETA 0 s; 0 taken over from a lost worker, up to 0 possibly sent twice"
    )


def test_pause_resume_and_cancel_from_the_command_line(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Subscribed,
    smtp_server: SMTPServer,
    tmp_path: Path,
) -> None:
    for n in range(2):
        subscribed(f"reader{n}@example.org")
    sent_later = draft(runner, tmp_path, subject="Pauset")
    cancelled = draft(runner, tmp_path, subject="Aflyst")
    for campaign_id in (sent_later, cancelled):
        assert invoke(runner, "campaign", "start", str(campaign_id)).exit_code == 0
    smtp_server.reset()

    assert invoke(runner, "campaign", "pause", str(sent_later)).output == (
        f"campaign {sent_later}: paused\n"
    )
    assert invoke(runner, "campaign", "cancel", str(cancelled)).exit_code == 0
    assert invoke(runner, "worker", "--once").exit_code == 0
    assert smtp_server.messages == []
    assert status_json(runner, sent_later)["status"] == "paused"
    assert status_json(runner, cancelled)["cancelled"] == 2

    resumed = invoke(runner, "campaign", "resume", str(sent_later))
    assert resumed.output == f"campaign {sent_later}: resumed\n"
    assert invoke(runner, "worker", "--once").exit_code == 0

    assert sorted(m["Subject"] for m in smtp_server.messages) == ["Pauset", "Pauset"]
    assert status_json(runner, sent_later)["sent"] == 2
    again = invoke(runner, "campaign", "cancel", str(cancelled))
    assert again.exit_code == 1
    assert f"cannot cancel: campaign {cancelled} is cancelled" in again.output


# --- progress ----------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def started_campaign(subscribed: Subscribed, count: int = 3) -> int:
    for n in range(count):
        subscribed(f"reader{n}@example.org")
    campaign = create_campaign("nyhedsbrev", "Fremdrift", BODY)
    start_campaign(campaign.id)
    db.session.commit()
    return campaign.id


def test_progress_on_a_terminal_is_one_line_redrawn_with_carriage_returns(
    app: Flask, default_list: MailingList, subscribed: Subscribed, deliver: Deliver
) -> None:
    campaign_id = started_campaign(subscribed)
    terminal = Terminal()
    reporter = ProgressReporter(terminal, interval=3600)
    batch = DeliveryBatch(campaigns={campaign_id})

    reporter(batch)

    line = terminal.getvalue()
    assert line.startswith(f"\rcampaign {campaign_id} [")
    assert "[" + "-" * 30 + "] 0/3" in line
    assert "\n" not in line  # the line stays open to be redrawn

    reporter(batch)
    assert terminal.getvalue() == line  # throttled: at most once per interval

    deliver()
    reporter(DeliveryBatch(sent=3, campaigns={campaign_id}))  # finished: shown at once

    final = terminal.getvalue()[len(line) :]
    assert final.startswith(f"\rcampaign {campaign_id} [" + "#" * 30 + "] 3/3")
    assert final.endswith("\n")  # the finished bar is not overwritten by what follows


def test_progress_elsewhere_is_plain_log_lines(
    app: Flask,
    default_list: MailingList,
    subscribed: Subscribed,
    deliver: Deliver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    campaign_id = started_campaign(subscribed)
    stream = io.StringIO()
    reporter = ProgressReporter(stream, interval=3600)
    assert not reporter.tty

    with caplog.at_level(logging.INFO, logger="newsletter.campaigns.progress"):
        reporter(DeliveryBatch(campaigns={campaign_id}))
        reporter(DeliveryBatch(campaigns={campaign_id}))  # throttled
        deliver()
        reporter(DeliveryBatch(sent=3, campaigns={campaign_id}))  # finished: always

    assert stream.getvalue() == ""  # nothing drawn
    lines = [r.getMessage() for r in caplog.records if r.name == "newsletter.campaigns.progress"]
    assert lines == [
        f"campaign {campaign_id} (sending): 0/3 done (sent 0, failed 0, skipped 0), 0/s",
        lines[1],
    ]
    assert lines[1].startswith(
        f"campaign {campaign_id} (done): 3/3 done (sent 3, failed 0, skipped 0), "
    )
    assert all("\r" not in line for line in lines)


def test_the_worker_command_logs_progress_when_not_on_a_terminal(
    runner: FlaskCliRunner,
    default_list: MailingList,
    subscribed: Subscribed,
    caplog: pytest.LogCaptureFixture,
) -> None:
    campaign_id = started_campaign(subscribed, count=2)

    with caplog.at_level(logging.INFO, logger="newsletter.campaigns.progress"):
        result = invoke(runner, "worker", "--once")

    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    messages = [r.getMessage() for r in caplog.records if r.name == "newsletter.campaigns.progress"]
    assert any(m.startswith(f"campaign {campaign_id} (done): 2/2 done") for m in messages)

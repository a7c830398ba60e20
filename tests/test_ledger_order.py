"""Ledger order: ``seq`` is the order of appending, ``occurred_at`` the time it happened.

A signup waits in the intake and its events are appended by a worker with
the request's time, while a confirmation or an unsubscribe is appended at
once. So an event with a later ``seq`` can have happened earlier. The
dashboard's 90-day window and every history shown to people go by
``occurred_at`` (ties by ``seq``); the chain is still verified in ``seq`` order.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select, update

from newsletter.extensions import db
from newsletter.ledger import Evidence
from newsletter.ledger.batch import append_events
from newsletter.ledger.pending import PendingEvent, Recorded
from newsletter.models import (
    Channel,
    ConsentEvent,
    MailingList,
    Role,
    SignupIntake,
    Subscriber,
    utcnow,
)
from newsletter.privacy.data_export import subscriber_data_export
from newsletter.reports.dashboard import ACTIVITY_EVENTS, WINDOW_DAYS, daily_activity

from .fixtures.intake import SignupRequest, accept_signup, drain_intake
from .fixtures.ledger import seal_and_verify
from .fixtures.staff import StaffClient

TODAY = date(2026, 11, 24)
FIRST_DAY = TODAY - timedelta(days=WINDOW_DAYS - 1)
CUTOFF = datetime.combine(FIRST_DAY, time(), UTC)  # the window's first instant
END = datetime.combine(TODAY + timedelta(days=1), time(), UTC)  # just after it


def wait_in_intake(email: str, received_at: datetime, lists: list[str] | None = None) -> None:
    """A signup taken by the request path, as if its request came at ``received_at``;
    it waits in the intake until ``drain_intake``."""
    accept_signup(
        SignupRequest(email=email, channel=Channel.API, evidence=Evidence(), list_slugs=lists or [])
    )
    newest = db.session.scalar(select(SignupIntake.id).order_by(SignupIntake.id.desc()).limit(1))
    db.session.execute(
        update(SignupIntake).where(SignupIntake.id == newest).values(received_at=received_at)
    )
    db.session.commit()


def ledger() -> list[tuple[int, datetime]]:
    """(seq, occurred_at) of every event, in chain order."""
    rows = db.session.execute(select(ConsentEvent.seq, ConsentEvent.occurred_at).order_by("seq"))
    return [(seq, at) for seq, at in rows]


# -- the dashboard's 90-day window -------------------------------------------------------------


def test_events_either_side_of_the_window_edge_out_of_seq_order(default_list: MailingList) -> None:
    # Appended in this order (seq 1, 2, 3), happened in another: the event
    # just inside (#1) has a lower seq than the one just outside (#2), and
    # the next inside (#3) a higher one. A bisection on seq found #3 as the
    # window's first event and missed #1.
    wait_in_intake("inside-first@example.org", CUTOFF + timedelta(seconds=1))
    wait_in_intake("outside@example.org", CUTOFF - timedelta(seconds=1))
    wait_in_intake("inside-second@example.org", CUTOFF + timedelta(seconds=2))
    assert drain_intake() == 3
    assert ledger() == [
        (1, CUTOFF + timedelta(seconds=1)),
        (2, CUTOFF - timedelta(seconds=1)),
        (3, CUTOFF + timedelta(seconds=2)),
    ]

    activity = daily_activity(TODAY)

    assert activity.series["requested"][0] == 2
    assert activity.total("requested") == 2
    assert seal_and_verify().ok  # the chain itself still goes by seq


def test_the_last_event_appended_happened_before_the_window(default_list: MailingList) -> None:
    # The newest seq is outside the window, an older seq inside it: the
    # bisection took the newest event's time as the ledger's latest and
    # reported an empty window.
    wait_in_intake("inside@example.org", CUTOFF + timedelta(hours=5))
    wait_in_intake("outside@example.org", CUTOFF - timedelta(hours=5))
    drain_intake()

    activity = daily_activity(TODAY)

    assert activity.total("requested") == 1
    assert activity.series["requested"][0] == 1


def test_the_window_counts_by_time_whatever_the_append_order(
    default_list: MailingList,
) -> None:
    # Events around both edges of the window, appended in a shuffled order;
    # each counts on the UTC day it happened, or not at all outside the window.
    subscriber = Subscriber(email="many@example.org", email_key="many@example.org")
    db.session.add(subscriber)
    db.session.commit()
    shuffle = random.Random(16)
    edges = [CUTOFF, CUTOFF - timedelta(seconds=1), END - timedelta(seconds=1), END]
    # About a third before the window, as after a long quiet spell.
    spread = [
        CUTOFF + timedelta(seconds=shuffle.randrange(-45 * 86400, (WINDOW_DAYS + 2) * 86400))
        for _ in range(60)
    ]
    times = edges + spread
    shuffle.shuffle(times)
    kinds = [str(shuffle.choice([*ACTIVITY_EVENTS, "imported"])) for _ in times]
    append_events(
        [
            PendingEvent(
                event=kind,
                channel=Channel.SYSTEM,
                subscriber_id=subscriber.id,
                email=subscriber.email,
                email_key=subscriber.email_key,
                list_id=default_list.id,
                recorded=Recorded(at, None),
            )
            for at, kind in zip(times, kinds, strict=True)
        ]
    )
    db.session.commit()
    seqs_by_time = [seq for seq, _at in sorted(ledger(), key=lambda row: row[1])]
    assert seqs_by_time != sorted(seqs_by_time)  # really out of order

    expected = Counter(
        (kind, at.date())
        for at, kind in zip(times, kinds, strict=True)
        if CUTOFF <= at < END and kind != "imported"
    )
    activity = daily_activity(TODAY)

    for event in ACTIVITY_EVENTS:
        assert activity.series[str(event)] == [
            expected[(str(event), day)] for day in activity.days
        ], event
    assert seal_and_verify().ok


# -- histories shown to people -----------------------------------------------------------------


def history_out_of_seq_order(make_list: Callable[..., MailingList], editor: StaffClient) -> int:
    """Someone signs up for one list, then for two more; while the second signup
    waits in the intake, staff unsubscribe them from the first list. Appended:
    requested (first list), withdrawn (first list), requested (the two others);
    happened: the requests, then the withdrawal. Returns the subscriber's id."""
    make_list("nyhedsbrev", "Nyhedsbrev", default=True)
    make_list("tilbud", "Tilbud")
    make_list("kultur", "Kultur")
    now = utcnow()
    wait_in_intake("Order@Example.org", now - timedelta(hours=3), ["nyhedsbrev"])
    drain_intake()
    subscriber_id = db.session.scalar(
        select(Subscriber.id).where(Subscriber.email_key == "order@example.org")
    )
    assert subscriber_id is not None
    wait_in_intake("Order@Example.org", now - timedelta(hours=1), ["tilbud", "kultur"])
    first_list = db.session.scalar(select(MailingList.id).where(MailingList.slug == "nyhedsbrev"))
    response = editor.post(
        f"/admin/subscribers/{subscriber_id}/unsubscribe", data={"list": str(first_list)}
    )
    assert response.status_code == 302
    drain_intake()
    return int(subscriber_id)


# (seq, event) in the order the events happened. The second signup asked for
# two lists: its two events share the request's time and keep their seq order.
HAPPENED = [(1, "requested"), (3, "requested"), (4, "requested"), (2, "withdrawn")]


def as_happened(events: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """(seq, event) of a document's events, in the document's order."""
    return [(e["seq"], e["event"]) for e in events]


def test_every_history_is_in_the_order_events_happened(
    app: Flask,
    runner: FlaskCliRunner,
    make_list: Callable[..., MailingList],
    staff_client: Callable[..., StaffClient],
) -> None:
    editor = staff_client(Role.EDITOR)
    subscriber_id = history_out_of_seq_order(make_list, editor)
    by_seq = ledger()
    assert [seq for seq, _at in by_seq] == [1, 2, 3, 4]
    assert by_seq[1][1] > by_seq[2][1]  # #2 happened after #3

    # The proof of consent: `newsletter consent proof`, the console's JSON
    # download and its printable page.
    result = runner.invoke(args=["consent", "proof", "order@example.org"])
    assert result.exit_code == 0, result.output
    assert as_happened(json.loads(result.stdout)["events"]) == HAPPENED
    proof = json.loads(editor.get(f"/admin/subscribers/{subscriber_id}/proof.json").data)
    assert as_happened(proof["events"]) == HAPPENED
    printable = editor.get(f"/admin/subscribers/{subscriber_id}/proof").get_data(as_text=True)
    assert [int(seq) for seq in re.findall(r"<h3>#(\d+) ", printable)] == [1, 3, 4, 2]

    # The console's consent timeline.
    page = editor.get(f"/admin/subscribers/{subscriber_id}").get_data(as_text=True)
    timeline = page.split('<ol class="timeline">', 1)[1].split("</ol>", 1)[0]
    assert [int(seq) for seq in re.findall(r"#(\d+)", timeline)] == [1, 3, 4, 2]

    # The data export, from the code and from `newsletter privacy export`.
    assert as_happened(subscriber_data_export(subscriber_id)["consent_history"]) == HAPPENED
    result = runner.invoke(args=["privacy", "export", "order@example.org"])
    assert result.exit_code == 0, result.output
    assert as_happened(json.loads(result.stdout)["consent_history"]) == HAPPENED

    assert seal_and_verify().ok

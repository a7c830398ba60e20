"""Bounce webhooks end to end: POST /webhooks/bounces/<provider> with each
provider's documented sample, signed its way, against the real database.

A signed hard bounce suppresses the address, marks its subscriptions bounced
and writes a ledger event; a complaint unsubscribes at once (ledger channel
``complaint``); the same event twice acts once; a call that is not
authenticated or does not parse is a 4xx and writes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from newsletter.extensions import db
from newsletter.ledger.keys import email_digest
from newsletter.models import BounceReport, ConsentEvent, MailingList, Subscription, Suppression

from . import webhook_calls as calls
from .conftest import ORIGIN
from .test_webhooks_parse import JSON, leaves, replaced

ADDRESS = "gone@example.org"
URL = "/webhooks/bounces/{}"
PROVIDERS = ("postmark", "mailgun", "sendgrid", "ses")
HARD = {
    "postmark": "postmark_bounce.json",
    "mailgun": "mailgun_failed_permanent.json",
    "sendgrid": "sendgrid_events.json",
    "ses": "ses_bounce.json",
}
COMPLAINT = {
    "postmark": "postmark_spam_complaint.json",
    "mailgun": "mailgun_complained.json",
    "sendgrid": "sendgrid_events.json",
    "ses": "ses_complaint.json",
}


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Iterator[Flask]:
    """The application with every provider's webhook configured."""
    application = app_factory(**calls.settings())
    with application.app_context():
        yield application


def signed(provider: str, payload: Any, **options: Any) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a call signed the provider's way."""
    sign: Callable[..., tuple[bytes, dict[str, str]]] = getattr(calls, provider)
    return sign(payload, **options)


def hard_bounce(provider: str, address: str = ADDRESS) -> Any:
    payload = calls.with_recipient(provider, calls.sample(HARD[provider]), address)
    if provider == "sendgrid":  # only the hard bounce of the sample's events
        payload = [e for e in payload if e["event"] == "bounce" and e.get("type") == "bounce"]
    return payload


def complaint(provider: str, address: str = ADDRESS) -> Any:
    payload = calls.with_recipient(provider, calls.sample(COMPLAINT[provider]), address)
    if provider == "sendgrid":
        payload = [e for e in payload if e["event"] == "spamreport"]
    return payload


def post(client: FlaskClient, provider: str, body: bytes, headers: dict[str, str]) -> Any:
    headers = {"Content-Type": "application/json", **headers}
    return client.post(URL.format(provider), data=body, headers=headers)


def rows() -> dict[str, Any]:
    """What a webhook may write: reports, suppressions, ledger events, subscription states."""
    db.session.commit()
    result = {
        "reports": db.session.scalar(select(func.count(BounceReport.id))),
        "suppressions": sorted(
            tuple(row)
            for row in db.session.execute(select(Suppression.email_digest, Suppression.reason))
        ),
        "events": db.session.scalar(select(func.count(ConsentEvent.id))),
        "subscriptions": sorted(
            tuple(row) for row in db.session.execute(select(Subscription.id, Subscription.status))
        ),
    }
    db.session.commit()
    return result


@pytest.fixture
def reader(default_list: MailingList, subscribed: Callable[..., EmailMessage]) -> str:
    """A confirmed subscriber at ADDRESS."""
    subscribed(ADDRESS)
    return ADDRESS


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_signed_hard_bounce_suppresses_and_is_in_the_ledger(
    client: FlaskClient, reader: str, provider: str
) -> None:
    before = rows()
    response = post(client, provider, *signed(provider, hard_bounce(provider)))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"reports": 1, "recorded": 1, "replayed": False}
    after = rows()
    assert after["reports"] == before["reports"] + 1
    assert after["suppressions"] == [(email_digest(ADDRESS), "bounce")]
    assert after["events"] == before["events"] + 1
    assert {status for _, status in after["subscriptions"]} == {"bounced"}
    event = db.session.scalars(select(ConsentEvent).order_by(ConsentEvent.id.desc())).first()
    assert event is not None
    assert (event.event, event.channel) == ("suppressed", "system")
    report = db.session.scalars(select(BounceReport)).one()
    assert (report.source, report.kind, report.action) == (provider, "hard", "suppressed")
    assert ADDRESS not in report.diagnostic


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_signed_complaint_unsubscribes_at_once(
    client: FlaskClient, reader: str, provider: str
) -> None:
    before = rows()
    last_event = db.session.scalar(select(func.max(ConsentEvent.id)))
    response = post(client, provider, *signed(provider, complaint(provider)))
    assert response.status_code == 200, response.get_data(as_text=True)
    after = rows()
    assert after["suppressions"] == [(email_digest(ADDRESS), "complaint")]
    assert {status for _, status in after["subscriptions"]} == {"unsubscribed"}
    assert after["events"] > before["events"]
    channels = db.session.scalars(
        select(ConsentEvent.channel).where(ConsentEvent.id > last_event)
    ).all()
    assert set(channels) == {"complaint"}
    report = db.session.scalars(select(BounceReport)).one()
    assert (report.kind, report.action) == ("complaint", "unsubscribed")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_same_event_twice_counts_once(client: FlaskClient, reader: str, provider: str) -> None:
    payload = hard_bounce(provider)
    body, headers = signed(provider, payload)
    assert post(client, provider, body, headers).status_code == 200
    once = rows()
    # The very same call again (a replay, or the provider retrying) ...
    again = post(client, provider, body, headers)
    assert again.status_code == 200
    assert again.get_json()["recorded"] == 0
    # ... and the same event in a new, validly signed call.
    resent = post(client, provider, *signed(provider, payload))
    assert resent.status_code == 200
    assert resent.get_json() == {"reports": 1, "recorded": 0, "replayed": False}
    assert rows() == once


def test_a_replayed_one_time_token_is_not_parsed_again(client: FlaskClient, reader: str) -> None:
    body, headers = signed("mailgun", hard_bounce("mailgun"))
    assert post(client, "mailgun", body, headers).get_json()["recorded"] == 1
    assert post(client, "mailgun", body, headers).get_json() == {
        "reports": 0,
        "recorded": 0,
        "replayed": True,
    }


def bad_calls(provider: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """Calls that must be refused: a wrong signature, an old one, a broken body."""
    payload = hard_bounce(provider)
    body, headers = signed(provider, payload)
    cases = [("broken", b"{", headers)]
    if provider in ("sendgrid", "ses"):  # these sign the events themselves
        cases.append(("tampered", body.replace(b"gone@", b"gone2@"), headers))
    if provider == "postmark":
        cases.append(("wrong password", *calls.postmark(payload, password="guess")))
        cases.append(("no credentials", body, {}))
    elif provider == "mailgun":
        cases.append(("old", *calls.mailgun(payload, at=time.time() - 600)))
        cases.append(("foreign key", *calls.mailgun(payload, key="not the key")))
        cases.append(("tampered token", body.replace(b'"token": "', b'"token": "x'), headers))
    elif provider == "sendgrid":
        cases.append(("old", *calls.sendgrid(payload, at=time.time() - 600)))
        cases.append(("unsigned", body, {}))
    else:
        old = datetime.now(UTC) - timedelta(minutes=10)
        cases.append(("old", *calls.ses(payload, at=old)))
        cases.append(("topic", *calls.ses(payload, topic=calls.TOPIC + "x")))
        cases.append(
            (
                "version 2 claimed",
                body.replace(b'"SignatureVersion": "1"', b'"SignatureVersion": "2"'),
                headers,
            )
        )
    return cases


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unauthenticated_or_malformed_calls_are_4xx_and_write_nothing(
    client: FlaskClient, reader: str, provider: str
) -> None:
    before = rows()
    for name, body, headers in bad_calls(provider):
        response = post(client, provider, body, headers)
        assert 400 <= response.status_code < 500, (name, response.status_code)
        assert response.get_json() == {"error": "refused"}
    assert rows() == before


def test_unknown_or_unconfigured_provider_is_404(
    app_factory: Callable[..., Flask], client: FlaskClient, reader: str
) -> None:
    before = rows()
    body, headers = signed("mailgun", hard_bounce("mailgun"))
    assert post(client, "brevo", body, headers).status_code == 404
    assert post(client, "Mailgun", body, headers).status_code == 404
    bare = app_factory()  # no webhook settings: every provider is off
    with bare.test_client() as other:
        for provider in PROVIDERS:
            assert (
                post(other, provider, *signed(provider, hard_bounce(provider))).status_code == 404
            )
    assert rows() == before


def test_soft_bounces_by_webhook_count_until_the_limit_makes_a_hard_one(
    client: FlaskClient, reader: str
) -> None:
    """Three transient SES bounces of three mails (BOUNCE_SOFT_LIMIT is 3)."""
    actions = []
    for number in range(3):
        notification = hard_bounce("ses")
        notification["bounce"]["bounceType"] = "Transient"
        notification["bounce"]["feedbackId"] = f"transient-{number}"
        response = post(client, "ses", *calls.ses(notification))
        assert response.get_json()["recorded"] == 1
        db.session.commit()
        actions.append(
            db.session.scalars(select(BounceReport.action).order_by(BounceReport.id.desc())).first()
        )
    assert actions == ["counted", "counted", "soft_limit"]
    assert rows()["suppressions"] == [(email_digest(ADDRESS), "bounce")]


def test_retries_of_one_delayed_mail_are_one_soft_bounce(client: FlaskClient, reader: str) -> None:
    for event_id in ("first-try", "second-try", "third-try"):
        payload = calls.with_recipient(
            "mailgun", calls.sample("mailgun_failed_temporary.json"), ADDRESS
        )
        payload["event-data"]["id"] = event_id
        assert post(client, "mailgun", *calls.mailgun(payload)).status_code == 200
    after = rows()
    assert after["reports"] == 1
    assert after["suppressions"] == []


def test_the_envelope_sender_names_the_person_whatever_address_bounced(
    app_factory: Callable[..., Flask], default_list: MailingList, subscribed: Any
) -> None:
    """An SES bounce whose mail went out with our VERP envelope sender is the
    subscriber's, though it names another address (a forward that failed)."""
    from newsletter.mail.verp import envelope_sender
    from newsletter.models import OutboxMessage

    subscribed(ADDRESS)
    app = app_factory(**calls.settings(BOUNCE_DOMAIN="bounces.newsletter.example"))
    with app.app_context(), app.test_client() as client:
        welcome = db.session.scalars(
            select(OutboxMessage).order_by(OutboxMessage.id.desc())
        ).first()
        assert welcome is not None
        verp = envelope_sender("o", welcome.id)
        assert verp is not None
        notification = hard_bounce("ses", "forwarded-to@elsewhere.example")
        notification["mail"]["source"] = verp
        response = post(client, "ses", *calls.ses(notification))
        assert response.get_json()["recorded"] == 1
        assert rows()["suppressions"] == [(email_digest(ADDRESS), "bounce")]
        forged = hard_bounce("ses", "forwarded-to@elsewhere.example")
        forged["bounce"]["feedbackId"] = "another"
        local, domain = verp.split("@")
        wrong_tag = local[:-1] + ("0" if local[-1] != "0" else "1")
        forged["mail"]["source"] = f"{wrong_tag}@{domain}"
        assert post(client, "ses", *calls.ses(forged)).get_json()["recorded"] == 1
        assert len(rows()["suppressions"]) == 2  # the named address, not the subscriber again


def test_sns_subscription_confirmation_is_answered_and_writes_nothing(
    client: FlaskClient, reader: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = rows()
    message = calls.sns_message(kind="SubscriptionConfirmation")
    headers = {"x-amz-sns-message-type": "SubscriptionConfirmation"}
    response = post(client, "ses", json.dumps(message).encode(), headers)
    assert response.status_code == 200
    assert response.get_json()["reports"] == 0
    assert message["SubscribeURL"] in caplog.text
    assert rows() == before


def test_a_hostile_provider_name_is_404_and_logged_quoted(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.post("/webhooks/bounces/x%0d%0aforged", data=b"{}")
    assert response.status_code == 404
    assert "\nforged" not in caplog.text
    assert "forged" in caplog.text


def test_postmark_asks_for_basic_credentials(client: FlaskClient) -> None:
    response = post(client, "postmark", b"{}", {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_no_csrf_token_no_origin_check_and_no_cookie(client: FlaskClient, reader: str) -> None:
    """A provider's server sends no CSRF token and no Origin of ours; a foreign
    Origin changes nothing, and nothing sets a cookie."""
    body, headers = signed("sendgrid", hard_bounce("sendgrid"))
    headers["Origin"] = "https://evil.example"
    response = post(client, "sendgrid", body, headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    refused = post(client, "sendgrid", b"[]", {"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert "Set-Cookie" not in refused.headers


def test_exempt_from_csrf_even_where_every_post_is_checked(
    app_factory: Callable[..., Flask], reader: str
) -> None:
    strict = app_factory(**calls.settings(WTF_CSRF_CHECK_DEFAULT=True))
    with strict.app_context(), strict.test_client() as client:
        body, headers = signed("mailgun", hard_bounce("mailgun"))
        response = post(client, "mailgun", body, headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["recorded"] == 1
        # The setting does check other POSTs: the exemption is the webhooks' own.
        signup = client.post(
            "/subscribe", data={"email": "x@example.org"}, headers={"Origin": ORIGIN}
        )
        assert signup.status_code == 400
        assert "CSRF" in signup.get_data(as_text=True)


def test_only_post(client: FlaskClient) -> None:
    assert client.get(URL.format("mailgun")).status_code == 405


def test_a_batch_above_the_form_limit_is_read_and_above_the_webhook_limit_is_413(
    client: FlaskClient, reader: str, app: Flask
) -> None:
    events = [dict(e, email=ADDRESS) for e in calls.sample("sendgrid_events.json")]
    events = [dict(events[7], sg_event_id=f"open-{i}") for i in range(600)] + hard_bounce(
        "sendgrid"
    )
    body, headers = calls.sendgrid(events)
    assert app.config["MAX_CONTENT_LENGTH"] < len(body) < app.config["WEBHOOK_MAX_BYTES"]
    response = post(client, "sendgrid", body, headers)
    assert response.status_code == 200
    assert response.get_json()["recorded"] == 1
    before = rows()
    huge = [dict(events[0], sg_event_id=f"open-{i}") for i in range(6000)]
    body, headers = calls.sendgrid(huge)
    assert len(body) > app.config["WEBHOOK_MAX_BYTES"]
    assert post(client, "sendgrid", body, headers).status_code == 413
    assert rows() == before


def test_unknown_recipient_is_recorded_and_changes_nobody(client: FlaskClient, reader: str) -> None:
    before = rows()
    response = post(client, "ses", *signed("ses", hard_bounce("ses", "stranger@example.org")))
    assert response.status_code == 200
    after = rows()
    assert after["subscriptions"] == before["subscriptions"]
    assert after["reports"] == before["reports"] + 1


@st.composite
def signed_mutation(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A provider's sample with one value replaced by any JSON, then validly signed:
    what reaches parse and the database after authentication."""
    provider = draw(st.sampled_from(PROVIDERS))
    payload = hard_bounce(provider) if draw(st.booleans()) else complaint(provider)
    path = draw(st.sampled_from(leaves(payload)))
    hostile = st.sampled_from(["\0", "a\r\nb", "\ud800", "x" * 3000, "", "gone@example.org\n"])
    payload = replaced(payload, path, draw(JSON | hostile))
    if provider == "mailgun":
        if not isinstance(payload, dict):  # no room for a signature: a body of another shape
            payload = {"event-data": payload}
        payload.pop("signature", None)
        body, headers = calls.mailgun(payload)
    elif provider == "ses":
        body, headers = calls.ses(payload)
    else:
        body, headers = signed(provider, payload)
    return provider, body, headers


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(signed_mutation())
def test_signed_hostile_bodies_never_500(
    client: FlaskClient, reader: str, case: tuple[str, bytes, dict[str, str]]
) -> None:
    provider, body, headers = case
    response = post(client, provider, body, headers)
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    if response.status_code == 400:
        assert response.get_json() == {"error": "refused"}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.sampled_from(PROVIDERS), st.binary(max_size=500) | JSON.map(lambda v: json.dumps(v).encode())
)
def test_unsigned_bodies_are_4xx(client: FlaskClient, provider: str, body: bytes) -> None:
    before = rows()
    response = post(client, provider, body, {})
    assert 400 <= response.status_code < 500
    assert rows() == before

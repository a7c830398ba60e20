"""Provider webhooks, without the database: each provider's authentication and
the reports its documented sample payloads give (deliverability/webhooks)."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.deliverability.reports import IncomingReport
from newsletter.deliverability.webhooks import (
    PROVIDERS,
    Rejected,
    ReplayMemory,
    WebhookCall,
    mailgun,
    postmark,
    sendgrid,
    ses,
)
from newsletter.models import BounceKind

from . import webhook_calls as calls


def call(body: bytes, headers: dict[str, str], *, now: float | None = None) -> WebhookCall:
    return WebhookCall(
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
        now=time.time() if now is None else now,
    )


def refused(module: Any, body: bytes, headers: dict[str, str], **options: Any) -> int:
    """The status a call is refused with (fails the test if it is accepted)."""
    with pytest.raises(Rejected) as caught:
        module.authenticate(call(body, headers), calls.settings(**options))
    return caught.value.status


def reports_of(module: Any, body: bytes, headers: dict[str, str]) -> list[IncomingReport]:
    verified = module.authenticate(call(body, headers), calls.settings())
    return list(module.parse(verified.payload))


# Postmark ---------------------------------------------------------------------------


def test_postmark_bounce_sample_is_a_hard_bounce() -> None:
    [report] = reports_of(postmark, *calls.postmark(calls.sample("postmark_bounce.json")))
    assert report == IncomingReport(
        kind=BounceKind.HARD,
        source="postmark",
        dedupe_key="Bounce:4323372036854775807",
        recipient="john@example.com",
        occurred_at=datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
        diagnostic="HardBounce Test bounce details",
    )


def test_postmark_spam_complaint_sample_is_a_complaint() -> None:
    body, headers = calls.postmark(calls.sample("postmark_spam_complaint.json"))
    [report] = reports_of(postmark, body, headers)
    assert (report.kind, report.dedupe_key, report.recipient) == (
        BounceKind.COMPLAINT,
        "SpamComplaint:42",
        "john@example.com",
    )


@pytest.mark.parametrize(
    ("bounce_type", "kind"),
    [
        ("HardBounce", BounceKind.HARD),
        ("BadEmailAddress", BounceKind.HARD),
        ("SoftBounce", BounceKind.SOFT),
        ("Transient", BounceKind.SOFT),
        ("DnsError", BounceKind.SOFT),
        ("AutoResponder", BounceKind.AUTO_REPLY),
        ("Unsubscribe", None),
        ("ManuallyDeactivated", None),
    ],
)
def test_postmark_bounce_types(bounce_type: str, kind: BounceKind | None) -> None:
    record = dict(calls.sample("postmark_bounce.json"), Type=bounce_type)
    assert [r.kind for r in postmark.parse(record)] == ([kind] if kind else [])


def test_postmark_delivery_and_open_records_report_nothing() -> None:
    for record_type in ("Delivery", "Open", "Click", "SubscriptionChange"):
        record = dict(calls.sample("postmark_bounce.json"), RecordType=record_type)
        assert postmark.parse(record) == []


def test_postmark_refuses_wrong_missing_or_unconfigured_credentials() -> None:
    body, headers = calls.postmark(calls.sample("postmark_bounce.json"), password="wrong")
    assert refused(postmark, body, headers) == 401
    assert refused(postmark, body, {}) == 401
    assert refused(postmark, body, {"Authorization": "Basic !!!"}) == 401
    body, headers = calls.postmark(calls.sample("postmark_bounce.json"))
    assert refused(postmark, body, headers, POSTMARK_WEBHOOK_PASSWORD="") == 404


def test_postmark_reads_no_body_before_the_credentials_match() -> None:
    assert refused(postmark, b"{not json", {}) == 401
    _, headers = calls.postmark({})
    assert refused(postmark, b"{not json", headers) == 400


# Mailgun ----------------------------------------------------------------------------


def test_mailgun_permanent_failure_sample_is_a_hard_bounce() -> None:
    body, headers = calls.mailgun(calls.sample("mailgun_failed_permanent.json"))
    [report] = reports_of(mailgun, body, headers)
    assert report.kind == BounceKind.HARD
    assert report.dedupe_key == "failed:G9Bn5sl1TC6nu79C8C0bwg"
    assert report.recipient == "alice@example.com"
    assert report.verp == "bob@sandbox.mailgun.org"
    assert report.occurred_at == datetime.fromtimestamp(1521233195.375624, UTC)
    assert report.diagnostic == "605 Not delivering to previously bounced address"


def test_mailgun_temporary_failures_of_one_mail_are_one_soft_bounce() -> None:
    """Mailgun reports every retry; each has its own event id, all count once."""
    first = calls.sample("mailgun_failed_temporary.json")
    retry = calls.sample("mailgun_failed_temporary.json")
    retry["event-data"]["id"] = "another-event-id"
    [a] = reports_of(mailgun, *calls.mailgun(first))
    [b] = reports_of(mailgun, *calls.mailgun(retry))
    assert a.kind == b.kind == BounceKind.SOFT
    assert a.dedupe_key == b.dedupe_key
    other_mail = calls.sample("mailgun_failed_temporary.json")
    other_mail["event-data"]["message"]["headers"]["message-id"] = "other@sandbox.mailgun.org"
    [c] = reports_of(mailgun, *calls.mailgun(other_mail))
    assert c.dedupe_key != a.dedupe_key


def test_mailgun_complaint_sample_is_a_complaint() -> None:
    [report] = reports_of(mailgun, *calls.mailgun(calls.sample("mailgun_complained.json")))
    assert (report.kind, report.dedupe_key) == (
        BounceKind.COMPLAINT,
        "complained:-Agny091SquKnsrW2NEKUA",
    )


def test_mailgun_other_events_report_nothing() -> None:
    payload = calls.sample("mailgun_failed_permanent.json")
    for event in ("delivered", "opened", "clicked", "accepted", "unsubscribed"):
        payload["event-data"]["event"] = event
        assert mailgun.parse(payload) == []


def test_mailgun_documented_signature_verifies_under_its_key_and_time() -> None:
    """The sample's own signature block, checked at the time it was made, fails
    only on the key (the documentation does not publish its signing key)."""
    payload = calls.sample("mailgun_failed_permanent.json")
    body = json.dumps(payload).encode()
    with pytest.raises(Rejected) as caught:
        mailgun.authenticate(call(body, {}, now=1529006854), calls.settings())
    assert (caught.value.status, caught.value.reason) == (403, "mailgun signature does not match")


def test_mailgun_refuses_bad_signature_old_or_future_time_and_unconfigured() -> None:
    payload = calls.sample("mailgun_failed_permanent.json")
    assert refused(mailgun, *calls.mailgun(payload, key="another key")) == 403
    assert refused(mailgun, *calls.mailgun(payload, at=time.time() - 301)) == 403
    assert refused(mailgun, *calls.mailgun(payload, at=time.time() + 301)) == 403
    assert refused(mailgun, *calls.mailgun(payload), MAILGUN_WEBHOOK_SIGNING_KEY="") == 404
    body, _ = calls.mailgun(payload)
    tampered = json.loads(body)
    tampered["signature"]["token"] += "x"
    assert refused(mailgun, json.dumps(tampered).encode(), {}) == 403
    del tampered["signature"]
    assert refused(mailgun, json.dumps(tampered).encode(), {}) == 400


def test_mailgun_window_is_the_setting() -> None:
    payload = calls.sample("mailgun_failed_permanent.json")
    body, headers = calls.mailgun(payload, at=time.time() - 1000)
    mailgun.authenticate(call(body, headers), calls.settings(WEBHOOK_MAX_AGE=3600))
    assert refused(mailgun, body, headers, WEBHOOK_MAX_AGE=300) == 403


def test_mailgun_replay_key_is_the_token() -> None:
    body, headers = calls.mailgun(calls.sample("mailgun_complained.json"), token="t" * 50)
    assert mailgun.authenticate(call(body, headers), calls.settings()).replay_key == (
        "mailgun:" + "t" * 50
    )


# SendGrid ---------------------------------------------------------------------------


def test_sendgrid_sample_events() -> None:
    reports = reports_of(sendgrid, *calls.sendgrid(calls.sample("sendgrid_events.json")))
    assert [(r.kind, r.dedupe_key.split(":")[0]) for r in reports] == [
        (BounceKind.SOFT, "deferred"),
        (BounceKind.HARD, "dropped"),
        (BounceKind.HARD, "bounce"),
        (BounceKind.SOFT, "bounce"),
        (BounceKind.COMPLAINT, "spamreport"),
    ]
    assert {r.recipient for r in reports} == {"example@test.com"}
    assert reports[2].dedupe_key == "bounce:6g4ZI7SA-xmRDv57GoPIPw=="
    assert reports[2].diagnostic == "5.0.0 500 unknown recipient"
    assert reports[2].occurred_at == datetime.fromtimestamp(1513299569, UTC)


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("Bounced Address", BounceKind.HARD),
        ("Invalid", BounceKind.HARD),
        ("Spam Reporting Address", BounceKind.COMPLAINT),
        ("Unsubscribed Address", None),
        ("Spam Content (if spam checker app enabled)", None),
    ],
)
def test_sendgrid_dropped_reasons(reason: str, kind: BounceKind | None) -> None:
    event = {**calls.sample("sendgrid_events.json")[3], "reason": reason}
    assert [r.kind for r in sendgrid.parse([event])] == ([kind] if kind else [])


def test_sendgrid_refuses_tampered_foreign_old_or_unsigned_calls() -> None:
    events = calls.sample("sendgrid_events.json")
    body, headers = calls.sendgrid(events)
    assert refused(sendgrid, body + b" ", headers) == 403
    other = ec.generate_private_key(ec.SECP256R1())
    assert refused(sendgrid, *calls.sendgrid(events, key=other)) == 403
    assert refused(sendgrid, *calls.sendgrid(events, at=time.time() - 301)) == 403
    assert refused(sendgrid, body, {}) == 403
    moved = dict(headers, **{sendgrid.TIMESTAMP_HEADER: str(int(time.time()) + 1)})
    assert refused(sendgrid, body, moved) == 403
    assert refused(sendgrid, body, headers, SENDGRID_WEBHOOK_PUBLIC_KEY="") == 404


def test_sendgrid_key_setting_may_be_pem() -> None:
    from cryptography.hazmat.primitives import serialization

    pem = (
        calls.sendgrid_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    body, headers = calls.sendgrid(calls.sample("sendgrid_events.json"))
    sendgrid.authenticate(call(body, headers), calls.settings(SENDGRID_WEBHOOK_PUBLIC_KEY=pem))


def test_sendgrid_signed_garbage_is_malformed_not_accepted() -> None:
    body, headers = calls.sendgrid(b"[{]")
    assert refused(sendgrid, body, headers) == 400
    body, headers = calls.sendgrid({"event": "bounce"})
    verified = sendgrid.authenticate(call(body, headers), calls.settings())
    with pytest.raises(Rejected) as caught:
        sendgrid.parse(verified.payload)
    assert caught.value.status == 400


# Amazon SES via SNS -----------------------------------------------------------------


def test_ses_bounce_sample_is_a_hard_bounce_per_recipient() -> None:
    for version in ("1", "2"):
        [report] = reports_of(ses, *calls.ses(calls.sample("ses_bounce.json"), version=version))
        assert report.kind == BounceKind.HARD
        assert report.recipient == "jane@example.com"
        assert report.verp == "john@example.com"
        assert report.dedupe_key == (
            "bounce:00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000:jane@example.com"
        )
        assert report.occurred_at == datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC)
        assert report.diagnostic == (
            "Permanent General 5.1.1 smtp; 550 5.1.1 <jane@example.com>... User"
        )


def test_sns_subject_is_signed_when_present() -> None:
    message = calls.sns_message(calls.sample("ses_bounce.json"), subject="Amazon SES Bounce")
    body = json.dumps(message).encode()
    assert len(reports_of(ses, body, {})) == 1
    message["Subject"] = "Another subject"
    assert refused(ses, json.dumps(message).encode(), {}) == 403
    del message["Subject"]
    assert refused(ses, json.dumps(message).encode(), {}) == 403


def test_ses_transient_and_undetermined_bounces_are_soft() -> None:
    notification = calls.sample("ses_bounce.json")
    for bounce_type in ("Transient", "Undetermined"):
        notification["bounce"]["bounceType"] = bounce_type
        [report] = reports_of(ses, *calls.ses(notification))
        assert report.kind == BounceKind.SOFT


def test_ses_complaint_sample_is_a_complaint_and_not_spam_is_nothing() -> None:
    notification = calls.sample("ses_complaint.json")
    [report] = reports_of(ses, *calls.ses(notification))
    assert (report.kind, report.recipient) == (BounceKind.COMPLAINT, "richard@example.com")
    notification["complaint"]["complaintFeedbackType"] = "not-spam"
    assert reports_of(ses, *calls.ses(notification)) == []


def test_ses_delivery_notifications_report_nothing() -> None:
    notification = {"notificationType": "Delivery", "mail": {}, "delivery": {}}
    assert reports_of(ses, *calls.ses(notification)) == []


def test_sns_subscription_confirmation_is_verified_and_its_url_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = calls.sns_message(kind="SubscriptionConfirmation")
    body = json.dumps(message).encode()
    with caplog.at_level(logging.WARNING):
        assert reports_of(ses, body, {}) == []
    assert message["SubscribeURL"] in caplog.text
    message["Token"] = "forged"
    assert refused(ses, json.dumps(message).encode(), {}) == 403


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-west-2.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-west-2.amazonaws.com.evil.example/SimpleNotificationService-x.pem",
        "https://evil.example/sns.us-west-2.amazonaws.com/SimpleNotificationService-x.pem",
        "https://user@sns.us-west-2.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-west-2.amazonaws.com:444/SimpleNotificationService-x.pem",
        "https://sns.us-west-2.amazonaws.com/a/../SimpleNotificationService-x.pem",
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-x.pem?x=1",
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-x.txt",
        "https://SNS.US-WEST-2.AMAZONAWS.COM/SimpleNotificationService-x.pem",
    ],
)
def test_sns_certificate_url_must_be_an_sns_address(url: str) -> None:
    body, headers = calls.ses(calls.sample("ses_bounce.json"), cert_url=url)
    # Pinned under that very URL: the address itself is what is refused.
    assert refused(ses, body, headers, SES_SNS_CERTIFICATES={url: calls.certificate_pem()}) == 403


def test_sns_refuses_unpinned_expired_foreign_or_tampered() -> None:
    notification = calls.sample("ses_bounce.json")
    body, headers = calls.ses(notification)
    assert refused(ses, body, headers, SES_SNS_CERTIFICATES={}) == 403
    expired = calls.certificate_pem(valid_from=datetime.now(UTC) - timedelta(days=60))
    assert refused(ses, body, headers, SES_SNS_CERTIFICATES={calls.CERT_URL: expired}) == 403
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(ses, *calls.ses(notification, key=stranger)) == 403
    tampered = json.loads(body)
    tampered["Message"] = tampered["Message"].replace("jane@", "mary@")
    assert refused(ses, json.dumps(tampered).encode(), headers) == 403
    tampered = json.loads(body)
    tampered["SignatureVersion"] = "2"  # signed as version 1
    assert refused(ses, json.dumps(tampered).encode(), headers) == 403
    tampered["SignatureVersion"] = "3"
    assert refused(ses, json.dumps(tampered).encode(), headers) == 403


def test_sns_refuses_other_topics_old_messages_and_unconfigured() -> None:
    notification = calls.sample("ses_bounce.json")
    other_topic = "arn:aws:sns:us-west-2:123456789012:Other"
    assert refused(ses, *calls.ses(notification, topic=other_topic)) == 403
    old = datetime.now(UTC) - timedelta(seconds=301)
    assert refused(ses, *calls.ses(notification, at=old)) == 403
    assert refused(ses, *calls.ses(notification), SES_SNS_TOPIC_ARNS=[]) == 404


def test_sns_certificate_from_the_pinned_directory(tmp_path: Path) -> None:
    name = calls.CERT_URL.rsplit("/", 1)[1]
    (tmp_path / name).write_text(calls.certificate_pem())
    body, headers = calls.ses(calls.sample("ses_bounce.json"))
    verified = ses.authenticate(
        call(body, headers),
        calls.settings(SES_SNS_CERTIFICATES={}, SES_SNS_CERTIFICATE_DIR=str(tmp_path)),
    )
    assert verified.replay_key == "ses:" + json.loads(body)["MessageId"]
    other = calls.CERT_URL.replace("f3ecfb", "000000")
    body, headers = calls.ses(calls.sample("ses_bounce.json"), cert_url=other)
    assert (
        refused(ses, body, headers, SES_SNS_CERTIFICATES={}, SES_SNS_CERTIFICATE_DIR=str(tmp_path))
        == 403
    )


# All providers ----------------------------------------------------------------------


def test_every_provider_is_registered() -> None:
    assert set(PROVIDERS) == {"postmark", "mailgun", "sendgrid", "ses"}


def test_replay_memory_forgets_after_its_time_and_stays_bounded() -> None:
    memory = ReplayMemory(capacity=3)
    memory.remember("a", 10, now=100)
    assert memory.seen("a", now=105)
    assert not memory.seen("a", now=111)
    for key in "bcde":
        memory.remember(key, 10, now=106)
    assert not memory.seen("b", now=107)  # the oldest went when the fourth came
    assert memory.seen("e", now=107)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=12,
)
SAMPLES = {
    "postmark": ["postmark_bounce.json", "postmark_spam_complaint.json"],
    "mailgun": [
        "mailgun_failed_permanent.json",
        "mailgun_failed_temporary.json",
        "mailgun_complained.json",
    ],
    "sendgrid": ["sendgrid_events.json"],
    "ses": ["ses_bounce.json", "ses_complaint.json"],
}
HOSTILE_TEXT = st.sampled_from(
    ["", " ", "\0", "a\r\nb", "\ud800", "x" * 5000, "é@ø.dk", "1e999", "-1", "99999999999999999999"]
)


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value``."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += leaves(item, (*path, index))
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    """A provider and one of its samples with one value anywhere replaced."""
    provider = draw(st.sampled_from(sorted(SAMPLES)))
    payload = calls.sample(draw(st.sampled_from(SAMPLES[provider])))
    if provider == "ses":
        payload = calls.sns_message(payload)
        payload["Message"] = json.loads(payload["Message"])
    path = draw(st.sampled_from(leaves(payload)))
    payload = replaced(payload, path, draw(JSON | HOSTILE_TEXT))
    if (
        provider == "ses"
        and isinstance(payload, dict)
        and not isinstance(payload.get("Message"), str)
    ):
        payload["Message"] = json.dumps(payload.get("Message"))
    return provider, payload


def parse_cleanly(provider: str, payload: Any) -> None:
    """parse() gives well-formed reports or a 400, nothing else."""
    try:
        reports = PROVIDERS[provider].parse(payload)
    except Rejected as rejected:
        status = rejected.status
        reports = []
    else:
        status = 200
    assert status in (200, 400)
    for report in reports:
        assert isinstance(report, IncomingReport)
        assert report.kind in set(BounceKind)
        for value in (report.dedupe_key, report.recipient, report.verp, report.diagnostic):
            assert value is None or isinstance(value, str)
            (value or "").encode("utf-8")
            assert "\0" not in (value or "")
            assert "\n" not in (value or "")
        assert len(report.diagnostic) <= 300


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_parse_of_a_mutated_sample_is_reports_or_400(case: tuple[str, Any]) -> None:
    parse_cleanly(*case)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), JSON)
def test_parse_of_any_json_is_reports_or_400(provider: str, payload: Any) -> None:
    parse_cleanly(provider, payload)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.binary(max_size=2000) | JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(
            [
                "Authorization",
                sendgrid.SIGNATURE_HEADER.lower(),
                sendgrid.TIMESTAMP_HEADER.lower(),
                "x-amz-sns-message-type",
            ]
        ),
        st.text(max_size=200),
    ),
)
def test_authenticate_refuses_any_unsigned_call_with_a_4xx(
    provider: str, body: bytes, headers: dict[str, str]
) -> None:
    with pytest.raises(Rejected) as caught:
        PROVIDERS[provider].authenticate(call(body, headers), calls.settings())
    assert 400 <= caught.value.status < 500


def test_sendgrid_header_garbage_is_refused() -> None:
    body, headers = calls.sendgrid(calls.sample("sendgrid_events.json"))
    for bad in ("", "∂", base64.b64encode(b"x" * 70).decode(), "a" * 10000):
        assert refused(sendgrid, body, dict(headers, **{sendgrid.SIGNATURE_HEADER: bad})) == 403

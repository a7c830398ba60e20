"""DKIM: every mail the real worker sends is signed, and dkimpy verifies the signature.

Keys are made in the test (RSA 2048 with the ``cryptography`` package when it is
installed, else ``openssl genrsa``; Ed25519 with PyNaCl, in dkimpy's format: the
base64 raw seed as private key). The public key is served to ``dkim.verify``
by a ``dnsfunc`` standing in for DNS. The bytes verified are exactly what the
loopback SMTP server received: a confirmation mail, a welcome mail and a
campaign mail (one of them to an address that needs SMTPUTF8). The signature
covers every header ``mail.dkim.SIGNED_HEADERS`` lists, List-Unsubscribe and List-Unsubscribe-Post
included, so changing or adding one of them makes verification fail.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import nacl.signing
import pytest
from flask import Flask
from flask.testing import FlaskClient

from newsletter.campaigns.service import create_campaign, start_campaign
from newsletter.models import MailingList

from .fixtures.mailflow import link_path
from .fixtures.smtp import Received, SMTPServer

SELECTOR = "mail2026"
DOMAIN = "newsletter.test"
REQUIRED = {
    "from", "to", "subject", "date", "message-id", "list-id",
    "list-unsubscribe", "list-unsubscribe-post",
}  # fmt: skip
Deliver = Callable[[], list[EmailMessage]]


@dataclass(frozen=True)
class Key:
    """A DKIM key pair: what the app is given, and the DNS TXT record."""

    algorithm: str  # the DKIM_ALGORITHM setting
    private: str
    record: bytes


def generate_rsa_key(folder: Path) -> Key:
    """A 2048-bit RSA key; the record's p= is the base64 DER SubjectPublicKeyInfo."""
    if importlib.util.find_spec("cryptography") is not None:
        rsa = importlib.import_module("cryptography.hazmat.primitives.asymmetric.rsa")
        ser = importlib.import_module("cryptography.hazmat.primitives.serialization")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()
        ).decode()
        der = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    else:
        path = folder / "rsa.pem"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True
        )
        pem = path.read_text()
        der = subprocess.run(
            ["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    return Key("rsa", pem, record)


def generate_ed25519_key() -> Key:
    """dkimpy's Ed25519 format: base64 of the 32-byte seed and of the raw public key."""
    signing = nacl.signing.SigningKey.generate()
    private = base64.b64encode(bytes(signing)).decode()
    public = base64.b64encode(bytes(signing.verify_key))
    return Key("ed25519", private, b"v=DKIM1; k=ed25519; p=" + public)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """One key of each kind for the module (RSA generation takes a moment)."""
    return {
        "rsa": generate_rsa_key(tmp_path_factory.mktemp("dkim")),
        "ed25519": generate_ed25519_key(),
    }


@dataclass(frozen=True)
class Setup:
    """How the app under test is configured for DKIM (key None: not at all)."""

    key: Key | None
    settings: dict[str, Any]


@pytest.fixture
def dkim_setup(request: pytest.FixtureRequest, keys: dict[str, Key], tmp_path: Path) -> Setup:
    """``rsa`` / ``ed25519``: key in DKIM_PRIVATE_KEY; ``*-file``: in DKIM_PRIVATE_KEY_FILE;
    ``none``: no DKIM settings."""
    variant: str = request.param
    if variant == "none":
        return Setup(None, {})
    algorithm, _, source = variant.partition("-")
    key = keys[algorithm]
    settings: dict[str, Any] = {
        "DKIM_SELECTOR": SELECTOR,
        "DKIM_DOMAIN": DOMAIN,
        "DKIM_ALGORITHM": algorithm,
    }
    if source == "file":
        path = tmp_path / f"dkim-{algorithm}.key"
        path.write_text(key.private.rstrip("\n") + "\n")
        path.chmod(0o600)
        settings["DKIM_PRIVATE_KEY_FILE"] = str(path)
    else:
        settings["DKIM_PRIVATE_KEY"] = key.private
    return Setup(key, settings)


@pytest.fixture
def app(app_factory: Callable[..., Flask], dkim_setup: Setup) -> Iterator[Flask]:
    """This module's app: configured through app_factory with the DKIM settings."""
    application = app_factory(**dkim_setup.settings)
    with application.app_context():
        yield application


def dns_for(key: Key) -> Callable[..., bytes | None]:
    """A dnsfunc for dkimpy that knows one TXT record."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        if name.rstrip(b".") == f"{SELECTOR}._domainkey.{DOMAIN}".encode():
            return key.record
        return None

    return lookup


def signature_tags(raw: bytes) -> dict[str, str]:
    """The tags of the (single) DKIM-Signature header, whitespace removed."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    fields = re.findall(
        r"^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.MULTILINE | re.I
    )
    assert len(fields) == 1, f"expected one DKIM-Signature, got {len(fields)}"
    value = re.sub(r"\s+", "", fields[0])
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def signed_headers(raw: bytes) -> list[str]:
    """The h= list of the signature, lower-case."""
    return [name.lower() for name in signature_tags(raw)["h"].split(":")]


def replace_header(raw: bytes, name: bytes, value: bytes) -> bytes:
    """The same bytes with one header's value changed."""
    changed, count = re.subn(
        rb"^(" + re.escape(name) + rb":)[^\r\n]*", rb"\1 " + value, raw, count=1, flags=re.M | re.I
    )
    assert count == 1, f"no {name!r} header"
    return changed


def add_header_above(raw: bytes, line: bytes) -> bytes:
    """A header added on the way, put above the existing ones (where relays add theirs)."""
    return line + b"\r\n" + raw


@dataclass(frozen=True)
class Mails:
    """The raw bytes the server received for each kind of mail."""

    confirmation: Received
    welcome: Received
    campaign: list[Received]


def run_flow(
    client: FlaskClient,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> Mails:
    """Sign up, confirm, and send a campaign, as people and the worker do."""
    received = smtp_server.recorder.received
    confirmation = subscribe("reader@example.org", name="Læser Ærø")
    confirmation_raw = received[-1]
    assert confirmation_raw.message["Subject"] == confirmation["Subject"]
    assert client.post(link_path(confirmation, "confirm")).status_code == 200
    assert len(deliver()) == 1
    welcome_raw = received[-1]
    second = subscribe("søren@example.org")  # needs SMTPUTF8
    assert client.post(link_path(second, "confirm")).status_code == 200
    assert len(deliver()) == 1
    campaign = create_campaign("nyhedsbrev", "Nyt fra os: æøå", "Hej {{ name }}!\n")
    start_campaign(campaign.id)
    before = len(received)
    assert len(deliver()) == 2
    return Mails(confirmation_raw, welcome_raw, received[before:])


VARIANTS = ["rsa", "ed25519", "rsa-file", "ed25519-file"]


@pytest.mark.parametrize("dkim_setup", VARIANTS, indirect=True)
def test_every_kind_of_mail_is_signed_and_verifies_with_dkimpy(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
    smtp_server: SMTPServer,
    dkim_setup: Setup,
) -> None:
    assert dkim_setup.key is not None
    dns = dns_for(dkim_setup.key)
    algorithm = "rsa-sha256" if dkim_setup.key.algorithm == "rsa" else "ed25519-sha256"

    mails = run_flow(client, subscribe, deliver, smtp_server)

    assert [r.rcpt_tos for r in mails.campaign] == [["reader@example.org"], ["søren@example.org"]]
    everything = [mails.confirmation, mails.welcome, *mails.campaign]
    for received in everything:
        raw = received.raw
        assert dkim.verify(raw, dnsfunc=dns), f"{received.message['Subject']!r} does not verify"
        tags = signature_tags(raw)
        assert (tags["a"], tags["d"], tags["s"]) == (algorithm, DOMAIN, SELECTOR)
        assert set(signed_headers(raw)) >= REQUIRED
    # The list mails carry the list headers, and they are covered.
    for received in [mails.welcome, *mails.campaign]:
        message = received.message
        assert message["List-Unsubscribe"]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Id"]
    assert mails.confirmation.message["List-Unsubscribe"] is None  # transactional


@pytest.mark.parametrize("dkim_setup", ["rsa", "ed25519"], indirect=True)
def test_changing_or_adding_a_list_header_breaks_the_signature(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
    smtp_server: SMTPServer,
    dkim_setup: Setup,
) -> None:
    assert dkim_setup.key is not None
    dns = dns_for(dkim_setup.key)
    mails = run_flow(client, subscribe, deliver, smtp_server)
    campaign, welcome = mails.campaign[0].raw, mails.welcome.raw
    confirmation = mails.confirmation.raw
    assert dkim.verify(campaign, dnsfunc=dns)
    other = b"<https://evil.example/unsubscribe/x>"

    for raw in (campaign, welcome):
        tampered = [
            replace_header(raw, b"List-Unsubscribe", other),
            replace_header(raw, b"List-Unsubscribe-Post", b"List-Unsubscribe=Nope"),
            replace_header(raw, b"List-Id", b"Other <other.evil.example>"),
            replace_header(raw, b"Subject", b"Changed"),
            add_header_above(raw, b"List-Unsubscribe: " + other),
            add_header_above(raw, b"From: Someone Else <ceo@newsletter.test>"),
        ]
        for changed in tampered:
            assert changed != raw
            assert not dkim.verify(changed, dnsfunc=dns)
    # A transactional mail cannot be turned into a list mail on the way either.
    assert dkim.verify(confirmation, dnsfunc=dns)
    assert not dkim.verify(
        add_header_above(confirmation, b"List-Unsubscribe: " + other), dnsfunc=dns
    )
    # Only the bytes as sent verify: a changed body fails as well.
    assert not dkim.verify(campaign.replace(b"Hej", b"Farvel", 1), dnsfunc=dns)


@pytest.mark.parametrize("dkim_setup", ["ed25519"], indirect=True)
def test_a_key_that_does_not_match_the_dns_record_fails(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    """The verification above is real: another published key of the same kind fails."""
    mails = run_flow(client, subscribe, deliver, smtp_server)

    stranger = generate_ed25519_key()
    assert not dkim.verify(mails.campaign[0].raw, dnsfunc=dns_for(stranger))


@pytest.mark.parametrize("dkim_setup", ["none"], indirect=True)
def test_without_dkim_settings_no_mail_is_signed(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
    smtp_server: SMTPServer,
) -> None:
    mails = run_flow(client, subscribe, deliver, smtp_server)

    for received in [mails.confirmation, mails.welcome, *mails.campaign]:
        assert b"DKIM-Signature" not in received.raw
        assert received.message["DKIM-Signature"] is None


@pytest.mark.parametrize("dkim_setup", ["none"], indirect=True)
def test_a_partial_dkim_configuration_signs_nothing(
    app: Flask,
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
    smtp_server: SMTPServer,
    keys: dict[str, Key],
) -> None:
    """A key without selector (or domain) is not enough to sign with."""
    app.config.update(DKIM_PRIVATE_KEY=keys["rsa"].private, DKIM_DOMAIN=DOMAIN)

    mails = run_flow(client, subscribe, deliver, smtp_server)

    assert all(b"DKIM-Signature" not in r.raw for r in [mails.confirmation, *mails.campaign])


# --- the signature is made with cryptography / a cached key, dkimpy builds the header --


SAMPLE = (
    b"From: Nyhedsbrev <news@newsletter.test>\r\nTo: =?utf-8?q?S=C3=B8ren?= <s@example.org>\r\n"
    b"Subject: Nyt\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <1@newsletter.test>\r\n"
    b"List-Id: Nyhedsbrev <nyhedsbrev.newsletter.test>\r\n"
    b"List-Unsubscribe: <https://newsletter.test/unsubscribe/abc>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"X-Folded: one\r\n two\r\n\r\n" + b"Body line =C3=A6\r\n" * 50 + b"\r\n\r\n"
)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize(
    "message",
    [SAMPLE, SAMPLE.replace(b"\r\n", b"\n"), SAMPLE.split(b"\r\n\r\n")[0], b"\r\n" + SAMPLE],
    ids=["crlf", "lf", "headers-only", "leading-blank-line"],
)
def test_the_signature_header_is_byte_for_byte_what_dkimpy_makes(
    keys: dict[str, Key], algorithm: str, message: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RSASSA-PKCS1-v1_5 and Ed25519 are deterministic: with the clock fixed, the
    header made with cryptography's RSA (or a cached PyNaCl key) equals dkim.sign's."""
    from newsletter.mail import dkim as signing

    monkeypatch.setattr("time.time", lambda: 1772445600.25)
    key = keys[algorithm].private.encode()
    name = b"rsa-sha256" if algorithm == "rsa" else b"ed25519-sha256"
    signer = signing.digest_signer(name, key)
    assert signer is not None

    ours = signing.signature_header(message, b"sel", DOMAIN.encode(), name, signer)

    expected = dkim.sign(
        message,
        b"sel",
        DOMAIN.encode(),
        key,
        include_headers=signing.INCLUDE_HEADERS,
        signature_algorithm=name,
        linesep=b"\r\n",
    )
    assert ours == expected
    assert signing.parse_message(message) == dkim.rfc822_parse(message)


def test_an_rsa_signature_made_with_cryptography_verifies_with_dkimpy(
    keys: dict[str, Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dkimpy's pure-Python RSA is not used at all (it would raise here)."""
    from newsletter.mail import dkim as signing

    def no_pure_python_rsa(*args: Any) -> bytes:
        raise AssertionError("dkimpy's RSA was used")

    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", no_pure_python_rsa)
    signer = signing.digest_signer(b"rsa-sha256", keys["rsa"].private.encode())
    assert signer is not None

    header = signing.signature_header(
        SAMPLE, SELECTOR.encode(), DOMAIN.encode(), b"rsa-sha256", signer
    )

    dns = dns_for(keys["rsa"])
    assert dkim.verify(header + SAMPLE, dnsfunc=dns)
    assert not dkim.verify(header + SAMPLE.replace(b"Nyt", b"Old"), dnsfunc=dns)


@pytest.mark.parametrize("dkim_setup", ["rsa"], indirect=True)
def test_a_key_only_dkimpy_reads_is_signed_by_dkimpy(
    client: FlaskClient,
    default_list: MailingList,
    subscribe: Callable[..., EmailMessage],
    deliver: Deliver,
    smtp_server: SMTPServer,
    dkim_setup: Setup,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should cryptography refuse a key, signing falls back to dkim.sign as before."""
    from newsletter.mail import dkim as signing

    assert dkim_setup.key is not None
    monkeypatch.setattr(signing, "digest_signer", lambda algorithm, key: None)

    mails = run_flow(client, subscribe, deliver, smtp_server)

    for received in [mails.confirmation, *mails.campaign]:
        assert dkim.verify(received.raw, dnsfunc=dns_for(dkim_setup.key))

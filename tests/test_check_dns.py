"""`newsletter check --dns` reads the sender's SPF, DKIM and DMARC records from a
real DNS server (dnsmasq on loopback) and names every gap against the
Gmail/Yahoo/Microsoft bulk-sender rules; the record parsers never raise."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Callable
from pathlib import Path

import nacl.signing
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Config
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter.cli import cli
from newsletter.ledger.keyring import write_new_key
from newsletter.ops.check import Finding
from newsletter.ops.dns_check import (
    is_dmarc,
    is_spf,
    parse_dkim,
    parse_dmarc,
    parse_resolver,
    parse_spf,
    parse_tags,
    run_dns_checks,
    txt_text,
)

from .fixtures.dns_server import DnsServer, Zone, txt_strings

DOMAIN = "example.org"
SELECTOR = "news2026"
SENDER = f"Inklusio <nyhedsbrev@{DOMAIN}>"
SPF = "v=spf1 ip4:192.0.2.1 include:_spf.example.net -all"
DMARC = f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}"

KeyPair = tuple[str, str]  # PEM private key, base64 public key for p=
Check = Callable[..., Result]


def rsa_key(bits: int = 2048) -> tuple[str, str]:
    """(PEM private key, base64 SubjectPublicKeyInfo for p=)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(public).decode()


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return rsa_key()


def zone_for(
    public: str,
    *,
    spf: list[str] | None = None,
    dkim: list[str] | None = None,
    dmarc: list[str] | None = None,
) -> Zone:
    """A complete zone for example.org unless a record list says otherwise."""
    zone = Zone(domains={DOMAIN, "example.net"})
    zone.add_txt(DOMAIN, "google-site-verification=not-an-spf-record")
    for text in [SPF] if spf is None else spf:
        zone.add_txt(DOMAIN, text)
    zone.add_txt("_spf.example.net", "v=spf1 ip4:198.51.100.0/24 -all")
    for text in [f"v=DKIM1; k=rsa; p={public}"] if dkim is None else dkim:
        zone.add_txt(f"{SELECTOR}._domainkey.{DOMAIN}", text)
    for text in [DMARC] if dmarc is None else dmarc:
        zone.add_txt(f"_dmarc.{DOMAIN}", text)
    return zone


def settings(private: str, resolver: str, **extra: object) -> Config:
    config = Config(".")
    config.from_mapping(
        MAIL_DEFAULT_SENDER=SENDER,
        DKIM_SELECTOR=SELECTOR,
        DKIM_DOMAIN=DOMAIN,
        DKIM_PRIVATE_KEY=private,
        DKIM_ALGORITHM="rsa",
        DNS_RESOLVER=resolver,
    )
    config.from_mapping(extra)
    return config


def findings(zone: Zone, private: str, **extra: object) -> list[Finding]:
    with DnsServer(zone) as server:
        return run_dns_checks(settings(private, server.address, **extra))


def only(found: list[Finding], prefix: str) -> Finding:
    """The one finding whose setting starts with ``prefix`` and is not ok, else the ok one."""
    matching = [f for f in found if f.setting.startswith(prefix)]
    bad = [f for f in matching if f.level != "ok"]
    assert len(bad) <= 1, found
    assert bad or len(matching) == 1, found
    return bad[0] if bad else matching[0]


def levels(found: list[Finding]) -> dict[str, str]:
    return {f"{f.setting}: {f.message}": f.level for f in found}


# --- a complete zone -------------------------------------------------------


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Check:
    """`newsletter check --offline --dns` with exactly these NEWSLETTER_* settings
    on top of a sound production configuration."""
    signing_key = tmp_path / "keys" / "ledger.key"
    signing_key.parent.mkdir()
    write_new_key(signing_key, "news.example.org/consent-ledger")
    sound = {
        "SECRET_KEY": "k" * 48,
        "LEDGER_KEY": "l" * 48,
        "BASE_URL": "https://news.example.org",
        "MAIL_SERVER": "smtp.example.org",
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0",
        "LEDGER_SIGNING_KEY_FILE": signing_key,
        "LEDGER_CHECKPOINT_LOG": tmp_path / "checkpoints.log",
    }

    def run(**given: object) -> Result:
        for name in list(os.environ):
            if name.startswith("NEWSLETTER_") and name != "NEWSLETTER_TEST_BACKEND":
                monkeypatch.delenv(name)
        for name, value in {**sound, **given}.items():
            monkeypatch.setenv(f"NEWSLETTER_{name}", str(value))
        monkeypatch.chdir(tmp_path)
        return CliRunner().invoke(cli, ["check", "--offline", "--dns"])

    return run


def dns_lines(output: str) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if any(f" {word} " in line for word in ("SPF", "DKIM", "DMARC", "BOUNCE_DOMAIN"))
        or "DNS_RESOLVER" in line
    ]


def test_a_complete_zone_is_all_ok(check: Check, key: KeyPair) -> None:
    private, public = key
    assert len(public) > 255  # the DKIM record goes out as several strings
    zone = zone_for(public)
    with DnsServer(zone) as server:
        result = check(
            MAIL_DEFAULT_SENDER=SENDER,
            DKIM_SELECTOR=SELECTOR,
            DKIM_DOMAIN=DOMAIN,
            DKIM_PRIVATE_KEY=private,
            DNS_RESOLVER=server.address,
        )
    assert result.exit_code == 0, result.output
    lines = dns_lines(result.output)
    assert lines == [
        "ok      SPF example.org: ends in -all: other hosts fail; 1 DNS lookup(s)",
        "ok      DKIM news2026._domainkey.example.org: publishes the configured rsa key, 2048-bit",
        "ok      DMARC _dmarc.example.org: p=reject",
        "ok      DMARC alignment example.org: DKIM (d=example.org, adkim=r) aligned, "
        "SPF (example.org, aspf=r) aligned",
    ], result.output
    assert "0 error(s)" in result.output


def test_the_dkim_record_is_split_into_strings_of_255(key: KeyPair) -> None:
    _, public = key
    strings = txt_strings(f"v=DKIM1; k=rsa; p={public}")
    assert len(strings) == 2
    assert len(strings[0]) == 255
    assert txt_text(s.encode() for s in strings) == f"v=DKIM1; k=rsa; p={public}"


def test_a_complete_zone_with_bounce_domain_and_ed25519_is_all_ok() -> None:
    signing = nacl.signing.SigningKey.generate()
    seed = base64.b64encode(bytes(signing)).decode()
    public = base64.b64encode(bytes(signing.verify_key)).decode()
    zone = zone_for(public, dkim=[f"v=DKIM1; k=ed25519; p={public}"])
    zone.add_txt("bounces.example.org", "v=spf1 ip4:192.0.2.1 -all")
    zone.mx.append(("bounces.example.org", "mx.example.org", 10))
    zone.a.append(("mx.example.org", "192.0.2.25"))
    zone.domains.add("example.com")
    zone.add_txt("_dmarc.example.com", "v=DMARC1; p=quarantine; rua=mailto:d@example.com")
    found = findings(
        zone,
        seed,
        DKIM_ALGORITHM="ed25519",
        BOUNCE_DOMAIN="bounces.example.org",
        MAIL_TRANSACTIONAL_SENDER="Inklusio <service@example.com>",
    )
    assert {f.level for f in found} == {"ok", "error"}, levels(found)
    # example.com is signed with d=example.org and bounces go to example.org:
    # the transactional From is aligned with neither.
    [error] = [f for f in found if f.level == "error"]
    assert error.setting == "DMARC alignment example.com"
    assert "aligned with neither" in error.message
    messages = levels(found)
    assert messages["SPF bounces.example.org: ends in -all: other hosts fail; 0 DNS lookup(s)"]
    assert "DKIM news2026._domainkey.example.org: publishes the configured ed25519 key" in messages
    assert "BOUNCE_DOMAIN bounces.example.org: MX mx.example.org" in messages
    assert messages["DMARC _dmarc.example.com: p=quarantine"] == "ok"
    assert "SPF example.org" not in " ".join(messages)  # the envelope is the bounce domain


# --- SPF ---------------------------------------------------------------------


def test_missing_spf_is_an_error(key: KeyPair) -> None:
    private, public = key
    finding = only(findings(zone_for(public, spf=[]), private), "SPF")
    assert finding.level == "error"
    assert "no v=spf1 record" in finding.message


def test_two_spf_records_are_an_error(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(public, spf=[SPF, "v=spf1 include:mail.example.net ~all"])
    finding = only(findings(zone, private), "SPF")
    assert finding.level == "error"
    assert "2 v=spf1 records" in finding.message
    assert "merge" in finding.message


def test_plus_all_is_an_error(key: KeyPair) -> None:
    private, public = key
    finding = only(findings(zone_for(public, spf=["v=spf1 a mx +all"]), private), "SPF")
    assert finding.level == "error"
    assert "+all: every host on the internet may send" in finding.message


@pytest.mark.parametrize(
    ("record", "level", "words"),
    [
        ("v=spf1 a ~all", "ok", "~all: other hosts softfail (weaker than -all"),
        ("v=spf1 a ?all", "warning", "?all: neutral"),
        ("v=spf1 a", "warning", "no all term"),
        ("v=spf1 redirect=_spf.example.net", "ok", "redirect=_spf.example.net, which ends in -all"),
    ],
)
def test_the_spf_ending_is_named(key: KeyPair, record: str, level: str, words: str) -> None:
    private, public = key
    finding = only(findings(zone_for(public, spf=[record]), private), "SPF")
    assert (finding.level, words in finding.message) == (level, True), finding


def test_more_than_ten_spf_lookups_are_an_error(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(public, spf=["v=spf1 include:a1.example.net -all"])
    for n in range(1, 12):
        zone.add_txt(f"a{n}.example.net", f"v=spf1 include:a{n + 1}.example.net -all")
    finding = only(findings(zone, private), "SPF")
    assert finding.level == "error"
    assert "more than 10 DNS lookups" in finding.message


def test_an_spf_include_loop_is_an_error(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(public, spf=["v=spf1 include:loop.example.net -all"])
    zone.add_txt("loop.example.net", f"v=spf1 include:{DOMAIN} -all")
    finding = only(findings(zone, private), "SPF")
    assert finding.level == "error"
    assert "include loop example.org -> loop.example.net -> example.org" in finding.message


def test_an_spf_include_without_a_record_is_an_error(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(public, spf=["v=spf1 include:_spf.example.net include:gone.example.net -all"])
    finding = only(findings(zone, private), "SPF")
    assert finding.level == "error"
    assert "include:gone.example.net has no SPF record(s): SPF fails with permerror" in (
        finding.message
    )


def test_the_same_include_twice_counts_twice(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(
        public, spf=["v=spf1 include:_spf.example.net mx include:_spf.example.net -all"]
    )
    finding = only(findings(zone, private), "SPF")
    assert finding.level == "ok"
    assert finding.message.endswith("; 3 DNS lookup(s)")


def test_a_resolver_that_refuses_is_named_per_record(key: KeyPair) -> None:
    private, _ = key
    found = findings(Zone(), private)  # serves nothing: REFUSED for every name
    assert {f.level for f in found} == {"error"}
    assert "the resolver failed on example.org TXT: REFUSED" in found[0].message


# --- DKIM --------------------------------------------------------------------


def test_missing_dkim_record_is_an_error(key: KeyPair) -> None:
    private, public = key
    finding = only(findings(zone_for(public, dkim=[]), private), "DKIM")
    assert finding.level == "error"
    assert "no DKIM key record" in finding.message
    assert f"p={public[:24]}" in finding.message  # what to publish


def test_a_dkim_record_for_another_key_is_an_error(key: KeyPair) -> None:
    private, public = key
    _, other = rsa_key()
    finding = only(findings(zone_for(public, dkim=[f"v=DKIM1; k=rsa; p={other}"]), private), "DKIM")
    assert finding.level == "error"
    assert "another key than the configured private key" in finding.message


def test_a_dkim_key_published_as_pkcs1_is_accepted(key: KeyPair) -> None:
    private, public = key
    spki = serialization.load_der_public_key(base64.b64decode(public))
    pkcs1 = spki.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(pkcs1).decode()}"
    finding = only(findings(zone_for(public, dkim=[record]), private), "DKIM")
    assert finding.level == "ok"


def test_a_dkim_record_of_another_key_type_is_an_error(key: KeyPair) -> None:
    private, public = key
    record = f"v=DKIM1; k=ed25519; p={public}"
    finding = only(findings(zone_for(public, dkim=[record]), private), "DKIM")
    assert finding.level == "error"
    assert "the record is for k=ed25519, the configured key is rsa" in finding.message


def test_an_unreadable_dkim_key_file_is_an_error(key: KeyPair, tmp_path: Path) -> None:
    _, public = key
    missing = tmp_path / "dkim.pem"
    found = findings(zone_for(public), "", DKIM_PRIVATE_KEY_FILE=missing)
    finding = only(found, "DKIM")
    assert finding.level == "error"
    assert "DKIM_PRIVATE_KEY_FILE cannot be read" in finding.message


def test_the_dkim_key_file_is_read(key: KeyPair, tmp_path: Path) -> None:
    private, public = key
    path = tmp_path / "dkim.pem"
    path.write_text(private)
    finding = only(findings(zone_for(public), "", DKIM_PRIVATE_KEY_FILE=path), "DKIM")
    assert finding.level == "ok"


def test_a_revoked_dkim_record_is_an_error(key: KeyPair) -> None:
    private, public = key
    finding = only(findings(zone_for(public, dkim=["v=DKIM1; k=rsa; p="]), private), "DKIM")
    assert finding.level == "error"
    assert "revoked" in finding.message


def test_a_1024_bit_dkim_key_is_a_warning() -> None:
    private, public = rsa_key(1024)
    finding = only(findings(zone_for(public), private), "DKIM")
    assert finding.level == "warning"
    assert "1024-bit RSA: use 2048 bits" in finding.message


def test_no_dkim_configured_is_an_error(key: KeyPair) -> None:
    _, public = key
    found = findings(zone_for(public), "", DKIM_SELECTOR="")
    finding = only(found, "DKIM")
    assert finding.level == "error"
    assert "require DKIM" in finding.message
    alignment = only(found, "DMARC alignment")
    assert alignment.level == "warning"
    assert "no DKIM" in alignment.message


# --- DMARC -------------------------------------------------------------------


def test_missing_dmarc_is_an_error(key: KeyPair) -> None:
    private, public = key
    finding = only(findings(zone_for(public, dmarc=[]), private), "DMARC")
    assert finding.level == "error"
    assert "no DMARC record" in finding.message
    assert "at least" in finding.message


def test_p_none_is_a_warning(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(public, dmarc=[f"v=DMARC1; p=none; rua=mailto:dmarc@{DOMAIN}"])
    found = findings(zone, private)
    finding = only(found, "DMARC _dmarc")
    assert finding.level == "warning"
    assert "p=none" in finding.message
    assert "protects nothing" in finding.message
    assert [f.level for f in found].count("error") == 0


def test_dmarc_without_rua_is_advisory(key: KeyPair) -> None:
    private, public = key
    found = findings(zone_for(public, dmarc=["v=DMARC1; p=reject"]), private)
    assert levels(found)["DMARC _dmarc.example.org: p=reject"] == "ok"
    [warning] = [f for f in found if f.level != "ok"]
    assert "no rua=" in warning.message
    assert "advisory" in warning.message


def test_an_invalid_dmarc_record_is_an_error(key: KeyPair) -> None:
    private, public = key
    found = findings(zone_for(public, dmarc=["v=DMARC1; p=monitor"]), private)
    finding = only(found, "DMARC")
    assert finding.level == "error"
    assert "not a valid DMARC record" in finding.message


def test_a_subdomain_sender_uses_the_parent_dmarc_record(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(public, dmarc=[f"{DMARC}; sp=quarantine"])
    zone.add_txt("news.example.org", "v=spf1 -all")
    found = findings(zone, private, MAIL_DEFAULT_SENDER="News <n@news.example.org>")
    messages = levels(found)
    assert messages == {
        "SPF news.example.org: ends in -all: other hosts fail; 0 DNS lookup(s)": "ok",
        "DKIM news2026._domainkey.example.org: publishes the configured rsa key, 2048-bit": "ok",
        "DMARC _dmarc.example.org: p=quarantine (for news.example.org, from the parent domain)": (
            "ok"
        ),
        "DMARC alignment news.example.org: DKIM (d=example.org, adkim=r) aligned, "
        "SPF (news.example.org, aspf=r) aligned": "ok",
    }


def test_two_senders_under_one_dmarc_record_name_its_gaps_once(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(public, dmarc=["v=DMARC1; p=reject"])
    found = findings(zone, private, MAIL_TRANSACTIONAL_SENDER=f"service@mail.{DOMAIN}")
    rua = [f for f in found if "no rua=" in f.message]
    assert len(rua) == 1
    assert levels(found)[
        "DMARC _dmarc.example.org: p=reject (for mail.example.org, from the parent domain)"
    ]


def test_strict_alignment_with_another_dkim_domain_fails(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(public, dmarc=[f"{DMARC}; adkim=s; aspf=s"])
    zone.add_txt(f"{SELECTOR}._domainkey.mail.{DOMAIN}", f"v=DKIM1; k=rsa; p={public}")
    zone.add_txt(f"bounce.{DOMAIN}", "v=spf1 -all")
    zone.a.append((f"bounce.{DOMAIN}", "192.0.2.25"))
    found = findings(zone, private, DKIM_DOMAIN=f"mail.{DOMAIN}", BOUNCE_DOMAIN=f"bounce.{DOMAIN}")
    finding = only(found, "DMARC alignment")
    assert finding.level == "error"
    assert "aligned with neither" in finding.message
    assert levels(found)["BOUNCE_DOMAIN bounce.example.org: no MX; mail goes to its address record"]


def test_a_bounce_domain_without_mx_or_address_is_an_error(key: KeyPair) -> None:
    private, public = key
    zone = zone_for(public)
    zone.add_txt("bounces.example.org", "v=spf1 -all")
    finding = only(findings(zone, private, BOUNCE_DOMAIN="bounces.example.org"), "BOUNCE_DOMAIN")
    assert finding.level == "error"
    assert "cannot arrive" in finding.message


# --- the resolver ------------------------------------------------------------


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return int(udp.getsockname()[1])


def test_an_unreachable_resolver_is_one_clear_error(check: Check, key: KeyPair) -> None:
    private, _ = key
    address = f"127.0.0.1:{closed_port()}"
    result = check(
        MAIL_DEFAULT_SENDER=SENDER,
        DKIM_SELECTOR=SELECTOR,
        DKIM_DOMAIN=DOMAIN,
        DKIM_PRIVATE_KEY=private,
        DNS_RESOLVER=address,
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = dns_lines(result.output)
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"ERROR   DNS_RESOLVER: {address} does not answer")
    assert lines[0].endswith("the remaining DNS checks were not made")


@pytest.mark.parametrize("value", ["localhost:53", "127.0.0.1:99999", "[::1]x", "a:b:c:d:e"])
def test_a_bad_resolver_setting_is_an_error(value: str) -> None:
    found = run_dns_checks(settings("", value))
    assert [(f.level, f.setting) for f in found] == [("error", "DNS_RESOLVER")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_resolver_settings_are_read(value: str, expected: tuple[str, int]) -> None:
    assert parse_resolver(value) == expected


# --- the parsers never raise -------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(),
    st.text(  # lone surrogates among other characters
        alphabet=st.one_of(
            st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
        )
    ),
    st.text(alphabet="v=spf1DKIMDMARC;:/.+-~?%{}pk \t\r\n\0ai", max_size=300),
    st.builds(lambda body: "v=spf1 " + body, st.text()),
    st.builds(lambda body: "v=DKIM1; p=" + body, st.text()),
    st.builds(lambda body: "v=DMARC1; " + body, st.text()),
    st.just("v=spf1 " + "include:x " * 5000),
    st.just("v=DMARC1; p=" + "a" * 100_000),
)


@given(HOSTILE_TEXT)
def test_the_record_parsers_never_raise(text: str) -> None:
    for check_text in (is_spf, is_dmarc):
        assert isinstance(check_text(text), bool)
    spf = parse_spf(text)
    assert spf is None or spf.text == text
    tags = parse_tags(text)
    assert tags is None or isinstance(tags, dict)
    parse_dkim(text)
    dmarc = parse_dmarc(text)
    assert dmarc is None or dmarc.policy in ("none", "quarantine", "reject")


@given(st.lists(st.binary(max_size=255), max_size=20))
def test_txt_strings_of_any_bytes_read_as_text(strings: list[bytes]) -> None:
    text = txt_text(strings)
    assert isinstance(text, str)
    for parse in (parse_spf, parse_dkim, parse_dmarc):
        parse(text)


@given(st.text())
def test_the_resolver_setting_parser_raises_only_value_error(value: str) -> None:
    try:
        host, port = parse_resolver(value)
    except ValueError:
        return
    assert 0 < port < 65536
    assert host


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every lookup here goes to loopback: the system resolver is never asked."""
    monkeypatch.setattr("dns.resolver.Resolver.read_resolv_conf", _refuse)


def _refuse(*args: object) -> None:
    raise AssertionError("the system resolver was asked")


ZONE_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=',"\\'),
    min_size=1,
    max_size=600,
)


@hypothesis_settings(max_examples=15, deadline=None)
@given(
    spf=st.lists(st.one_of(ZONE_TEXT, st.builds("v=spf1 {}".format, ZONE_TEXT)), max_size=2),
    dkim=st.lists(st.one_of(ZONE_TEXT, st.builds("v=DKIM1; p={}".format, ZONE_TEXT)), max_size=2),
    dmarc=st.lists(st.one_of(ZONE_TEXT, st.builds("v=DMARC1; {}".format, ZONE_TEXT)), max_size=2),
)
def test_any_served_records_give_findings_not_exceptions(
    key: KeyPair, spf: list[str], dkim: list[str], dmarc: list[str]
) -> None:
    private, public = key
    found = findings(zone_for(public, spf=spf, dkim=dkim, dmarc=dmarc), private)
    assert {"SPF example.org", "DKIM news2026._domainkey.example.org"} <= {f.setting for f in found}
    assert any(f.setting.startswith("DMARC") for f in found)

"""`newsletter check --dns`: does the sender's DNS meet the bulk-sender rules?

Gmail and Yahoo (February 2024) and Microsoft (May 2025) require of a bulk
sender: SPF and DKIM that pass, a DMARC record of at least ``p=none``, and a
From domain aligned with the SPF (envelope) domain or the DKIM ``d=`` domain.
Each is looked up here and every gap is one finding:

* SPF, for every envelope domain (BOUNCE_DOMAIN when set, else the domain of
  each From address): exactly one ``v=spf1`` record, ending in ``-all`` (fail)
  or ``~all`` (softfail, the weaker), never ``+all``, at most 10 DNS-querying
  terms (RFC 7208 section 4.6.4), counted through include and redirect;
* DKIM: ``<DKIM_SELECTOR>._domainkey.<DKIM_DOMAIN>`` holds a DKIM1 record whose
  ``p=`` is the public half of the configured private key (RSA or Ed25519);
* DMARC, for every From domain (MAIL_DEFAULT_SENDER, MAIL_TRANSACTIONAL_SENDER):
  one ``v=DMARC1`` record at ``_dmarc.<domain>`` or a parent domain, its policy,
  ``rua=`` (advisory), and the alignment of the From domain with DKIM_DOMAIN
  and with the envelope domain under the record's ``adkim``/``aspf``;
* the bounce domain, when BOUNCE_DOMAIN is set, has an MX or an address record,
  or the bounces sent to it cannot arrive.

DNS_RESOLVER ("host" or "host:port", "[v6]:port") names the server to ask;
empty means the system's resolver. A resolver that does not answer is one
error and ends the lookups. The record parsers take any text and never raise.
Relaxed alignment compares the last two labels of each domain (no public
suffix list here), which is right for every domain directly under a TLD.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from flask import Config

from .check import TIMEOUT, Finding

SPF_LOOKUP_LIMIT = 10
SPF_LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists"})
RSA_MIN_BITS = 1024
RSA_GOOD_BITS = 2048
DMARC_POLICIES = ("none", "quarantine", "reject")
BULK_RULES = "Gmail, Yahoo and Microsoft bulk-sender rules"


class ResolverDown(Exception):
    """The resolver did not answer at all."""


class LookupFailed(Exception):
    """The resolver answered with an error (SERVFAIL, REFUSED) or the name is not a name."""


# ---------------------------------------------------------------------------
# Parsers: text in, a record or None out; never an exception.


def txt_text(strings: Iterable[bytes]) -> str:
    """One TXT record's character-strings joined without separators, as SPF
    (RFC 7208 section 3.3), DKIM (RFC 6376 section 3.6.2.2) and DMARC read them."""
    return b"".join(strings).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class SpfRecord:
    """A ``v=spf1`` record: its terms, the ``all`` qualifier, ``redirect=``, and
    the domains its DNS-querying terms name (None for a term without a domain or
    with a macro)."""

    text: str
    all_qualifier: str | None
    redirect: str | None
    lookups: tuple[tuple[str, str | None], ...]


def is_spf(text: str) -> bool:
    """RFC 7208 section 4.5: the record is "v=spf1" alone or followed by a space."""
    lowered = text.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def parse_spf(text: str) -> SpfRecord | None:
    """The record's parts, or None when it is not an SPF record."""
    if not is_spf(text):
        return None
    all_qualifier: str | None = None
    redirect: str | None = None
    lookups: list[tuple[str, str | None]] = []
    for term in text.split()[1:]:
        lowered = term.lower()
        if lowered.startswith("redirect="):
            redirect = _spf_domain(term[len("redirect=") :])
            lookups.append(("redirect", redirect))
            continue
        qualifier = lowered[0] if lowered[0] in "+-~?" else "+"
        body = lowered[1:] if lowered[0] in "+-~?" else lowered
        name, _, rest = _split_mechanism(body)
        if name == "all" and all_qualifier is None:
            all_qualifier = qualifier
        elif name in SPF_LOOKUP_TERMS:
            domain = _spf_domain(rest) if rest else None
            lookups.append((name, domain))
    if all_qualifier is not None and redirect is not None:  # RFC 7208 section 6.1
        redirect = None
        lookups = [term for term in lookups if term[0] != "redirect"]
    return SpfRecord(text, all_qualifier, redirect, tuple(lookups))


def _split_mechanism(body: str) -> tuple[str, str, str]:
    """``include:example.org`` -> ("include", ":", "example.org"); a CIDR suffix is dropped."""
    match = re.match(r"([a-z0-9._-]*)(?:([:=])([^/]*))?", body)
    if match is None:  # pragma: no cover - the pattern matches every string
        return body, "", ""
    return match.group(1), match.group(2) or "", match.group(3) or ""


def _spf_domain(spec: str) -> str | None:
    """A domain-spec without macros, or None (a macro cannot be expanded here)."""
    spec = spec.strip().rstrip(".").lower()
    if not spec or "%" in spec:
        return None
    return spec


def parse_tags(text: str) -> dict[str, str] | None:
    """A DKIM/DMARC tag-list (RFC 6376 section 3.2): ``tag=value; ...``, or None
    when a tag is malformed or given twice."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        if not equals or not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in tags:
            return None
        tags[name] = value.strip()
    return tags


@dataclass(frozen=True)
class DkimRecord:
    """A DKIM key record: key type, the public key bytes (None when ``p=`` is
    empty, i.e. revoked, or not base64), flags."""

    key_type: str
    public_key: bytes | None
    testing: bool
    raw_p: str


def parse_dkim(text: str) -> DkimRecord | None:
    """A DKIM1 key record (RFC 6376 section 3.6.1), or None when it is not one."""
    tags = parse_tags(text)
    if tags is None or "p" not in tags:
        return None
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        return None
    raw = re.sub(r"\s+", "", tags["p"])
    try:
        key = base64.b64decode(raw, validate=True) if raw else None
    except (binascii.Error, ValueError):
        key = None
    flags = {flag.strip() for flag in tags.get("t", "").split(":")}
    return DkimRecord(tags.get("k", "rsa").lower(), key, "y" in flags, raw)


@dataclass(frozen=True)
class DmarcRecord:
    """A DMARC record's policy for the domain and its subdomains, alignment
    modes ("r" relaxed, "s" strict), percentage and report addresses."""

    policy: str
    subdomain_policy: str
    adkim: str
    aspf: str
    pct: int
    rua: str


def is_dmarc(text: str) -> bool:
    """RFC 7489 section 6.6.3: records that do not start with "v=DMARC1" are discarded."""
    return re.match(r"v\s*=\s*DMARC1\s*(;|$)", text) is not None


def parse_dmarc(text: str) -> DmarcRecord | None:
    """The record, or None when it is not a valid DMARC record (no known p=)."""
    if not is_dmarc(text):
        return None
    tags = parse_tags(text)
    if tags is None:
        return None
    policy = tags.get("p", "").lower()
    if policy not in DMARC_POLICIES:
        return None
    subdomain = tags.get("sp", "").lower()
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain if subdomain in DMARC_POLICIES else policy,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=max(0, min(100, pct)),
        rua=tags.get("rua", ""),
    )


def organisational(domain: str) -> str:
    """The last two labels: the registrable domain for names directly under a TLD."""
    return ".".join(domain.split(".")[-2:])


def aligned(domain: str, from_domain: str, mode: str) -> bool:
    """DMARC identifier alignment (RFC 7489 section 3.1): strict is equality,
    relaxed is the same organisational domain."""
    if mode == "s":
        return domain == from_domain
    return organisational(domain) == organisational(from_domain)


def parse_resolver(value: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (ip, port).

    Raises ValueError with the reason."""
    value = value.strip()
    port = 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected [address]:port")
            port = _port(rest[1:])
    elif value.count(":") == 1:
        host, _, number = value.partition(":")
        port = _port(number)
    else:
        host = value
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{text!r} is not a port")
    return int(text)


# ---------------------------------------------------------------------------
# Lookups.


class Lookup:
    """Queries through one resolver; an absent name or type is an empty answer."""

    def __init__(self, resolver: dns.resolver.Resolver, where: str) -> None:
        self.resolver = resolver
        self.where = where

    def records(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{name!r} is not a domain name ({exc})") from None
        try:
            return list(self.resolver.resolve(qname, rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout as exc:
            raise ResolverDown(f"{self.where} does not answer ({exc})") from None
        except dns.resolver.NoNameservers as exc:
            raise LookupFailed(f"the resolver failed on {name} {rdtype}: {_why(exc)}") from None
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{name} {rdtype}: {exc}") from None

    def txt(self, name: str) -> list[str]:
        return [txt_text(rdata.strings) for rdata in self.records(name, "TXT")]  # type: ignore[attr-defined]


def _why(exc: dns.resolver.NoNameservers) -> str:
    """The servers' answers (REFUSED, SERVFAIL) or errors, from dnspython's
    (server, tcp, port, error, response) tuples."""
    reasons = set()
    for error in exc.kwargs.get("errors") or []:
        try:
            response = error[4]
            reasons.add(response.rcode().name if response is not None else str(error[3]))
        except (IndexError, AttributeError, TypeError):
            reasons.add(str(error))
    return ", ".join(sorted(reasons)) or "no answer"


def make_lookup(config: Config) -> Lookup:
    """A Lookup through DNS_RESOLVER, or the system's resolver when it is empty.

    Raises ValueError (bad setting) or ResolverDown (no system configuration)."""
    setting = str(config.get("DNS_RESOLVER") or "").strip()
    if setting:
        host, port = parse_resolver(setting)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
        where = setting
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise ResolverDown(f"the system has no resolver ({exc}); set DNS_RESOLVER") from None
        where = "the system resolver (" + ", ".join(map(str, resolver.nameservers)) + ")"
    resolver.lifetime = TIMEOUT
    resolver.timeout = TIMEOUT
    return Lookup(resolver, where)


# ---------------------------------------------------------------------------
# The checks.


@dataclass
class Senders:
    """Which domains the mail claims: From domains, envelope domains, DKIM domain."""

    from_domains: list[str] = field(default_factory=list)
    envelope_domains: list[str] = field(default_factory=list)
    bounce_domain: str = ""
    dkim_domain: str = ""

    @classmethod
    def of(cls, config: Config) -> Senders:
        senders = cls()
        for name in ("MAIL_DEFAULT_SENDER", "MAIL_TRANSACTIONAL_SENDER"):
            domain = _address_domain(str(config.get(name) or ""))
            if domain and domain not in senders.from_domains:
                senders.from_domains.append(domain)
        senders.bounce_domain = _domain(str(config.get("BOUNCE_DOMAIN") or ""))
        senders.envelope_domains = (
            [senders.bounce_domain] if senders.bounce_domain else list(senders.from_domains)
        )
        senders.dkim_domain = _domain(str(config.get("DKIM_DOMAIN") or ""))
        return senders

    def envelope_for(self, from_domain: str) -> str:
        return self.bounce_domain or from_domain


def _domain(value: str) -> str:
    return value.strip().rstrip(".").lower()


def _address_domain(value: str) -> str:
    address = parseaddr(value)[1]
    if address.count("@") != 1:
        return ""
    return _domain(address.rpartition("@")[2])


def run_dns_checks(config: Config) -> list[Finding]:
    """Every DNS finding for the configured senders, in the order an operator fixes them."""
    try:
        lookup = make_lookup(config)
    except ValueError as exc:
        return [Finding("error", "DNS_RESOLVER", f"{config.get('DNS_RESOLVER')!r}: {exc}")]
    except ResolverDown as exc:
        return [Finding("error", "DNS_RESOLVER", str(exc))]
    senders = Senders.of(config)
    if not senders.from_domains:
        return [Finding("error", "MAIL_DEFAULT_SENDER", "no sender domain to look up")]
    findings: list[Finding] = []
    steps = [
        *[lambda d=d: _spf(lookup, d) for d in senders.envelope_domains],
        lambda: _dkim(lookup, config),
        *[lambda d=d: _dmarc(lookup, senders, d, config) for d in senders.from_domains],
    ]
    if senders.bounce_domain:
        steps.append(lambda: _bounce_domain(lookup, senders.bounce_domain))
    for step in steps:
        try:
            findings += step()
        except ResolverDown as exc:
            findings.append(
                Finding("error", "DNS_RESOLVER", f"{exc}; the remaining DNS checks were not made")
            )
            break
    # Two From domains under one DMARC record would repeat its findings.
    return list(dict.fromkeys(findings))


def _spf(lookup: Lookup, domain: str) -> list[Finding]:
    label = f"SPF {domain}"
    try:
        texts = [text for text in lookup.txt(domain) if is_spf(text)]
    except LookupFailed as exc:
        return [Finding("error", label, str(exc))]
    if not texts:
        return [
            Finding(
                "error",
                label,
                f"no v=spf1 record: {BULK_RULES} require SPF for the envelope domain; "
                f'publish e.g. "v=spf1 ip4:<your relay> -all"',
            )
        ]
    if len(texts) > 1:
        return [
            Finding(
                "error",
                label,
                f"{len(texts)} v=spf1 records: SPF fails with permerror (RFC 7208 section 4.5); "
                "merge them into one",
            )
        ]
    record = parse_spf(texts[0])
    assert record is not None  # is_spf held
    findings: list[Finding] = []
    ending, level = _spf_ending(lookup, record)
    problems: list[str] = []
    try:
        count = count_spf_lookups(lookup, record, (domain,), problems)
    except LookupFailed as exc:
        return [Finding("error", label, f"an include or redirect cannot be looked up: {exc}")]
    findings += [
        Finding("error", label, f"{problem}: SPF fails with permerror (RFC 7208 section 5.2)")
        for problem in problems
    ]
    if count > SPF_LOOKUP_LIMIT and not problems:
        findings.append(
            Finding(
                "error",
                label,
                f"more than {SPF_LOOKUP_LIMIT} DNS lookups (include, a, mx, ptr, exists, "
                "redirect, counted through includes): SPF fails with permerror; flatten it",
            )
        )
    elif not problems:
        ending += f"; {count} DNS lookup(s)"
    findings.append(Finding(level, label, ending))
    return findings


def _spf_ending(lookup: Lookup, record: SpfRecord) -> tuple[str, str]:
    """What the record does with everyone else, and the finding's level."""
    qualifier = record.all_qualifier
    source = "ends in"
    if qualifier is None and record.redirect:
        try:
            target = [parse_spf(t) for t in lookup.txt(record.redirect) if is_spf(t)]
        except LookupFailed:
            target = []
        if len(target) == 1 and target[0] is not None:
            qualifier = target[0].all_qualifier
            source = f"redirect={record.redirect}, which ends in"
        else:
            return f"redirect={record.redirect} has no single SPF record: permerror", "error"
    if qualifier == "-":
        return f"{source} -all: other hosts fail", "ok"
    if qualifier == "~":
        return (
            f"{source} ~all: other hosts softfail (weaker than -all; with DMARC "
            "enforcing, ~all is common)",
            "ok",
        )
    if qualifier == "+":
        return (
            f"{source} +all: every host on the internet may send as this domain; use -all",
            "error",
        )
    if qualifier == "?":
        return (
            f"{source} ?all: neutral, says nothing about other hosts; use -all or ~all",
            "warning",
        )
    return "no all term: other hosts are neutral; end it with -all or ~all", "warning"


def count_spf_lookups(
    lookup: Lookup,
    record: SpfRecord,
    chain: tuple[str, ...],
    problems: list[str],
    used: int = 0,
) -> int:
    """``used`` plus the DNS-querying terms of ``record`` and of every include and
    redirect it reaches, each time it is reached, as an evaluator counts them;
    stops once past the limit. An include or redirect to a name without exactly
    one SPF record, or back into ``chain``, is a permerror and goes to ``problems``."""
    total = used
    for name, domain in record.lookups:
        total += 1
        if total > SPF_LOOKUP_LIMIT:
            return total
        if name not in ("include", "redirect") or not domain:
            continue
        if domain in chain:
            problems.append(f"{name} loop {' -> '.join((*chain, domain))}")
            return total
        texts = [text for text in lookup.txt(domain) if is_spf(text)]
        inner = parse_spf(texts[0]) if len(texts) == 1 else None
        if inner is None:
            problems.append(f"{name}:{domain} has {len(texts) or 'no'} SPF record(s)")
            continue
        total = count_spf_lookups(lookup, inner, (*chain, domain), problems, total)
        if total > SPF_LOOKUP_LIMIT:
            return total
    return total


def configured_public_key(config: Config) -> tuple[str, bytes]:
    """(key type, the public key as DKIM publishes it: SubjectPublicKeyInfo DER
    for RSA, the raw 32 bytes for Ed25519) of the configured private key.

    Raises ValueError when it cannot be read."""
    if config.get("DKIM_PRIVATE_KEY"):
        key = str(config["DKIM_PRIVATE_KEY"]).encode()
    else:
        try:
            key = Path(str(config["DKIM_PRIVATE_KEY_FILE"])).read_bytes()
        except OSError as exc:
            raise ValueError(
                f"DKIM_PRIVATE_KEY_FILE cannot be read: {exc.strerror or exc}"
            ) from None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if str(config.get("DKIM_ALGORITHM") or "rsa") == "ed25519":
        import nacl.encoding
        import nacl.exceptions
        import nacl.signing

        try:
            signing = nacl.signing.SigningKey(key.strip(), encoder=nacl.encoding.Base64Encoder)
            return "ed25519", bytes(signing.verify_key)
        except (nacl.exceptions.ValueError, nacl.exceptions.TypeError, binascii.Error):
            pass
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError):
            raise ValueError("DKIM key is not an Ed25519 key (base64 seed or PEM)") from None
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise ValueError("DKIM_ALGORITHM is ed25519 but the key is not an Ed25519 key")
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return "ed25519", raw
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ValueError("DKIM key is not a PEM RSA private key") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("DKIM_ALGORITHM is rsa but the key is not an RSA key")
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "rsa", der


def same_public_key(key_type: str, configured: bytes, published: bytes) -> bool:
    """Whether a published p= is the configured key; RSA keys may be published
    as SubjectPublicKeyInfo or as a bare RSAPublicKey (PKCS #1), both accepted."""
    if key_type == "ed25519":
        return configured == published
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_der_public_key(published)
    except (ValueError, TypeError):
        pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(published)
        pem += b"-----END RSA PUBLIC KEY-----\n"
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError):
            return False
    mine = serialization.load_der_public_key(configured)
    if not isinstance(key, rsa.RSAPublicKey) or not isinstance(mine, rsa.RSAPublicKey):
        return False
    return key.public_numbers() == mine.public_numbers()


def _dkim(lookup: Lookup, config: Config) -> list[Finding]:
    selector = str(config.get("DKIM_SELECTOR") or "").strip()
    domain = _domain(str(config.get("DKIM_DOMAIN") or ""))
    has_key = config.get("DKIM_PRIVATE_KEY") or config.get("DKIM_PRIVATE_KEY_FILE")
    if not (selector and domain and has_key):
        return [
            Finding(
                "error",
                "DKIM",
                f"mail is not DKIM-signed: {BULK_RULES} require DKIM; set DKIM_SELECTOR, "
                "DKIM_DOMAIN and DKIM_PRIVATE_KEY(_FILE) and publish the public key",
            )
        ]
    name = f"{selector}._domainkey.{domain}"
    label = f"DKIM {name}"
    try:
        key_type, public = configured_public_key(config)
    except ValueError as exc:
        return [Finding("error", label, str(exc))]
    expected = base64.b64encode(public).decode()
    try:
        texts = lookup.txt(name)
    except LookupFailed as exc:
        return [Finding("error", label, str(exc))]
    records = [record for record in map(parse_dkim, texts) if record is not None]
    if not records:
        return [
            Finding(
                "error",
                label,
                f"no DKIM key record: receivers cannot verify the signature; publish "
                f'TXT "v=DKIM1; k={key_type}; p={expected[:24]}..." (the full key; '
                "split into strings of at most 255 characters)",
            )
        ]
    matching = [
        r
        for r in records
        if r.key_type == key_type
        and r.public_key is not None
        and same_public_key(key_type, public, r.public_key)
    ]
    if not matching:
        first = records[0]
        if first.public_key is None and not first.raw_p:
            reason = "the published key is revoked (empty p=)"
        elif first.key_type != key_type:
            reason = f"the record is for k={first.key_type}, the configured key is {key_type}"
        else:
            reason = "the published p= is another key than the configured private key"
        return [
            Finding(
                "error",
                label,
                f"{reason}: every signature fails; publish p={expected[:24]}... (the full key)",
            )
        ]
    findings: list[Finding] = []
    if len(records) > 1:
        findings.append(
            Finding("warning", label, f"{len(records)} key records; verifiers may pick any")
        )
    if matching[0].testing:
        findings.append(
            Finding("warning", label, "t=y (testing): receivers may ignore failures; remove it")
        )
    size = ""
    if key_type == "rsa":
        from cryptography.hazmat.primitives import serialization

        bits = serialization.load_der_public_key(public).key_size  # type: ignore[union-attr]
        size = f", {bits}-bit"
        if bits < RSA_MIN_BITS:
            return [
                Finding("error", label, f"{bits}-bit RSA: receivers reject keys under 1024 bits")
            ]
        if bits < RSA_GOOD_BITS:
            findings.append(
                Finding(
                    "warning", label, f"{bits}-bit RSA: use {RSA_GOOD_BITS} bits (Gmail's advice)"
                )
            )
    findings.append(Finding("ok", label, f"publishes the configured {key_type} key{size}"))
    return findings


def find_dmarc(lookup: Lookup, domain: str) -> tuple[str, list[str]]:
    """The DMARC records at ``_dmarc.<domain>``, else at each parent domain up to
    the organisational one: (where found, the v=DMARC1 texts)."""
    labels = domain.split(".")
    for start in range(0, max(1, len(labels) - 1)):
        where = ".".join(labels[start:])
        texts = [text for text in lookup.txt(f"_dmarc.{where}") if is_dmarc(text)]
        if texts:
            return where, texts
    return domain, []


def _dmarc(lookup: Lookup, senders: Senders, domain: str, config: Config) -> list[Finding]:
    label = f"DMARC _dmarc.{domain}"
    try:
        where, texts = find_dmarc(lookup, domain)
    except LookupFailed as exc:
        return [Finding("error", label, str(exc))]
    if not texts:
        return [
            Finding(
                "error",
                label,
                f"no DMARC record: {BULK_RULES} require one, at least "
                f'"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"',
            )
        ]
    label = f"DMARC _dmarc.{where}"
    if len(texts) > 1:
        return [
            Finding("error", label, f"{len(texts)} DMARC records: receivers apply none; keep one")
        ]
    record = parse_dmarc(texts[0])
    if record is None:
        return [
            Finding(
                "error",
                label,
                "not a valid DMARC record (v=DMARC1 first, p=none|quarantine|reject): "
                f"receivers ignore it, which {BULK_RULES} count as none",
            )
        ]
    findings: list[Finding] = []
    policy = record.policy if where == domain else record.subdomain_policy
    inherited = "" if where == domain else f" (for {domain}, from the parent domain)"
    if policy == "none":
        findings.append(
            Finding(
                "warning",
                label,
                f"p=none{inherited}: meets the minimum of the {BULK_RULES} but protects "
                "nothing against spoofing; move to quarantine or reject once the reports are clean",
            )
        )
    else:
        share = f" for {record.pct} % of failing mail" if record.pct < 100 else ""
        findings.append(Finding("ok", label, f"p={policy}{inherited}{share}"))
    if not record.rua:
        findings.append(
            Finding(
                "warning",
                label,
                "no rua=: you receive no aggregate reports (advisory; add rua=mailto:...)",
            )
        )
    findings.append(_alignment(senders, domain, record, config))
    return findings


def _alignment(senders: Senders, domain: str, record: DmarcRecord, config: Config) -> Finding:
    label = f"DMARC alignment {domain}"
    envelope = senders.envelope_for(domain)
    spf_ok = aligned(envelope, domain, record.aspf)
    dkim_on = bool(
        senders.dkim_domain
        and config.get("DKIM_SELECTOR")
        and (config.get("DKIM_PRIVATE_KEY") or config.get("DKIM_PRIVATE_KEY_FILE"))
    )
    dkim_ok = dkim_on and aligned(senders.dkim_domain, domain, record.adkim)
    spf_part = f"SPF ({envelope}, aspf={record.aspf}) {'aligned' if spf_ok else 'not aligned'}"
    dkim_part = (
        f"DKIM (d={senders.dkim_domain}, adkim={record.adkim}) "
        f"{'aligned' if dkim_ok else 'not aligned'}"
        if dkim_on
        else "no DKIM"
    )
    if not (spf_ok or dkim_ok):
        return Finding(
            "error",
            label,
            f"From {domain} is aligned with neither: {spf_part}, {dkim_part}; DMARC fails "
            f"and the {BULK_RULES} require alignment with one (best: DKIM_DOMAIN = {domain})",
        )
    if not dkim_ok:
        return Finding(
            "warning",
            label,
            f"{spf_part}, {dkim_part}: a forwarded mail loses SPF; align DKIM_DOMAIN too",
        )
    return Finding("ok", label, f"{dkim_part}, {spf_part}")


def _bounce_domain(lookup: Lookup, domain: str) -> list[Finding]:
    label = f"BOUNCE_DOMAIN {domain}"
    try:
        mx = lookup.records(domain, "MX")
        if mx:
            hosts = ", ".join(sorted(str(r.exchange).rstrip(".") for r in mx))  # type: ignore[attr-defined]
            return [Finding("ok", label, f"MX {hosts}")]
        addresses = lookup.records(domain, "A") + lookup.records(domain, "AAAA")
    except LookupFailed as exc:
        return [Finding("error", label, str(exc))]
    if addresses:
        return [Finding("ok", label, "no MX; mail goes to its address record")]
    return [
        Finding(
            "error",
            label,
            "neither MX nor address record: bounces sent to this domain cannot arrive",
        )
    ]

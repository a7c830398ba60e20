"""Check a consent proof bundle offline, with the ledger's public key alone.

    newsletter-verify BUNDLE --key VKEY_FILE [--checkpoint FILE]

A bundle holds one person's consent events (the exact leaf texts of the
ledger), an RFC 9162 inclusion proof for each, and the ledger's checkpoint: a
C2SP tlog-checkpoint in a C2SP signed note, signed with Ed25519. This module
uses only the standard library and `cryptography`, so an auditor can read
all of it; the newsletter application imports its functions instead of
repeating them. Exit 0: everything holds (a summary is printed); 1: each
failure is named on stderr; 2: usage error or unreadable input.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

BUNDLE_FORMAT = "newsletter-consent-proof/1"
LEAF_FIELDS = frozenset(
    {
        *("v", "seq", "event", "channel", "occurred_at", "list", "consent_text_version"),
        *("consent_text_sha256", "policy_version", "policy_sha256", "email_digest"),
        *("personal_commitment", "details"),
    }
)
PERSONAL_FIELDS = frozenset({"email", "ip", "user_agent", "source_url"})
MAX_SAFE_INTEGER = 2**53 - 1
ED25519 = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def canonical(value: object) -> str:
    """RFC 8785 (JCS) text of a value built from dict (str keys), list, str, int, bool, None.

    Object keys are sorted by their UTF-16 code units; strings are escaped as
    ECMAScript's JSON.stringify does; integers must lie within +-(2**53 - 1).
    Floats, lone surrogates and every other type raise ValueError.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"canonical: integer {value} is outside +-(2**53 - 1)")
        return str(int(value))
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("canonical: text holds a lone surrogate") from exc
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(canonical(item) for item in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("canonical: object keys must be text")
        items = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        return "{" + ",".join(f"{canonical(k)}:{canonical(v)}" for k, v in items) + "}"
    raise ValueError(f"canonical: {type(value).__name__} values are not allowed (no floats)")


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || leaf bytes)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _hashes_ok(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == 32 for h in hashes)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: is the leaf hash at `index` in the tree (size, root)?

    False for index < 0, index >= size, any hash that is not 32 bytes, and a
    proof that is too short or too long.
    """
    if not 0 <= index < size or not _hashes_ok(leaf, root, *proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: does the tree (size2, root2) extend the tree (size1, root1)?

    Equal sizes need equal roots and an empty proof. RFC 9162 defines no proof
    from the empty tree, so size1 == 0 < size2 is False (every tree extends
    the empty one; a caller holding an empty checkpoint needs no proof).
    """
    if not 0 <= size1 <= size2 or not _hashes_ok(root1, root2, *proof):
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0 or not proof:
        return False
    path = [root1, *proof] if size1 & (size1 - 1) == 0 else list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == root1 and sr == root2 and sn == 0


class Verifier(NamedTuple):
    """An Ed25519 note verifier key: name, 4-byte key hash, public key."""

    name: str
    key_hash: bytes
    public_key: Ed25519PublicKey


class Signature(NamedTuple):
    """One signature line of a note: key name, 4-byte key hash, signature bytes."""

    name: str
    key_hash: bytes
    signature: bytes


class Note(NamedTuple):
    """A signed note: the body (ending in a newline) and its signatures in file order."""

    body: str
    signatures: list[Signature]


class Checkpoint(NamedTuple):
    """A C2SP tlog-checkpoint body: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: list[str]


def b64decode(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 section 4) with padding, in its one canonical spelling."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what}: not standard base64") from exc
    if base64.b64encode(data).decode() != text:
        raise ValueError(f"{what}: not standard base64")
    return data


def check_key_name(name: str) -> str:
    """C2SP signed-note key names are non-empty, without Unicode spaces or "+"."""
    if not name or "+" in name or any(c.isspace() for c in name):
        raise ValueError(f"key name {name!r}: must be non-empty, without spaces or '+'")
    return name


def ed25519_key_hash(name: str, public_key: bytes) -> bytes:
    """C2SP key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def parse_vkey(text: str) -> Verifier:
    """Parse "<name>+<8 lowercase hex key hash>+<base64(0x01 || 32-byte public key)>".

    One trailing newline is allowed (a key file). The key hash must be the
    one computed from the name and the key.
    """
    name, key_hash, key = key_fields(text.removesuffix("\n"), "verifier key")
    if ed25519_key_hash(name, key) != key_hash:
        raise ValueError("verifier key: the key hash does not match the name and key")
    return Verifier(name, key_hash, Ed25519PublicKey.from_public_bytes(key))


def key_fields(text: str, what: str) -> tuple[str, bytes, bytes]:
    """Split "<name>+<8 lowercase hex key hash>+<base64(0x01 || 32 bytes)>" (the
    form of verifier and signer keys) into name, key hash and the 32 key bytes."""
    name, _, rest = text.partition("+")
    hash_hex, _, key_b64 = rest.partition("+")
    check_key_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", hash_hex):
        raise ValueError(f"{what}: the key hash is not 8 lowercase hex digits")
    key = b64decode(key_b64, what)
    if key[:1] != ED25519 or len(key) != 33:
        raise ValueError(f"{what}: not an Ed25519 key (0x01 and 32 bytes)")
    return name, bytes.fromhex(hash_hex), key[1:]


def parse_note(text: str) -> Note:
    """Parse a C2SP signed note: body ending in a newline, a blank line, signature lines.

    Each signature line is "\\u2014 <name> <base64(4-byte key hash || signature)>\\n".
    The body ends at the last blank line. No control characters but newline;
    at most 100 signatures.
    """
    if re.search(r"[\x00-\x09\x0b-\x1f]", text):
        raise ValueError("note: holds a control character")
    if not re.fullmatch(r"[^\ud800-\udfff]*", text):
        raise ValueError("note: holds a lone surrogate")
    split = text.rfind("\n\n")
    if split < 0:
        raise ValueError("note: no blank line before the signature lines")
    body, block = text[: split + 1], text[split + 2 :]
    if not block.endswith("\n"):
        raise ValueError("note: the last signature line does not end with a newline")
    signatures = []
    for line in block[:-1].split("\n"):
        name, _, sig_b64 = line.removeprefix("\u2014 ").partition(" ")
        if not line.startswith("\u2014 ") or not sig_b64:
            raise ValueError(f"note: {line[:40]!r} is not a signature line")
        raw = b64decode(sig_b64, f"note: signature by {check_key_name(name)}")
        if len(raw) < 5:
            raise ValueError(f"note: signature by {name} is too short")
        signatures.append(Signature(name, raw[:4], raw[4:]))
    if len(signatures) > 100:
        raise ValueError("note: more than 100 signatures")
    return Note(body, signatures)


def parse_notes(text: str) -> list[Note]:
    """Parse a file of signed notes, each followed by one empty line (the last one may lack it).

    A note ends at the first empty line after one of its signature lines.
    """
    notes: list[Note] = []
    lines: list[str] = []
    after_signature = False
    for line in text.removesuffix("\n").split("\n") if text else ():
        if line == "" and after_signature:
            notes.append(parse_note("".join(f"{x}\n" for x in lines)))
            lines, after_signature = [], False
            continue
        lines.append(line)
        after_signature = line.startswith("\u2014 ")
    if lines:
        if not text.endswith("\n"):
            raise ValueError("note: the last signature line does not end with a newline")
        notes.append(parse_note("".join(f"{x}\n" for x in lines)))
    if not notes:
        raise ValueError("no signed note in the text")
    return notes


def verify_note(note: Note, verifier: Verifier) -> bool:
    """True when the note has a signature by the verifier's name and key hash and every such
    signature is a valid Ed25519 signature of the body's UTF-8 bytes."""
    mine = [s for s in note.signatures if (s.name, s.key_hash) == verifier[:2]]
    for sig in mine:
        try:
            verifier.public_key.verify(sig.signature, note.body.encode())
        except InvalidSignature:
            return False
    return bool(mine)


def parse_checkpoint(body: str) -> Checkpoint:
    """Parse a C2SP tlog-checkpoint body: origin, decimal size, base64 32-byte root, extensions.

    The size has no sign and no leading zero; every line is non-empty and
    ends with a newline.
    """
    if not body.endswith("\n"):
        raise ValueError("checkpoint: the body does not end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3 or "" in lines:
        raise ValueError("checkpoint: needs origin, size and root hash on non-empty lines")
    origin, size, root_b64, *extensions = lines
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size) or int(size) >= 2**63:
        raise ValueError(f"checkpoint: tree size {size[:30]!r} is not a decimal number")
    root = b64decode(root_b64, "checkpoint: root hash")
    if len(root) != 32:
        raise ValueError("checkpoint: the root hash is not 32 bytes")
    return Checkpoint(origin, int(size), root, extensions)


def _address(email: str) -> str:
    """Addresses compare after trimming, Unicode NFC and case folding."""
    return unicodedata.normalize("NFC", email.strip()).casefold()


def _is_int(value: object, expected: int | None = None) -> bool:
    """A JSON integer (not a boolean), equal to `expected` when one is given."""
    return type(value) is int and expected in (None, value)


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Report:
    """The outcome of verify_bundle: failures (empty when everything holds) and a summary."""

    failures: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _signed_checkpoint(
    text: object, verifier: Verifier, what: str, report: Report
) -> Checkpoint | None:
    """The checkpoint of a note signed by the verifier, or None with the failure recorded."""
    key = f"{verifier.name}+{verifier.key_hash.hex()}"
    try:
        note = parse_note(text) if isinstance(text, str) else text
        if not isinstance(note, Note):
            raise ValueError("not a signed note")
        if not verify_note(note, verifier):
            report.failures.append(f"{what}: signature does not verify with key {key}")
            return None
        return parse_checkpoint(note.body)
    except ValueError as exc:
        report.failures.append(f"{what}: {exc}")
        return None


def _check_texts(bundle: dict, report: Report) -> None:
    """Every consent text and policy text hashes (SHA-256 of its UTF-8) to its key."""
    for kind in ("consent_texts", "policies"):
        for digest, entry in bundle.get(kind, {}).items():
            if _sha256_hex(entry["text"]) != digest:
                report.failures.append(f"{kind}: the text under {digest[:12]} does not match it")


def _check_event(n: int, event: dict, bundle: dict, cp: Checkpoint | None, report: Report) -> dict:
    """Checks of one event; returns its parsed leaf, with failures recorded."""
    index, subject, fail = event["index"], bundle["subject"], report.failures.append
    if not _is_int(index):
        raise TypeError(f"index {index!r} is not an integer")
    label = f"event {n} (index {index})"
    proof = [bytes.fromhex(h) for h in event["inclusion_proof"]]
    if cp is not None and not verify_inclusion(
        index, cp.size, leaf_hash(event["leaf"].encode()), proof, cp.root
    ):
        fail(f"{label}: inclusion proof does not match the checkpoint root")
    leaf = json.loads(event["leaf"])
    if not isinstance(leaf, dict) or canonical(leaf) != event["leaf"]:
        fail(f"{label}: the leaf is not canonical JSON (RFC 8785)")
    if set(leaf) != LEAF_FIELDS or not _is_int(leaf["v"], 1) or not _is_int(leaf["seq"], index + 1):
        fail(f"{label}: the leaf is not a version 1 leaf with seq = index + 1")
    if leaf.get("email_digest") != subject["email_digest"]:
        fail(f"{label}: email digest is not the subject's")
    salt, personal = event["salt"], event["personal"]
    if (salt is None) != (personal is None):
        fail(f"{label}: salt and personal fields must be present or erased together")
    elif personal is not None:
        if set(personal) != PERSONAL_FIELDS:
            fail(f"{label}: personal fields are not exactly {sorted(PERSONAL_FIELDS)}")
        data = bytes.fromhex(salt) + canonical(personal).encode()
        if len(salt) != 64 or hashlib.sha256(data).hexdigest() != leaf["personal_commitment"]:
            fail(f"{label}: salt and personal fields do not match the leaf's commitment")
        email = personal.get("email")
        if email is not None and _address(email) != _address(subject["email"]):
            fail(f"{label}: the personal e-mail address is not the subject's")
    for key, kind in (("consent_text_sha256", "consent_texts"), ("policy_sha256", "policies")):
        if leaf.get(key) is not None and leaf[key] not in bundle.get(kind, {}):
            fail(f"{label}: {kind} lacks the text with SHA-256 {leaf[key]}")
    return leaf


def _describe(leaf: dict) -> str:
    """One summary line: when (UTC), what, list, consent text, policy, channel."""
    when = re.sub(r"^(\S{10})T(\S{8})\S*Z$", r"\1 \2 UTC", str(leaf.get("occurred_at")))
    parts = [when, str(leaf.get("event")), f"list {leaf.get('list') or '-'}"]
    if leaf.get("consent_text_sha256"):
        text = leaf["consent_text_sha256"][:12]
        parts.append(f"consent text v{leaf.get('consent_text_version')} (sha256 {text})")
    if leaf.get("policy_sha256"):
        parts.append(f"policy v{leaf.get('policy_version')}")
    return "  " + ", ".join([*parts, f"via {leaf.get('channel')}"])


def verify_bundle(bundle: dict, verifier: Verifier, checkpoint_note: Note | None = None) -> Report:
    """Check a consent proof bundle (format newsletter-consent-proof/1) against a verifier key.

    The bundle's checkpoint must be signed by the key; every event's leaf must
    be included in it, be a canonical version 1 leaf with seq = index + 1,
    carry the subject's email digest, match its salted personal commitment
    and reference texts that are in the bundle and hash to their keys. With
    checkpoint_note (e.g. a witness copy), it must be signed by the key and
    name the same origin, size and root.
    """
    report = Report()
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        report.failures.append(f"bundle: not a {BUNDLE_FORMAT} bundle")
        return report
    cp = _signed_checkpoint(bundle.get("checkpoint"), verifier, "checkpoint", report)
    if checkpoint_note is not None:
        other = _signed_checkpoint(checkpoint_note, verifier, "--checkpoint", report)
        if cp and other and (cp.origin, cp.size, cp.root) != (other.origin, other.size, other.root):
            report.failures.append(
                f"--checkpoint: the bundle was made against {cp.origin} at tree size {cp.size}, "
                f"the given checkpoint is {other.origin} at tree size {other.size}"
                + (" with another root" if cp.size == other.size else "")
            )
    leaves, events = [], bundle.get("events")
    try:
        _check_texts(bundle, report)
        for n, event in enumerate(events or [], start=1):
            try:
                leaves.append(_check_event(n, event, bundle, cp, report))
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                report.failures.append(f"event {n}: malformed ({type(exc).__name__}: {exc})")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        report.failures.append(f"bundle: malformed ({type(exc).__name__}: {exc})")
    if not events:
        report.failures.append("bundle: holds no events")
    if report.failures or cp is None:
        return report
    withdrawals = [_describe(leaf) for leaf in leaves if leaf.get("event") == "withdrawn"]
    report.summary = [
        f"Consent record of {bundle['subject']['email']}: every check holds.",
        f"Checkpoint: {cp.origin}, tree size {cp.size}, signed by {verifier.name}.",
        f"{len(leaves)} event(s), each included in the signed tree:",
        *(_describe(leaf) for leaf in leaves),
        f"Withdrawals: {len(withdrawals)}" + ("" if withdrawals else " (none)"),
        *withdrawals,
    ]
    return report


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def main(argv: list[str] | None = None) -> int:
    """Command line: exit 0 with a summary on stdout, 1 naming each failure on stderr, 2 on
    usage errors and unreadable input."""
    parser = argparse.ArgumentParser(
        prog="newsletter-verify", description="Check a consent proof bundle offline."
    )
    parser.add_argument("bundle", help="the bundle (JSON) to check")
    parser.add_argument("--key", required=True, help="file with the ledger's verifier key")
    parser.add_argument("--checkpoint", help="a checkpoint kept elsewhere (last note of the file)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        bundle = json.loads(_read(args.bundle), parse_constant=_no_constants)
        verifier = parse_vkey(_read(args.key))
        other = parse_notes(_read(args.checkpoint))[-1] if args.checkpoint else None
    except (OSError, ValueError) as exc:
        print(f"newsletter-verify: {exc}", file=sys.stderr)
        return 2
    report = verify_bundle(bundle, verifier, other)
    for failure in report.failures:
        print(failure, file=sys.stderr)
    if report.failures:
        print(f"newsletter-verify: {len(report.failures)} problem(s) found", file=sys.stderr)
        return 1
    print("\n".join(report.summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

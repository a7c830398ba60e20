"""DKIM signing (RSA or Ed25519), covering the list headers.

dkimpy parses the message, canonicalises it and builds and folds the
DKIM-Signature header; only the signature itself is made here, with a key
parsed once per process: dkimpy's own RSA is pure Python and almost all of
its ``dkim.sign``, where ``cryptography`` (OpenSSL) signs the same digest in a
fraction of the time (docs/performance.md). RSASSA-PKCS1-v1_5 and Ed25519 are
deterministic, so the result is byte for byte what ``dkim.sign`` returns (a
test compares them).
A key that ``cryptography`` cannot load is left to ``dkim.sign`` as before.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import dkim
import nacl.encoding
import nacl.exceptions
import nacl.signing
from flask import current_app

SIGNED_HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id", b"list-id",
    b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id",
]  # fmt: skip
# Each name is listed once more than the message has it ("oversigning"): a
# header added on the way, e.g. a second List-Unsubscribe put above ours,
# or a List-Unsubscribe added to a confirmation mail, breaks the signature
# instead of riding along under it.
INCLUDE_HEADERS = SIGNED_HEADERS * 2

HEADER_NAME = b"DKIM-Signature"
# dkim.sign's defaults: relaxed headers, simple body.
CANONICALIZE = b"relaxed/simple"
RSA_SHA256 = b"rsa-sha256"
ED25519_SHA256 = b"ed25519-sha256"

# digest -> signature
DigestSigner = Callable[[bytes], bytes]


def _private_key() -> bytes | None:
    """The configured key: DKIM_PRIVATE_KEY, else the file DKIM_PRIVATE_KEY_FILE."""
    config = current_app.config
    if config.get("DKIM_PRIVATE_KEY"):
        return str(config["DKIM_PRIVATE_KEY"]).encode()
    if config.get("DKIM_PRIVATE_KEY_FILE"):
        # Read for every message, so a key replaced on disk is used at once.
        return Path(config["DKIM_PRIVATE_KEY_FILE"]).read_bytes()
    return None


def sign_message(message: bytes) -> bytes:
    """Prepend a DKIM-Signature when DKIM_SELECTOR, DKIM_DOMAIN and a key are set.

    One list serves every kind of mail: a name the message lacks (List-* on a
    confirmation mail) is signed as absent, so it cannot be added later.
    """
    config = current_app.config
    key = _private_key()
    if not (key and config.get("DKIM_SELECTOR") and config.get("DKIM_DOMAIN")):
        return message
    algorithm = ED25519_SHA256 if config.get("DKIM_ALGORITHM") == "ed25519" else RSA_SHA256
    selector = str(config["DKIM_SELECTOR"]).encode()
    domain = str(config["DKIM_DOMAIN"]).encode()
    signer = digest_signer(algorithm, key)
    if signer is None:
        # A key only dkimpy understands: its own (slow, pure-Python) path, which
        # also raises its usual KeyFormatError for a key that is not one at all.
        signature = dkim.sign(
            message,
            selector,
            domain,
            key,
            include_headers=INCLUDE_HEADERS,
            signature_algorithm=algorithm,
            linesep=b"\r\n",
        )
    else:
        signature = signature_header(message, selector, domain, algorithm, signer)
    return signature + message


@lru_cache(maxsize=8)
def digest_signer(algorithm: bytes, key: bytes) -> DigestSigner | None:
    """A function that signs a SHA-256 digest with ``key``, parsed once; None when
    only dkimpy can read the key.

    Cached by the key's bytes: a changed setting or key file is a new entry.
    """
    if algorithm == ED25519_SHA256:
        try:
            # Exactly dkimpy's reading of the key: base64 of the 32-byte seed.
            signing_key = nacl.signing.SigningKey(key, encoder=nacl.encoding.Base64Encoder)
        except (nacl.exceptions.ValueError, nacl.exceptions.TypeError):
            return None
        return lambda digest: bytes(signing_key.sign(digest).signature)
    # Imported here: OpenSSL's bindings add to every worker's memory, and most
    # set-ups sign with Ed25519 or not at all.
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(private, rsa.RSAPrivateKey):
        return None
    scheme, prehashed = padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    return lambda digest: private.sign(digest, scheme, prehashed)


def parse_message(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """``dkim.rfc822_parse`` of the header block: it splits the whole message into
    lines and joins the body again, which costs as much as a signature.

    With CRLF line ends only (all our mail), the body it returns is exactly the
    bytes after the first blank line, so only the header block goes through it.
    """
    head, blank, body = message.partition(b"\r\n\r\n")
    if blank and not message.startswith(b"\r\n") and message.count(b"\n") == message.count(b"\r\n"):
        headers, _ = dkim.rfc822_parse(head)
        return headers, body
    return dkim.rfc822_parse(message)


def signature_header(
    message: bytes, selector: bytes, domain: bytes, algorithm: bytes, sign: DigestSigner
) -> bytes:
    """The DKIM-Signature header line (CRLF-terminated) as ``dkim.sign`` makes it,
    with ``sign`` in place of dkimpy's signing primitive.

    Mirrors ``dkim.DKIM.sign`` and ``gen_header`` (dkimpy 1.1) for our fixed
    choices: c=relaxed/simple, i=@domain, no l=, the oversigned header list.
    """
    policy = dkim.CanonicalizationPolicy.from_c_value(CANONICALIZE)
    headers, body = parse_message(message)
    body_hash = base64.b64encode(hashlib.sha256(policy.canonicalize_body(body)).digest())
    include = tuple(name.lower() for name in INCLUDE_HEADERS)
    fields = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", CANONICALIZE),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", selector),
        (b"t", str(int(time.time())).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        # A placeholder that makes b= fold onto its own line, as dkimpy does, so
        # filling in the signature does not move the tags before it.
        (b"b", b"0" * 60),
    ]
    value = b"; ".join(b"=".join(field) for field in fields)
    value = dkim.fold(value, namelen=len(HEADER_NAME), linesep=b"\r\n")
    value = dkim.RE_BTAG.sub(b"\\1", value)  # hashed with an empty b=
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher,
        policy,
        policy.canonicalize_headers(headers),
        include,
        (HEADER_NAME, b" " + value),
        None,
    )
    fields[-1] = (b"b", base64.b64encode(sign(hasher.digest())))
    value = b"; ".join(b"=".join(field) for field in fields) + b"\r\n"
    return HEADER_NAME + b": " + dkim.fold(value, namelen=len(HEADER_NAME), linesep=b"\r\n")

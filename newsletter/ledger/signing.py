"""Ed25519 signer of C2SP signed notes (the ledger's checkpoints).

The key file holds one line in the format of Go's golang.org/x/mod/sumdb/note:
"PRIVATE+KEY+<name>+<8 hex key hash>+<base64(0x01 || 32-byte seed)>". The
verifier key is "<name>+<8 hex key hash>+<base64(0x01 || 32-byte public key)>".
Parsing and verification live in newsletter_verify.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from newsletter_verify import ED25519, check_key_name, ed25519_key_hash, key_fields

PRIVATE_PREFIX = "PRIVATE+KEY+"
NOTE_TEXT = re.compile(r"[^\x00-\x09\x0b-\x1f\ud800-\udfff]+\n", re.DOTALL)


class Signer:
    """An Ed25519 note signer: a key name and a private key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self.private_key = private_key
        self.public_bytes = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A signer with a new random key."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_text(cls, text: str) -> Signer:
        """Parse "PRIVATE+KEY+<name>+<8 hex>+<base64(0x01 || seed)>" (one trailing newline allowed).

        The key hash must match the name and the key derived from the seed.
        """
        text = text.removesuffix("\n")
        if not text.startswith(PRIVATE_PREFIX):
            raise ValueError("signer key: does not start with PRIVATE+KEY+")
        name, key_hash, seed = key_fields(text.removeprefix(PRIVATE_PREFIX), "signer key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if signer.key_hash != key_hash:
            raise ValueError("signer key: the key hash does not match the name and key")
        return signer

    def to_text(self) -> str:
        """The key file line, without a newline."""
        seed = self.private_key.private_bytes_raw()
        encoded = base64.b64encode(ED25519 + seed).decode()
        return f"{PRIVATE_PREFIX}{self.name}+{self.key_hash.hex()}+{encoded}"

    @property
    def key_hash(self) -> bytes:
        """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
        return ed25519_key_hash(self.name, self.public_bytes)

    @property
    def vkey(self) -> str:
        """The verifier key, "<name>+<8 hex>+<base64(0x01 || public key)>"."""
        encoded = base64.b64encode(ED25519 + self.public_bytes).decode()
        return f"{self.name}+{self.key_hash.hex()}+{encoded}"

    def sign_note(self, body: str) -> str:
        """The signed note: body, a blank line, "\u2014 <name> <base64(key hash || signature)>\\n".

        The body must be non-empty text ending in a newline, without control
        characters other than newline; the signature covers its UTF-8 bytes.
        """
        if not NOTE_TEXT.fullmatch(body):
            raise ValueError("note body: must end with a newline and hold no control characters")
        signature = self.private_key.sign(body.encode())
        encoded = base64.b64encode(self.key_hash + signature).decode()
        return f"{body}\n\u2014 {self.name} {encoded}\n"


def load_or_create(path: Path, name: str) -> Signer:
    """The signer in the key file at `path`; when it is missing, a new key named `name`.

    Creation is atomic (mode 0600 from the start) and never replaces a file
    another process created first. An existing key keeps the name it was
    made with. A file readable or writable by group or others and a
    malformed file are refused with ValueError.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        signer = Signer.generate(name)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(signer.to_text() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(temporary, path)
        finally:
            temporary.unlink()
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(
            f"{path}: a signing key must be readable by its owner only (mode {mode:o})"
        )
    try:
        signer = Signer.from_text(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a signing key file ({exc})") from exc
    return signer

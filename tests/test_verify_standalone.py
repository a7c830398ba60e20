"""newsletter_verify (standalone): JCS subset, C2SP signed notes and checkpoints, the Ed25519
signer and its key file, and the newsletter-verify command on hand-built bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

import newsletter_verify
from newsletter.ledger import merkle
from newsletter.ledger.signing import Signer, load_or_create
from newsletter_verify import (
    Checkpoint,
    canonical,
    leaf_hash,
    main,
    parse_checkpoint,
    parse_note,
    parse_notes,
    parse_vkey,
    verify_bundle,
    verify_note,
)

# -- canonical JSON: the subset of RFC 8785 the leaves use

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",))), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(json_values)
def test_canonical_is_rfc8785(value):
    assert canonical(value) == rfc8785.dumps(value).decode()


def test_canonical_orders_keys_by_utf16_and_escapes_like_ecmascript():
    value = {"\U0001f600": 1, "\uffff": 2, "b": '\x01\x7f\u2028"\\\n', "a": [True, None, -3]}
    assert canonical(value) == rfc8785.dumps(value).decode()
    assert canonical(value).index("\U0001f600") < canonical(value).index("\uffff")


@pytest.mark.parametrize(
    "value",
    [1.0, {"a": 0.5}, [float("nan")], 2**53, -(2**53), "\ud800", {1: "a"}, (1, 2), b"x"],
)
def test_canonical_refuses_what_is_outside_the_subset(value):
    with pytest.raises(ValueError, match="canonical"):
        canonical(value)


# -- C2SP signed notes: vectors from golang.org/x/mod sumdb/note/note_test.go
# (github.com/golang/mod at fe2ec04f7c3c3aa6fad97631aafcff6e49e2d1db, BSD-3-Clause)

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
    "qdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTG"
    "wnWLox33WWd1RvMc+QQ=\n"
)
# c2sp.org/tlog-checkpoint example body; Go sumdb/tlog note_test.go tree note.
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
GO_TREE = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"


def test_go_vectors_verify():
    peter, enoch = parse_vkey(PETER_VKEY), parse_vkey(ENOCH_VKEY)
    assert (peter.name, peter.key_hash.hex()) == ("PeterNeumann", "c74f20a3")
    note = parse_note(GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG)
    assert note.body == GO_TEXT
    assert [s.name for s in note.signatures] == ["PeterNeumann", "EnochRoot"]
    assert verify_note(note, peter)
    assert verify_note(note, enoch)
    assert not verify_note(parse_note(GO_TEXT + "\n" + ENOCH_SIG), peter)


def test_go_signer_key_signs_like_go():
    signer = Signer.from_text(PETER_SKEY)
    assert signer.vkey == PETER_VKEY
    assert signer.to_text() == PETER_SKEY
    assert signer.sign_note(GO_TEXT) == GO_TEXT + "\n" + PETER_SIG


def test_mangled_verifier_keys_are_refused():
    # As Go's TestNewVerifier: every proper substring and every byte + 1 fails.
    b = PETER_VKEY.encode()
    mangled = [b[i:j] for i in range(len(b) + 1) for j in range(i + 1, len(b) + 1)]
    mangled = [m for m in mangled if m != b]
    mangled += [b[:i] + bytes([b[i] + 1]) + b[i + 1 :] for i in range(len(b))]
    for key in mangled:
        with pytest.raises(ValueError, match=r"key"):
            parse_vkey(key.decode())
    for key in [
        # Go: wrong length key, with adjusted key hash; unknown algorithm, ditto.
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]:
        with pytest.raises(ValueError, match="verifier key"):
            parse_vkey(key)
    assert parse_vkey(PETER_VKEY + "\n").name == "PeterNeumann"


def test_mangled_signer_keys_are_refused():
    b = PETER_SKEY.encode()
    for i in range(len(b)):
        with pytest.raises(ValueError, match="key"):
            Signer.from_text((b[:i] + bytes([b[i] + 1]) + b[i + 1 :]).decode())
        with pytest.raises(ValueError, match="key"):
            Signer.from_text(b[:i].decode())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GO_TEXT, "no blank line"),
        (GO_TEXT + "\n", "does not end with a newline"),
        (GO_TEXT + "\n" + PETER_SIG[:-1], "does not end with a newline"),
        ("\x01" + GO_TEXT + "\n" + PETER_SIG, "control character"),
        (GO_TEXT + "\n" + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8=\n", "base64"),
        (GO_TEXT + "\n" + "\u2014 a+b x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8=\n", "key name"),
        (GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "not a signature line"),
        (GO_TEXT + "\n" + PETER_SIG.replace("x08go", "x08g"), "base64"),
        (GO_TEXT + "\n\u2014 PeterNeumann AAAA\n", "too short"),
        (GO_TEXT + "\n" + PETER_SIG * 101, "more than 100"),
        (GO_TEXT.replace("\n", "\r\n") + "\n" + PETER_SIG, "control character"),
    ],
)
def test_malformed_notes_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_note(text)


def test_invalid_and_misnamed_signatures_fail():
    peter = parse_vkey(PETER_VKEY)
    invalid = GO_TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    assert not verify_note(parse_note(invalid), peter)
    misnamed = PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    assert not verify_note(parse_note(GO_TEXT + "\n" + misnamed), peter)
    wrong_hash = PETER_SIG.replace("x08g", "xxxx")
    assert not verify_note(parse_note(GO_TEXT + "\n" + wrong_hash), peter)
    # A valid signature next to an invalid one by the same key: the note is refused.
    bad_line = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    assert not verify_note(parse_note(GO_TEXT + "\n" + PETER_SIG + bad_line), peter)


def test_signer_round_trip_and_tampering():
    signer = Signer.generate("news.example.dk/consent-ledger")
    again = Signer.from_text(signer.to_text() + "\n")
    assert again.vkey == signer.vkey
    verifier = parse_vkey(signer.vkey)
    assert verifier.key_hash == signer.key_hash
    body = "news.example.dk/consent-ledger\n3\n" + base64.b64encode(bytes(32)).decode() + "\n"
    signed = signer.sign_note(body)
    assert verify_note(parse_note(signed), verifier)
    other = Signer.generate("news.example.dk/consent-ledger")
    assert not verify_note(parse_note(signed), parse_vkey(other.vkey))
    assert not verify_note(parse_note(signed.replace("\n3\n", "\n4\n")), verifier)
    sig_at = signed.index("\u2014") + len(signer.name) + 10
    edited = signed[:sig_at] + ("A" if signed[sig_at] != "A" else "B") + signed[sig_at + 1 :]
    assert not verify_note(parse_note(edited), verifier)
    renamed = Signer("news.example.dk/another-name", signer.private_key)  # same key, another name
    assert not verify_note(parse_note(renamed.sign_note(body)), verifier)
    with pytest.raises(ValueError, match="does not end with a newline"):
        parse_note(signed[:-1])
    for bad_body in ["no newline", "", "tab\there\n"]:
        with pytest.raises(ValueError, match="note body"):
            signer.sign_note(bad_body)
    for bad_name in ["", "a b", "a+b", "tab\tname"]:
        with pytest.raises(ValueError, match="key name"):
            Signer.generate(bad_name)


def test_checkpoints_parse():
    assert parse_checkpoint(C2SP_CHECKPOINT) == Checkpoint(
        "example.com/behind-the-sofa",
        20852163,
        base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="),
        [],
    )
    assert parse_checkpoint(GO_TREE).size == 123456789012
    assert parse_checkpoint(C2SP_CHECKPOINT + "ext one\next two\n").extensions == [
        "ext one",
        "ext two",
    ]
    root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert parse_checkpoint(f"o\n0\n{root}\n").size == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # Go sumdb/tlog TestParseTree: hexadecimal size; root of the wrong length.
        ("go.sum database tree\n0xabcdef\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n", "size"),
        ("go.sum database tree\n123\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n", "root"),
        ("o\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "size"),
        ("o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "size"),
        ("o\n+1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "size"),
        ("o\n\u0661\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "size"),
        ("o\n99999999999999999999\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "size"),
        ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=", "newline"),
        ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n", "base64"),
        ("o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\next\n", "non-empty"),
        ("\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "non-empty"),
        ("o\n1\n", "non-empty"),
        ("o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", "32 bytes"),
    ],
)
def test_malformed_checkpoints_are_refused(body, message):
    with pytest.raises(ValueError, match=message):
        parse_checkpoint(body)


def test_parse_notes_splits_a_witness_log():
    signer = Signer.generate("log.example/x")
    root = base64.b64encode(bytes(32)).decode()
    notes = [signer.sign_note(f"log.example/x\n{n}\n{root}\n") for n in (1, 2, 3)]
    log = "".join(note + "\n" for note in notes)
    parsed = parse_notes(log)
    assert [parse_checkpoint(n.body).size for n in parsed] == [1, 2, 3]
    assert [n.body for n in parse_notes(log[:-1])] == [n.body for n in parsed]
    assert parse_notes(notes[0])[0] == parse_note(notes[0])
    for bad in ["", "garbage\n", log + "garbage\n", log[:-2], log + "\n"]:
        with pytest.raises(ValueError, match="note"):
            parse_notes(bad)


def test_key_file_is_created_once_under_concurrency(tmp_path):
    path = tmp_path / "k\u00e6y"
    name = "nyhedsbrev.example/samtykke-\u00e6"
    with ThreadPoolExecutor(8) as pool:
        keys = {s.vkey for s in pool.map(lambda _: load_or_create(path, name), range(16))}
    assert keys == {load_or_create(path, name).vkey}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_key_file_is_created_private_and_reloaded(tmp_path):
    path = tmp_path / "instance" / "ledger.key"
    signer = load_or_create(path, "news.example.dk/consent-ledger")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == signer.to_text() + "\n"
    assert load_or_create(path, "news.example.dk/consent-ledger").vkey == signer.vkey
    assert [p.name for p in path.parent.iterdir()] == ["ledger.key"]
    assert load_or_create(path, "another.example/log").name == "news.example.dk/consent-ledger"
    path.chmod(0o644)
    with pytest.raises(ValueError, match="owner only"):
        load_or_create(path, "news.example.dk/consent-ledger")
    path.chmod(0o600)
    path.write_text("PRIVATE+KEY+garbage\n")
    with pytest.raises(ValueError, match="not a signing key file"):
        load_or_create(path, "news.example.dk/consent-ledger")


# -- bundles and the newsletter-verify command

ORIGIN = "news.example.dk/consent-ledger"
CONSENT_TEXT = "Yes, send me the weekly letter. I can unsubscribe at any time."
POLICY_TEXT = "# Privacy policy\n\nWe keep your address until you leave.\n"
ALICE = "Alice@Example.org"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_tree(signer: Signer, extra_after: int = 0):
    """Seven leaves (alice's at indexes 1, 3, 5, 6) and, optionally, more later.

    Returns the leaves with their salts and personal fields, the stored nodes and
    a function giving the signed checkpoint of a size."""
    entries = []
    events = ["requested", "confirmed", "requested", "withdrawn", "erased"]
    for i in range(7 + extra_after):
        mine = i in (1, 3, 5, 6)
        email = ALICE if mine else f"other{i}@example.org"
        digest = sha("digest:" + email.lower())
        personal = {
            "email": email.lower(),
            "ip": "192.0.2.7",
            "user_agent": "UA",
            "source_url": None,
        }
        salt = hashlib.sha256(b"salt%d" % i).digest()
        erased = i == 6
        leaf = {
            "v": 1,
            "seq": i + 1,
            "event": events[i % 5] if i != 3 else "withdrawn",
            "channel": "form" if i != 3 else "unsubscribe_link",
            "occurred_at": f"2026-03-0{1 + i % 9}T10:11:1{i % 10}.123456Z",
            "list": "weekly",
            "consent_text_version": 2 if i != 3 else None,
            "consent_text_sha256": sha(CONSENT_TEXT) if i != 3 else None,
            "policy_version": 4,
            "policy_sha256": sha(POLICY_TEXT),
            "email_digest": digest,
            "personal_commitment": hashlib.sha256(salt + rfc8785.dumps(personal)).hexdigest(),
            "details": {"note": "\u00e6\u00f8\u00e5", "count": i},
        }
        entries.append(
            {
                "index": i,
                "leaf": rfc8785.dumps(leaf).decode(),
                "salt": None if erased else salt.hex(),
                "personal": None if erased else personal,
                "mine": mine,
            }
        )
    hashes = [leaf_hash(e["leaf"].encode()) for e in entries]
    nodes_list, _ = merkle.append([], 0, hashes)
    nodes = {(level, idx): h for level, idx, h in nodes_list}

    def checkpoint(size: int) -> str:
        root = merkle.range_hash([nodes[n] for n in merkle.right_edge(size)])
        return signer.sign_note(f"{ORIGIN}\n{size}\n{base64.b64encode(root).decode()}\n")

    return entries, nodes, checkpoint


def make_bundle(signer: Signer, size: int = 7) -> dict:
    entries, nodes, checkpoint = make_tree(signer)
    events = [
        {
            "index": e["index"],
            "leaf": e["leaf"],
            "salt": e["salt"],
            "personal": e["personal"],
            "inclusion_proof": [
                p.hex() for p in merkle.prove(merkle.inclusion_plan(e["index"], size), nodes)
            ],
        }
        for e in entries[:size]
        if e["mine"]
    ]
    return {
        "format": "newsletter-consent-proof/1",
        "created_at": "2026-03-10T00:00:00.000000Z",
        "checkpoint": checkpoint(size),
        "subject": {"email": ALICE.lower(), "email_digest": sha("digest:" + ALICE.lower())},
        "events": events,
        "consent_texts": {
            sha(CONSENT_TEXT): {"list": "weekly", "version": 2, "text": CONSENT_TEXT}
        },
        "policies": {
            sha(POLICY_TEXT): {
                "version": 4,
                "title": "Privacy policy",
                "effective_on": "2026-01-01",
                "text": POLICY_TEXT,
            }
        },
    }


LEDGER = Signer.generate(ORIGIN)

AUDIT = """\
import atexit, runpy, sys
def audit():
    seen = sorted({m.split(".")[0] for m in sys.modules} & {"flask", "sqlalchemy", "newsletter",
                  "werkzeug", "jinja2", "rfc8785", "psycopg"})
    sys.stderr.write("AUDIT imported=%s\\n" % ",".join(seen))
atexit.register(audit)
sys.argv = ["newsletter_verify.py", *sys.argv[1:]]
runpy.run_path("newsletter_verify.py", run_name="__main__")
"""


@pytest.fixture
def workdir(tmp_path):
    """A directory holding a copy of newsletter_verify.py alone, the ledger's key and a bundle."""
    shutil.copy(newsletter_verify.__file__, tmp_path / "newsletter_verify.py")
    (tmp_path / "audit.py").write_text(AUDIT)
    (tmp_path / "ledger.vkey").write_text(LEDGER.vkey + "\n")
    return tmp_path


def run(workdir: Path, bundle: dict | str, *args: str, script: str = "newsletter_verify.py"):
    path = workdir / "bundle.json"
    path.write_text(bundle if isinstance(bundle, str) else json.dumps(bundle, ensure_ascii=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER", "FLASK"))}
    return subprocess.run(
        [sys.executable, "-I", script, "bundle.json", "--key", "ledger.vkey", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_bundle_verifies_in_a_bare_process(workdir):
    result = run(workdir, make_bundle(LEDGER), script="audit.py")
    assert result.returncode == 0, result.stderr
    assert "AUDIT imported=\n" in result.stderr
    out = result.stdout
    assert "Consent record of alice@example.org: every check holds." in out
    assert f"Checkpoint: {ORIGIN}, tree size 7, signed by {ORIGIN}." in out
    assert "4 event(s), each included in the signed tree:" in out
    assert (
        f"2026-03-02 10:11:11 UTC, confirmed, list weekly, consent text v2 "
        f"(sha256 {sha(CONSENT_TEXT)[:12]}), policy v4, via form" in out
    )
    assert "Withdrawals: 1\n  2026-03-04 10:11:13 UTC, withdrawn, list weekly" in out
    assert "via unsubscribe_link" in out


def test_console_script_main_in_process(tmp_path, capsys):
    (tmp_path / "b.json").write_text(json.dumps(make_bundle(LEDGER)))
    (tmp_path / "k").write_text(LEDGER.vkey)
    assert main([str(tmp_path / "b.json"), "--key", str(tmp_path / "k")]) == 0
    assert "every check holds" in capsys.readouterr().out
    assert main([str(tmp_path / "b.json")]) == 2
    assert main([str(tmp_path / "missing.json"), "--key", str(tmp_path / "k")]) == 2


def edit_leaf(bundle: dict) -> None:
    bundle["events"][0]["leaf"] = bundle["events"][0]["leaf"].replace(
        '"channel":"form"', '"channel":"api"'
    )


def edit_consent_text(bundle: dict) -> None:
    bundle["consent_texts"][sha(CONSENT_TEXT)]["text"] = CONSENT_TEXT + " Or not."


def edit_policy(bundle: dict) -> None:
    bundle["policies"][sha(POLICY_TEXT)]["text"] = POLICY_TEXT.replace("until", "after")


def edit_salt(bundle: dict) -> None:
    bundle["events"][0]["salt"] = "00" + bundle["events"][0]["salt"][2:]


def edit_personal(bundle: dict) -> None:
    bundle["events"][0]["personal"]["ip"] = "192.0.2.8"


def truncate_proof(bundle: dict) -> None:
    bundle["events"][2]["inclusion_proof"].pop()


def drop_consent_text(bundle: dict) -> None:
    bundle["consent_texts"] = {}


def other_subject(bundle: dict) -> None:
    bundle["subject"]["email_digest"] = sha("digest:bob@example.org")


def wrong_index(bundle: dict) -> None:
    bundle["events"][0]["index"] = 2


def boolean_version(bundle: dict) -> None:
    bundle["events"][0]["leaf"] = bundle["events"][0]["leaf"].replace('"v":1', '"v":true')


def foreign_address(bundle: dict) -> None:
    bundle["events"][0]["personal"]["email"] = "mallory@example.org"


def resign_with_other_key(bundle: dict) -> None:
    other = Signer.generate(ORIGIN)
    bundle["checkpoint"] = other.sign_note(parse_note(bundle["checkpoint"]).body)


def edit_checkpoint_size(bundle: dict) -> None:
    bundle["checkpoint"] = bundle["checkpoint"].replace(f"{ORIGIN}\n7\n", f"{ORIGIN}\n8\n")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (edit_leaf, "event 1 (index 1): inclusion proof does not match the checkpoint root"),
        (edit_consent_text, f"consent_texts: the text under {sha(CONSENT_TEXT)[:12]}"),
        (edit_policy, f"policies: the text under {sha(POLICY_TEXT)[:12]}"),
        (edit_salt, "event 1 (index 1): salt and personal fields do not match the leaf's"),
        (edit_personal, "event 1 (index 1): salt and personal fields do not match the leaf's"),
        (truncate_proof, "event 3 (index 5): inclusion proof does not match the checkpoint"),
        (
            drop_consent_text,
            f"event 1 (index 1): consent_texts lacks the text with SHA-256 {sha(CONSENT_TEXT)}",
        ),
        (other_subject, "event 1 (index 1): email digest is not the subject's"),
        (wrong_index, "event 1 (index 2): the leaf is not a version 1 leaf with seq = index + 1"),
        (boolean_version, "event 1 (index 1): the leaf is not a version 1 leaf with seq"),
        (foreign_address, "event 1 (index 1): the personal e-mail address is not the subject's"),
        (resign_with_other_key, f"checkpoint: signature does not verify with key {ORIGIN}+"),
        (edit_checkpoint_size, f"checkpoint: signature does not verify with key {ORIGIN}+"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_tampered_bundles_fail_naming_the_problem(workdir, tamper, message):
    bundle = make_bundle(LEDGER)
    tamper(bundle)
    result = run(workdir, bundle)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr
    assert result.stdout == ""


def test_another_key_fails(workdir):
    (workdir / "ledger.vkey").write_text(Signer.generate(ORIGIN).vkey + "\n")
    result = run(workdir, make_bundle(LEDGER))
    assert result.returncode == 1
    assert f"checkpoint: signature does not verify with key {ORIGIN}+" in result.stderr


def test_erased_event_still_verifies():
    bundle = make_bundle(LEDGER)
    erased = bundle["events"][3]
    assert erased["salt"] is None
    assert erased["personal"] is None
    assert verify_bundle(bundle, parse_vkey(LEDGER.vkey)).ok
    erased["salt"] = "00" * 32
    report = verify_bundle(bundle, parse_vkey(LEDGER.vkey))
    assert report.failures == [
        "event 4 (index 6): salt and personal fields must be present or erased together"
    ]


@pytest.mark.parametrize(
    "garbage",
    ["", "not json", '{"format": ', "\x00\x01binary", '{"a": NaN}'],
)
def test_unreadable_bundle_exits_2(workdir, garbage):
    result = run(workdir, garbage)
    assert result.returncode == 2
    assert result.stderr.startswith("newsletter-verify: ")


def test_unreadable_key_exits_2(workdir):
    (workdir / "ledger.vkey").write_text("not a key\n")
    assert run(workdir, make_bundle(LEDGER)).returncode == 2
    (workdir / "ledger.vkey").unlink()
    assert run(workdir, make_bundle(LEDGER)).returncode == 2


def test_wrong_shapes_exit_1(workdir):
    for bundle in [[], {"format": "other"}, {**make_bundle(LEDGER), "events": []}]:
        result = run(workdir, bundle)
        assert result.returncode == 1, bundle
    broken = make_bundle(LEDGER)
    broken["events"][0]["inclusion_proof"] = ["zz"]
    broken["events"][1]["index"] = True
    broken["events"][2]["leaf"] = "[]"
    result = run(workdir, broken)
    assert result.returncode == 1
    assert "event 1: malformed (ValueError" in result.stderr
    assert "event 2: malformed (TypeError: index True is not an integer)" in result.stderr
    assert "event 3 (index 5): the leaf is not canonical JSON" in result.stderr


def test_checkpoint_option(workdir):
    *_, checkpoint = make_tree(LEDGER, extra_after=3)
    bundle = make_bundle(LEDGER)
    (workdir / "witness.log").write_text(checkpoint(5) + "\n" + checkpoint(7) + "\n")
    assert run(workdir, bundle, "--checkpoint", "witness.log").returncode == 0
    (workdir / "witness.log").write_text(checkpoint(7) + "\n" + checkpoint(10) + "\n")
    result = run(workdir, bundle, "--checkpoint", "witness.log")
    assert result.returncode == 1
    assert (
        f"--checkpoint: the bundle was made against {ORIGIN} at tree size 7, "
        f"the given checkpoint is {ORIGIN} at tree size 10" in result.stderr
    )
    foreign = Signer.generate(ORIGIN)
    (workdir / "witness.log").write_text(foreign.sign_note(parse_note(checkpoint(7)).body))
    result = run(workdir, bundle, "--checkpoint", "witness.log")
    assert result.returncode == 1
    assert "--checkpoint: signature does not verify with key" in result.stderr
    (workdir / "witness.log").write_text("garbage\n")
    assert run(workdir, bundle, "--checkpoint", "witness.log").returncode == 2

"""Make ``ledger_0010.json``: a database written by the keyed-HMAC-chain ledger (revision 0010).

The fixture is what a production database looked like before the ledger
became a Merkle log: consent events, subscribers, lists and every other table
at revision 0010, written by that code's own service functions. It is the
input of the migration test, and it cannot be remade by the current code, so
this script documents how it was made. It is not run by the test suite.

Run it with the code of revision 0010 (commit ce08206) on the import path:

    git worktree add /tmp/old-ledger ce08206
    cd /tmp/old-ledger
    PYTHONPATH=/tmp/old-ledger /path/to/.venv/bin/python /path/to/tests/data/make_old_ledger.py

It builds a fresh SQLite database in a temporary directory, upgrades it to
0010, writes a history through the services (lists with consent-text
versions, two privacy-policy versions, signups by form and API through the
intake and its worker step, confirmations, a one-click unsubscribe, a
preference-page change, a staff withdrawal, a CSV import, a hard-bounce
suppression and one erasure), checks the chain with that code's
``verify_chain`` and dumps every table to ``ledger_0010.json`` next to this
file (or to the path given as the first argument).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

SETTINGS = {
    "SECRET_KEY": "old-ledger-fixture-secret-key-0010-do-not-use-in-production",
    "BASE_URL": "https://news.example.dk",
}
REVISION = "0010"
OUT = Path(__file__).resolve().parent / "ledger_0010.json"
POLICY_FILE = Path(__file__).resolve().parent / "persondatapolitik.md"

BROWSERS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
)
FIRST_NAMES = (
    "Anne Sørensen",
    "Bjørn Madsen",
    "Cecilie Holm",
    "Dennis Kjær",
    "Emma Lund",
    "Frederik Dahl",
    "Gitte Berg",
    "Hans Vestergaard",
    "Ida Nørgaard",
    "Jonas Friis",
    "Karen Bech",
    "Lars Krogh",
    "Mette Lauridsen",
    "Niels Thomsen",
    "Olivia Juhl",
    "Peter Skov",
    "Rikke Munk",
    "Søren Bak",
    "Tina Brandt",
    "Ulrik Winther",
    "Vibeke Toft",
    "William Mørch",
    "Yasmin Ali",
    "Åse Kirk",
    "Ærbar Holt",
    "Øjvind Riis",
)


def _old_code_check() -> None:
    """Refuse to run with anything but the HMAC-chain ledger of revision 0010."""
    import newsletter
    from newsletter.ledger import chain

    if not hasattr(chain, "hash_of") or not hasattr(chain, "GENESIS_HASH"):
        sys.exit(f"{newsletter.__file__} is not the HMAC-chain ledger; see this file's docstring")
    migrations = Path(newsletter.__file__).resolve().parent.parent / "migrations" / "versions"
    newest = sorted(p.name for p in migrations.glob("0*.py"))[-1]
    if not newest.startswith(REVISION):
        sys.exit(f"{migrations} ends at {newest}, not at revision {REVISION}")


def main(out: Path) -> None:
    _old_code_check()
    from flask_migrate import upgrade

    from newsletter import create_app
    from newsletter.extensions import db

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'old.sqlite'}"
        app = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": url,
                "SECRET_KEY": SETTINGS["SECRET_KEY"],
                "BASE_URL": SETTINGS["BASE_URL"],
                "MAILBOX_DIR": str(Path(tmp) / "mailbox"),
                "MAIL_SUPPRESS_SEND": True,
                "RATELIMIT_ENABLED": False,
            }
        )
        assert app.config.get("LEDGER_KEY") is None, "the key must derive from SECRET_KEY"
        assert app.config["IP_LOGGING"] == "truncated"
        with app.app_context():
            upgrade(revision=REVISION)
            History(app).write()
            from newsletter.ledger import verify_chain

            report = verify_chain()
            assert report.ok, report.problems
            print(f"old verify_chain: ok, {report.events} events, head #{report.head_seq}")
            db.session.remove()
            dump = dump_database(db.engine)
            db.engine.dispose()
    out.write_text(json.dumps(dump, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n")
    counts = {name: len(t["rows"]) for name, t in dump["tables"].items()}
    print(f"wrote {out} ({out.stat().st_size} bytes): {counts}")


class History:
    """Drive the services of revision 0010 as visitors, staff and the worker would."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.visitor = 0

    @contextmanager
    def request(self, path: str, *, referer: str | None = None) -> Iterator[Any]:
        """A request context of one visitor, and that request's evidence."""
        from flask import request

        from newsletter.ledger.evidence import evidence_from_request

        self.visitor += 1
        n = self.visitor
        headers = {"User-Agent": BROWSERS[n % len(BROWSERS)]}
        if referer:
            headers["Referer"] = referer
        address = f"198.51.100.{10 + n}" if n % 4 else f"2001:db8:{n:x}:7::{n:x}"
        with self.app.test_request_context(
            path,
            method="POST",
            base_url=SETTINGS["BASE_URL"],
            headers=headers,
            environ_base={"REMOTE_ADDR": address},
        ):
            yield evidence_from_request(request)

    def sign_up(self, email: str, name: str | None, slugs: list[str], channel: str) -> None:
        """A signup as the form or the API stores it (the worker applies it later)."""
        from newsletter.models import Channel
        from newsletter.subscriptions.intake import SignupRequest, accept_signup

        if channel == "form":
            context = self.request("/subscribe", referer=f"{SETTINGS['BASE_URL']}/blog/nyt-i-2026")
        else:
            context = self.request("/api/v1/subscribe")
        with context as evidence:
            accept_signup(
                SignupRequest(
                    email=email,
                    channel=Channel(channel),
                    evidence=evidence,
                    name=name,
                    list_slugs=slugs,
                    locale="da" if self.visitor % 3 else "en",
                )
            )

    def drain(self) -> None:
        """The worker's intake step, until nothing waits."""
        from newsletter.subscriptions.intake_run import process_intake

        while process_intake("fixture-worker"):
            pass

    def payload(self, purpose: str, email: str, lists: tuple[int, ...] = ()) -> Any:
        """What a mailed link (confirm, unsubscribe, manage) names, read back as the route does."""
        from newsletter.extensions import db
        from newsletter.models import Subscriber
        from newsletter.tokens import make_token, read_token

        key = db.session.scalar(sa.select(Subscriber.token_key).where(Subscriber.email == email))
        assert key is not None, email
        return read_token(purpose, make_token(purpose, key, lists))

    def confirm(self, email: str) -> None:
        """Click the confirmation link."""
        from newsletter.subscriptions.service import confirm

        with self.request("/confirm") as evidence:
            confirm(self.payload("newsletter.confirm", email, self.pending_lists(email)), evidence)

    def pending_lists(self, email: str) -> tuple[int, ...]:
        """The lists a confirmation mail of ``email`` names (its pending ones)."""
        from newsletter.extensions import db
        from newsletter.models import Subscriber, Subscription, SubscriptionStatus

        rows = db.session.scalars(
            sa.select(Subscription.list_id)
            .join(Subscriber)
            .where(Subscriber.email == email, Subscription.status == SubscriptionStatus.PENDING)
            .order_by(Subscription.list_id)
        )
        return tuple(rows)

    def subscriber_id(self, email: str) -> int:
        from newsletter.extensions import db
        from newsletter.models import Subscriber

        found = db.session.scalar(sa.select(Subscriber.id).where(Subscriber.email == email))
        assert found is not None, email
        return int(found)

    def write(self) -> None:
        from newsletter.campaigns.bounces import suppress_after_bounce

        from newsletter.extensions import db
        from newsletter.imports import jobs
        from newsletter.imports.run import run_next_import
        from newsletter.models import Channel, Role, Subscriber
        from newsletter.privacy.erasure import erase_subscriber
        from newsletter.privacy.policy import import_policy
        from newsletter.privacy.withdrawal import withdraw_by_staff
        from newsletter.staff.service import create_staff
        from newsletter.subscriptions.lists import DEFAULT_CONSENT_TEXT, create_list, update_list
        from newsletter.subscriptions.service import unsubscribe, update_preferences

        people = [(address(i, name), name) for i, name in enumerate(FIRST_NAMES, start=1)]

        owner = create_staff(
            "redaktion@example.dk", Role.OWNER, "Fixture owner passphrase 0010!", name="Redaktionen"
        )
        news = create_list("nyhedsbrev", "Nyhedsbrev", DEFAULT_CONSENT_TEXT, default=True)
        events = create_list(
            "arrangementer",
            "Arrangementer",
            "Ja tak, send mig invitationer til arrangementer og kurser på e-mail. "
            "Jeg kan framelde mig når som helst.",
            "Invitationer til kurser og arrangementer.",
            actor=owner,
            ip="203.0.113.0",
        )
        news_id, events_id = news.id, events.id

        # Before any privacy policy was imported: events with no policy reference.
        for email, name in people[0:3]:
            self.sign_up(email, name, ["nyhedsbrev"], "form")
        self.drain()
        for email, _name in people[0:2]:
            self.confirm(email)

        # Policy version 1 (the real policy file, effective 30.10.2023).
        import_policy(POLICY_FILE.read_bytes(), actor=owner, ip="203.0.113.0")
        for i, (email, name) in enumerate(people[3:13]):
            slugs = ["nyhedsbrev", "arrangementer"] if i % 3 == 0 else ["nyhedsbrev"]
            if i % 4 == 1:
                slugs = ["arrangementer"]
            self.sign_up(email, name if i % 5 else None, slugs, "api" if i % 2 else "form")
        self.drain()
        for email, _name in people[3:12]:
            self.confirm(email)

        # Both lists get a new consent text version.
        update_list(
            news_id,
            name="Nyhedsbrev",
            description="Nyt fra hjemmesiden, ca. en gang om måneden.",
            default=True,
            consent_text=DEFAULT_CONSENT_TEXT.replace(
                "på e-mail", "på e-mail (ca. en gang om måneden)"
            ),
            actor=owner,
            ip="203.0.113.0",
        )
        update_list(
            events_id,
            name="Arrangementer",
            description="Invitationer til kurser og arrangementer.",
            default=False,
            consent_text="Ja tak, send mig invitationer til arrangementer, kurser og webinarer "
            "på e-mail. Jeg kan framelde mig når som helst med linket i hver mail.",
            actor=owner,
            ip="203.0.113.0",
        )
        for i, (email, name) in enumerate(people[13:21]):
            slugs = ["nyhedsbrev", "arrangementer"] if i % 2 else ["nyhedsbrev"]
            self.sign_up(email, name, slugs, "form" if i % 3 else "api")
        # A known address signs up again for a further list (the known-address path).
        self.sign_up(people[4][0], people[4][1], ["nyhedsbrev"], "form")
        self.drain()
        for email, _name in [*people[13:20], people[4]]:
            self.confirm(email)

        # A CSV import into the events list (imported and requested events).
        data = (
            "email,name,consented_at,source\n"
            "kursus1@example.dk,Kim Kursist,2025-03-01,tilmelding på kurset i Aarhus\n"
            "kursus2@example.dk,Lone Kursist,2025-03-02T14:05:00+01:00,messestand\n"
            "kursus3@example.dk,Mads Kursist,,\n"
            f"{people[5][0]},{people[5][1]},2025-03-03,\n"
        ).encode()
        job = jobs.create_job(data, "kursister.csv", events_id, actor=owner, ip="203.0.113.0")
        choices = {str(f): str(p) for p, f in (job.mapping or {}).items() if f}
        jobs.queue_job(job, choices, actor=owner, ip="203.0.113.0")
        assert run_next_import() == 1

        # Policy version 2, effective today: the events from here on name it.
        today = datetime.now(UTC).date().isoformat()
        policy_v2 = POLICY_FILE.read_text(encoding="utf-8").replace(
            "Dato for seneste opdatering: 30.10.2023",
            f"Dato for seneste opdatering: {date.fromisoformat(today):%d.%m.%Y}\n\n"
            "Vi gemmer nu også kvittering for dit samtykke.",
        )
        policy_v2 = (
            f"---\ntitle: Persondatapolitik\neffective: {today}\n---\n"
            + policy_v2.split("---\n", 2)[2]
        )
        import_policy(policy_v2.encode(), actor=owner, ip="203.0.113.0")

        for email, name in people[21:26]:
            self.sign_up(email, name, ["nyhedsbrev", "arrangementer"], "api")
        self.drain()
        for email, _name in people[21:25]:
            self.confirm(email)

        # One-click unsubscribe (RFC 8058) from the newsletter.
        with self.request("/unsubscribe/one-click") as evidence:
            payload = self.payload("newsletter.unsubscribe", people[6][0], (news_id,))
            unsubscribe(payload, Channel.ONE_CLICK, evidence)
        # The unsubscribe page, all lists.
        with self.request("/unsubscribe") as evidence:
            payload = self.payload("newsletter.unsubscribe", people[7][0])
            unsubscribe(payload, Channel.UNSUBSCRIBE_PAGE, evidence)
        # The preference page: leave the newsletter, ask for the events list, switch language.
        email = people[10][0]
        spoken = db.session.scalar(sa.select(Subscriber.locale).where(Subscriber.email == email))
        with self.request("/manage") as evidence:
            payload = self.payload("newsletter.manage", email)
            outcome = update_preferences(
                payload, {events_id}, "da" if spoken == "en" else "en", evidence
            )
        assert outcome.withdrawn, outcome
        assert outcome.requested, outcome
        assert outcome.locale_changed, outcome
        self.confirm(email)
        # A staff member unsubscribes someone who asked by phone.
        with self.request("/admin/subscribers/unsubscribe") as evidence:
            withdraw_by_staff(
                self.subscriber_id(people[8][0]),
                list_ids=None,
                actor=owner,
                evidence=evidence,
                ip="203.0.113.0",
            )
        # A hard bounce suppresses an address.
        suppress_after_bounce(
            people[9][0], f"550 5.1.1 <{people[9][0]}>: Recipient address rejected: User unknown"
        )
        # One full erasure (GDPR Art. 17) by staff, of a subscriber with several events.
        with self.request("/admin/subscribers/erase") as evidence:
            erase_subscriber(
                self.subscriber_id(people[4][0]),
                channel=Channel.STAFF,
                actor=owner,
                evidence=evidence,
                ip="203.0.113.0",
            )
        # Life goes on after the erasure.
        self.sign_up("sen.tilmelding@example.dk", "Sen Tilmelding", ["nyhedsbrev"], "form")
        self.drain()
        self.confirm("sen.tilmelding@example.dk")
        db.session.commit()


def address(number: int, name: str) -> str:
    """A made-up address for a made-up person: first name (ASCII) and a number."""
    first = name.split()[0].lower()
    for letter, spelled in (("æ", "ae"), ("ø", "oe"), ("å", "aa")):
        first = first.replace(letter, spelled)
    return f"{first}{number}@example.dk"


def dump_database(engine: sa.Engine) -> dict[str, Any]:
    """Every table's rows, parents before children, in JSON-ready values."""
    metadata = sa.MetaData()
    metadata.reflect(engine)
    tables: dict[str, Any] = {}
    with engine.connect() as conn:
        revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        for table in metadata.sorted_tables:
            if table.name == "alembic_version":
                continue
            order = list(table.primary_key.columns) or list(table.columns)
            rows = conn.execute(sa.select(table).order_by(*order)).all()
            tables[table.name] = {
                "columns": [c.name for c in table.columns],
                "rows": [
                    [_json_value(c, v) for c, v in zip(table.columns, row, strict=True)]
                    for row in rows
                ],
            }
    return {"revision": revision, "settings": SETTINGS, "tables": tables}


def _json_value(column: sa.Column[Any], value: Any) -> Any:
    """A stored value as JSON: timestamps (stored as naive UTC) in ISO with +00:00."""
    if value is None:
        return None
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        raise TypeError(f"{column.table.name}.{column.name} holds bytes")
    return value


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)

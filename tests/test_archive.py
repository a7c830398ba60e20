"""The public archive: only public, sent campaigns; no personal data; no cookies; Atom."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from xml.etree import ElementTree as ET

from flask.testing import FlaskClient
from sqlalchemy import update

from newsletter.campaigns.service import cancel_campaign, create_campaign, start_campaign
from newsletter.extensions import db
from newsletter.models import Campaign, MailingList

from .fixtures.mailflow import text_of

ATOM = "{http://www.w3.org/2005/Atom}"
BODY = "# Nyt fra os\n\nHej {{ name }}!\n\nLæs [mere](https://inklusio.dk/nyt).\n"


def campaign(subject: str, *, public: bool = True, start: bool = True) -> Campaign:
    """A campaign to the default list, started (sent to whoever is subscribed)."""
    made = create_campaign("nyhedsbrev", subject, BODY)
    if start:
        start_campaign(made.id)
    if public:
        db.session.execute(update(Campaign).where(Campaign.id == made.id).values(is_public=True))
        db.session.commit()
    return made


def pages(client: FlaskClient, *ids: int) -> list:
    """GET the archive's index, the feed and the given web views."""
    paths = ["/archive", "/archive/feed.atom", *(f"/archive/{i}" for i in ids)]
    return [client.get(path) for path in paths]


def test_only_public_sent_campaigns_are_listed_newest_first(
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    subscribed("reader@example.org", name="Reader")
    first = campaign("Første nummer")
    deliver()  # done
    second = campaign("Andet nummer")  # still sending
    hidden = campaign("Ikke offentlig", public=False)
    draft = campaign("Kladde", start=False)
    cancelled = campaign("Aflyst")
    cancel_campaign(cancelled.id)

    page = client.get("/archive")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert text.index("Andet nummer") < text.index("Første nummer")
    for subject in ("Ikke offentlig", "Kladde", "Aflyst"):
        assert subject not in text
    assert client.get(f"/archive/{first.id}").status_code == 200
    assert client.get(f"/archive/{second.id}").status_code == 200
    for other in (hidden, draft, cancelled):
        assert client.get(f"/archive/{other.id}").status_code == 404
    assert client.get("/archive/999999").status_code == 404


def test_web_view_and_feed_carry_no_personal_data(
    client: FlaskClient,
    default_list: MailingList,
    subscribed: Callable[..., EmailMessage],
    deliver: Callable[[], list[EmailMessage]],
) -> None:
    subscribed("reader@example.org", name="Zyxa Reader")
    sent = campaign("Nyt i november")
    [mail] = deliver()
    assert "Hej Zyxa Reader!" in text_of(mail)  # the mail itself was personal

    for response in pages(client, sent.id):
        body = response.get_data(as_text=True)
        assert response.status_code == 200
        assert "Nyt i november" in body
        assert "Zyxa" not in body
        assert "reader@example.org" not in body
        assert "/unsubscribe/" not in body
        assert "/manage/" not in body
        assert "NLPH" not in body  # no placeholder left over
    view = client.get(f"/archive/{sent.id}").get_data(as_text=True)
    assert "Hej !" in view  # as for a subscriber without a name
    assert 'href="https://inklusio.dk/nyt"' in view
    assert "/subscribe?list=nyhedsbrev" in view


def test_archive_sets_no_cookie_and_loads_nothing_from_elsewhere(
    client: FlaskClient, default_list: MailingList
) -> None:
    sent = campaign("Nyt i november")
    for response in [*pages(client, sent.id), client.get("/archive?page=2")]:
        assert "Set-Cookie" not in response.headers
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["Referrer-Policy"] == "no-referrer"
    view = client.get(f"/archive/{sent.id}").get_data(as_text=True)
    assert "<script" not in view
    assert " style=" not in view
    assert 'src="http' not in view


def test_a_foreign_image_never_reaches_the_web_view(
    client: FlaskClient, default_list: MailingList
) -> None:
    made = create_campaign(
        "nyhedsbrev", "Billeder", "![pixel](https://tracker.example/p.gif)\n\n<script>x</script>"
    )
    start_campaign(made.id)
    db.session.execute(update(Campaign).where(Campaign.id == made.id).values(is_public=True))
    db.session.commit()
    view = client.get(f"/archive/{made.id}").get_data(as_text=True)
    assert "tracker.example" not in view
    assert "<script>x" not in view


def test_atom_feed_is_valid_atom_with_the_entries(
    client: FlaskClient, default_list: MailingList
) -> None:
    first = campaign("Første nummer")
    second = campaign("Andet nummer")
    campaign("Ikke offentlig", public=False)
    response = client.get("/archive/feed.atom")
    assert response.status_code == 200
    assert response.mimetype == "application/atom+xml"
    root = ET.fromstring(response.data)  # noqa: S314 - our own output
    assert root.tag == f"{ATOM}feed"
    for name in ("id", "title", "updated", "author"):
        assert root.find(f"{ATOM}{name}") is not None, name
    links = {link.get("rel"): link.get("href") for link in root.findall(f"{ATOM}link")}
    assert links == {
        "self": "http://newsletter.test/archive/feed.atom",
        "alternate": "http://newsletter.test/archive",
    }
    entries = root.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries] == ["Andet nummer", "Første nummer"]
    ids = [e.findtext(f"{ATOM}id") for e in entries]
    assert ids == [
        f"http://newsletter.test/archive/{second.id}",
        f"http://newsletter.test/archive/{first.id}",
    ]
    for entry in entries:
        assert entry.find(f"{ATOM}updated").text.endswith("Z")
        assert entry.find(f"{ATOM}link").get("rel") == "alternate"
        content = entry.find(f"{ATOM}content")
        assert content.get("type") == "html"
        assert "<h1>Nyt fra os</h1>" in content.text
    assert root.findtext(f"{ATOM}updated") == entries[0].findtext(f"{ATOM}updated")


def test_empty_archive_and_feed(client: FlaskClient, default_list: MailingList) -> None:
    assert "Nothing has been published" in client.get("/archive").get_data(as_text=True)
    root = ET.fromstring(client.get("/archive/feed.atom").data)  # noqa: S314 - our own output
    assert root.findall(f"{ATOM}entry") == []
    assert root.findtext(f"{ATOM}updated")

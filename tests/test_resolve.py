"""Resolving contact keys (ids, emails, external ids) against the sandbox on loopback."""

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aioresponses import aioresponses

from importer.errors import AuthError, ConfigError, ImporterError
from importer.resolve import ContactResolver, Resolution
from importer.sandbox import (
    SHARED_EMAIL,
    SHARED_EMAIL_CONTACT_IDS,
    SHARED_EXTERNAL_ID,
    SHARED_EXTERNAL_ID_CONTACT_IDS,
    Sandbox,
    SandboxSettings,
    running_sandbox,
    seeded_contact,
)
from importer.send import Sender, SenderSettings

CONTACTS = "/v1/contacts"
SEEDED = 1000


def email_of(n: int) -> str:
    """The primary email of the n-th seeded contact (id 10000 + n)."""
    return seeded_contact(n).emails[0].value


def contact_gets(sandbox: Sandbox) -> int:
    """How many `GET /v1/contacts` the sandbox has answered (lookups and pages alike)."""
    return sandbox.stats.count("GET", CONTACTS)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(SandboxSettings(limits=())) as sandbox:
        yield sandbox


@pytest.fixture
async def sender(sandbox: Sandbox) -> AsyncIterator[Sender]:
    async with aiohttp.ClientSession() as session:
        yield Sender(
            session, sandbox.api_key, SenderSettings(base_url=sandbox.base_url, rate=1000.0)
        )


@pytest.fixture
def index_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "contacts.sqlite"


async def resolve_one(resolver: ContactResolver, key: str) -> Resolution:
    return (await resolver.resolve_many([key]))[key]


# -- bare ids --------------------------------------------------------------------------------


async def test_bare_ids_resolve_to_themselves_without_a_request(sandbox, sender, index_path):
    resolver = ContactResolver(sender, index_path=index_path)
    found = await resolver.resolve_many(["10001", "99999999"])
    assert found == {
        "10001": Resolution(10001, found_by="id"),
        "99999999": Resolution(99999999, found_by="id"),
    }
    assert contact_gets(sandbox) == 0
    assert not index_path.exists()  # no external id asked for: no index built


async def test_a_key_of_no_known_kind_is_an_error(sender):
    resolver = ContactResolver(sender, index_path=None)
    found = await resolver.resolve_many(["phone:555", ""])
    assert found["phone:555"].contact_id is None
    assert "phone:555 is not a contact id" in found["phone:555"].error
    assert found[""] == Resolution(None, "contact is blank")


# -- emails ----------------------------------------------------------------------------------


async def test_an_email_resolves_ignoring_case_and_surrounding_spaces(sandbox, sender):
    resolver = ContactResolver(sender, index_path=None)
    key = f"email:  {email_of(1).upper()} "
    assert await resolve_one(resolver, key) == Resolution(10001, found_by="email")


async def test_any_of_a_contacts_emails_resolves(sender):
    work_email = seeded_contact(4).emails[1].value  # mixed case, e.g. ...@Work.Example.com
    resolver = ContactResolver(sender, index_path=None)
    assert await resolve_one(resolver, f"email:{work_email.lower()}") == Resolution(
        10004, found_by="email"
    )


async def test_each_distinct_email_is_looked_up_once_per_run(sandbox, sender):
    resolver = ContactResolver(sender, index_path=None)
    first = await resolver.resolve_many(
        [f"email:{email_of(1)}", f"email: {email_of(1).upper()}", f"email:{email_of(2)}"]
        + [f"email:{email_of(1)}"] * 3
    )
    again = await resolver.resolve_many([f"email:{email_of(2).title()}", "email:nobody@x.org"])
    assert {r.contact_id for r in first.values()} == {10001, 10002}
    assert again[f"email:{email_of(2).title()}"].contact_id == 10002
    assert contact_gets(sandbox) == 3  # 10001, 10002, nobody: once each


async def test_many_emails_are_looked_up_by_a_pool_of_workers(sandbox, sender):
    keys = [f"email:{email_of(n)}" for n in range(1, 9)]  # 8 lookups: fewer than 10 pages
    found = await ContactResolver(sender, index_path=None).resolve_many(keys, concurrency=4)
    assert [found[key].contact_id for key in keys] == list(range(10001, 10009))
    assert contact_gets(sandbox) == 8 + 1  # + the count of contacts (one small page)


async def test_an_unknown_email_is_an_error(sender):
    resolver = ContactResolver(sender, index_path=None)
    found = await resolve_one(resolver, "email:Nobody@Example.org")
    assert found == Resolution(None, "no contact with email nobody@example.org")


async def test_a_shared_email_is_ambiguous_and_names_both_ids(sender):
    resolver = ContactResolver(sender, index_path=None)
    found = await resolve_one(resolver, f"email:{SHARED_EMAIL}")
    first, second = SHARED_EMAIL_CONTACT_IDS
    assert found == Resolution(
        None, f"2 contacts share email {SHARED_EMAIL} (ids {first}, {second})"
    )


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("email:", "email is blank"),
        ("email:   ", "email is blank"),
        ("email:not-an-address", "email not-an-address is not an email address"),
        ("email:@example.org", "email @example.org is not an email address"),
        ("email:ann@", "email ann@ is not an email address"),
        ("email:ann smith@example.org", "email ann smith@example.org is not an email address"),
    ],
)
async def test_a_blank_or_malformed_email_is_an_error_without_a_request(
    sandbox, sender, key, error
):
    resolver = ContactResolver(sender, index_path=None)
    assert await resolve_one(resolver, key) == Resolution(None, error)
    assert contact_gets(sandbox) == 0


async def test_an_archived_contacts_email_is_an_error(sender):
    resolver = ContactResolver(sender, index_path=None)
    found = await resolve_one(resolver, f"email:{email_of(50)}")
    assert found == Resolution(None, f"contact 10050 (email {email_of(50)}) is archived")


async def test_a_refused_key_stops_resolution(sandbox):
    async with aiohttp.ClientSession() as session:
        wrong = Sender(session, "not-the-key", SenderSettings(base_url=sandbox.base_url))
        with pytest.raises(AuthError):
            await ContactResolver(wrong, index_path=None).resolve_many([f"email:{email_of(1)}"])


# -- external ids ----------------------------------------------------------------------------


async def test_an_external_id_resolves_through_the_index(sender):
    resolver = ContactResolver(sender, index_path=None)
    found = await resolver.resolve_many(["external_id:CRM-000005", "external_id: LEGACY-00010 "])
    assert found == {
        "external_id:CRM-000005": Resolution(10005, found_by="external_id"),
        # an entry of external_ids[], not the contact's external_id (CRM-000010)
        "external_id: LEGACY-00010 ": Resolution(10010, found_by="external_id"),
    }


async def test_external_ids_are_compared_exactly(sender):
    resolver = ContactResolver(sender, index_path=None)
    found = await resolve_one(resolver, "external_id:crm-000005")
    assert found == Resolution(None, "no contact with external_id crm-000005")


async def test_an_unknown_or_blank_external_id_is_an_error(sender):
    resolver = ContactResolver(sender, index_path=None)
    found = await resolver.resolve_many(["external_id:CRM-999999", "external_id: "])
    assert found["external_id:CRM-999999"] == Resolution(
        None, "no contact with external_id CRM-999999"
    )
    assert found["external_id: "] == Resolution(None, "external_id is blank")


async def test_a_shared_external_id_is_ambiguous_and_names_both_ids(sender):
    resolver = ContactResolver(sender, index_path=None)
    found = await resolve_one(resolver, f"external_id:{SHARED_EXTERNAL_ID}")
    first, second = SHARED_EXTERNAL_ID_CONTACT_IDS
    assert found == Resolution(
        None, f"2 contacts share external_id {SHARED_EXTERNAL_ID} (ids {first}, {second})"
    )


async def test_an_archived_contacts_external_id_is_an_error(sender):
    resolver = ContactResolver(sender, index_path=None)
    found = await resolver.resolve_many(["external_id:CRM-000050", "external_id:LEGACY-00050"])
    assert found["external_id:CRM-000050"] == Resolution(
        None, "contact 10050 (external_id CRM-000050) is archived"
    )
    assert found["external_id:LEGACY-00050"].error.endswith("is archived")


async def test_the_index_is_built_once_per_run(sandbox, sender):
    resolver = ContactResolver(sender, index_path=None)
    await resolver.resolve_many(["external_id:CRM-000001"])
    pages = contact_gets(sandbox)
    await resolver.resolve_many(["external_id:CRM-000002", "external_id:CRM-000003"])
    assert pages == SEEDED // 100  # 100 per page, following links.next
    assert contact_gets(sandbox) == pages


async def test_the_index_file_is_reused_by_a_later_run(sandbox, sender, index_path):
    notices: list[str] = []
    first = ContactResolver(sender, index_path=index_path)
    assert (await resolve_one(first, "external_id:CRM-000007")).contact_id == 10007
    built = contact_gets(sandbox)

    later = ContactResolver(sender, index_path=index_path, on_notice=notices.append)
    found = await later.resolve_many(["external_id:CRM-000008", "external_id:LEGACY-00020"])

    assert [r.contact_id for r in found.values()] == [10008, 10020]
    assert contact_gets(sandbox) == built  # the later run made no request
    assert any("reused" in notice for notice in notices)


async def test_an_index_older_than_max_age_is_rebuilt(sandbox, sender, index_path):
    await resolve_one(ContactResolver(sender, index_path=index_path), "external_id:CRM-000001")
    built = contact_gets(sandbox)
    stale = ContactResolver(sender, index_path=index_path, max_age=0)
    assert (await resolve_one(stale, "external_id:CRM-000002")).contact_id == 10002
    assert contact_gets(sandbox) == 2 * built


async def test_a_rebuilt_index_finds_contacts_added_since(sandbox, sender, index_path):
    await resolve_one(ContactResolver(sender, index_path=index_path), "external_id:CRM-000001")
    sandbox.store.add_contact(
        seeded_contact(SEEDED + 1)  # id 11001, external_id CRM-001001
    )
    reused = ContactResolver(sender, index_path=index_path)
    assert (await resolve_one(reused, "external_id:CRM-001001")).contact_id is None
    rebuilt = ContactResolver(sender, index_path=index_path, max_age=0)
    assert (await resolve_one(rebuilt, "external_id:CRM-001001")).contact_id == 11001


async def test_refresh_index_rebuilds_now_and_gives_the_count(sandbox, sender, index_path):
    resolver = ContactResolver(sender, index_path=index_path)
    assert await resolver.refresh_index() == SEEDED
    assert contact_gets(sandbox) == SEEDED // 100
    assert (await resolve_one(resolver, "external_id:CRM-000009")).contact_id == 10009
    assert contact_gets(sandbox) == SEEDED // 100  # the refreshed index serves the run


async def test_the_index_file_is_readable_by_its_owner_only(sender, index_path):
    await ContactResolver(sender, index_path=index_path).refresh_index()
    assert index_path.stat().st_mode & 0o777 == 0o600
    assert index_path.parent.stat().st_mode & 0o777 == 0o700


async def test_a_file_that_is_not_an_index_is_left_alone(sender, tmp_path):
    other = tmp_path / "ledger.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE entries (key TEXT)")
    db.close()
    with pytest.raises(ConfigError, match="is not a contact index"):
        await ContactResolver(sender, index_path=other).refresh_index()
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not SQLite at all" * 10)
    with pytest.raises(ConfigError, match="is not a contact index"):
        await ContactResolver(sender, index_path=text).refresh_index()
    assert text.read_text().startswith("hello")


async def test_an_index_that_cannot_be_listed_stops_the_run(sandbox):
    async with aiohttp.ClientSession() as session:
        lost = Sender(
            session,
            sandbox.api_key,
            SenderSettings(base_url=sandbox.root_url + "/nowhere", max_attempts=1),
        )
        with pytest.raises(ImporterError, match="cannot list the contacts: GET /contacts"):
            await ContactResolver(lost, index_path=None).resolve_many(["external_id:CRM-1"])


# -- the API's id may be a string ------------------------------------------------------------


async def test_contact_ids_given_as_strings_are_accepted():
    base = "https://api.example.test/v1"
    page = {
        "data": [
            {"id": "20001", "external_id": "A-1", "external_ids": [], "archived_at": None},
            {"id": 20002, "external_id": None, "external_ids": ["B-2"], "archived_at": None},
            {"id": "20003", "emails": [{"type": "work", "value": "Ann@Example.org"}]},
        ],
        "links": {"next": None},
    }
    listed = {
        "data": [{"id": "20004", "emails": [{"type": "work", "value": "Bo@Example.org"}]}],
        "links": {"next": None},
    }
    async with aiohttp.ClientSession() as session:
        sender = Sender(session, "key", SenderSettings(base_url=base, rate=1000.0))
        with aioresponses() as mocked:
            mocked.get(f"{base}/contacts?per_page=100", payload=page)
            found = await ContactResolver(sender, index_path=None).resolve_many(
                ["external_id:A-1", "external_id:B-2", "email:ann@example.org"]
            )
            mocked.get(f"{base}/contacts?email=bo@example.org&per_page=100", payload=listed)
            alone = await ContactResolver(sender, index_path=None).resolve_many(
                ["email:bo@example.org"]
            )
    assert [r.contact_id for r in found.values()] == [20001, 20002, 20003]  # one scan
    assert alone["email:bo@example.org"] == Resolution(20004, found_by="email")  # one lookup

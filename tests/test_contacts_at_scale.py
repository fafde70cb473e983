"""Contacts at scale (issue 13): the fewest requests, never the wrong account, and the contact
that is not there yet. Every test runs against the sandbox on loopback and counts what it saw.

"Contact reads" are the `GET /v1/contacts` the sandbox answered. Every run makes one before
anything else: the key check (`GET /contacts?per_page=1`), whose `meta.total` is also the
count of contacts the resolver plans with. So a run's contact reads are 1 + the resolver's,
and the goal `≤ min(distinct keys, ⌈contacts ÷ 100⌉) + 1` counts the key check as the + 1.
"""

import csv
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from importer.cli import main
from importer.contact_index import (
    Account,
    ContactIndex,
    IndexedContact,
    normalise_base_url,
    open_index,
)
from importer.records import NewContact
from importer.resolve import ContactResolver
from importer.sandbox import (
    Contact,
    Sandbox,
    SandboxSettings,
    running_sandbox,
    sandbox_in_thread,
    seeded_contact,
)
from importer.send import Sender, SenderSettings
from tests.conftest import QUICK_RATE, ROOT, rows_of

CONTACTS = "/v1/contacts"
BY_EMAIL = "contact: {email: Email}\nactivity: {type: Type, note: Note}\n"
BY_EXTERNAL_ID = "contact: {external_id: Legacy ID}\nactivity: {type: Type}\n"
CREATING = (
    "contact: {email: Email, create: {first_name: First, last_name: Last, phone: Phone}}\n"
    "activity: {type: Type, note: Note}\n"
)


def contact_reads(sandbox: Sandbox) -> int:
    return sandbox.stats.count("GET", CONTACTS)


def contacts_created(sandbox: Sandbox) -> int:
    return sandbox.stats.count("POST", CONTACTS)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def import_args(base_url: str, tmp_path: Path, data: Path, mapping: str, results: str) -> list[str]:
    mapping_path = tmp_path / "m.yaml"
    mapping_path.write_text(mapping, encoding="utf-8")
    return [
        "run",
        str(data),
        "-m",
        str(mapping_path),
        "--base-url",
        base_url,
        "--rate",
        QUICK_RATE,
        "--ledger",
        str(tmp_path / "state" / "ledger.sqlite"),
        "--results",
        str(tmp_path / results),
        "--force",
        "-q",
    ]


def run(sandbox: Sandbox, tmp_path: Path, data: Path, mapping: str, *extra: str) -> int:
    os.environ["GIVEBUTTER_API_KEY"] = sandbox.api_key  # the fixtures restore it
    return main([*import_args(sandbox.base_url, tmp_path, data, mapping, "r.csv"), *extra])


def fast(sandbox: Sandbox) -> SenderSettings:
    return SenderSettings(base_url=sandbox.base_url, rate=1000.0)


def email_of(n: int) -> str:
    return seeded_contact(n).emails[0].value


def live(n: int) -> bool:
    """Whether the n-th seeded contact can be given activities (not archived)."""
    return n % 50 != 0


@pytest.fixture(autouse=True)
def _key_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIVEBUTTER_API_KEY", "unset")


@pytest.fixture
def sandbox_of() -> Iterator:
    """Start sandboxes of a given size (no rate limit), stopped at the end of the test."""
    with_stack: list = []

    def start(contacts: int = 1000, **settings) -> Sandbox:
        context = sandbox_in_thread(SandboxSettings(limits=(), contacts=contacts, **settings))
        with_stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(with_stack):
        context.__exit__(None, None, None)


# -- the fewest requests ---------------------------------------------------------------------


def test_10_emails_among_50000_contacts_are_10_lookups_and_a_rerun_none(sandbox_of, tmp_path):
    sandbox = sandbox_of(50_000)
    people = [7, 4_999, 12_345, 20_001, 27_777, 33_333, 38_911, 41_234, 46_667, 49_999]
    rows = [[f" {email_of(n).upper()} ", "note", f"call {i}"] for i, n in enumerate(people * 3)]
    data = write_csv(tmp_path / "ten.csv", ["Email", "Type", "Note"], rows)

    assert run(sandbox, tmp_path, data, BY_EMAIL) == 0
    first = contact_reads(sandbox)
    results = rows_of(tmp_path / "r.csv")
    assert [int(r["contact_id"]) for r in results[:10]] == [10_000 + n for n in people]
    assert {r["found_by"] for r in results} == {"email"}
    assert first == 10 + 1 <= min(10, math.ceil(50_000 / 100)) + 1  # + 1: the key check

    assert run(sandbox, tmp_path, data, BY_EMAIL) == 0  # within --contacts-max-age
    assert contact_reads(sandbox) - first == 1  # the key check only: 0 contact reads
    assert {r["status"] for r in rows_of(tmp_path / "r.csv")} == {"skipped"}


def test_5000_emails_among_3000_contacts_are_one_scan_and_a_rerun_none(sandbox_of, tmp_path):
    sandbox = sandbox_of(3_000)
    emails = [email_of(n) for n in range(1, 3_001)] + [f"gone{i}@old.example" for i in range(2_000)]
    rows = [[email, "note", "n"] for email in emails]
    data = write_csv(tmp_path / "many.csv", ["Email", "Type", "Note"], rows)

    assert run(sandbox, tmp_path, data, BY_EMAIL, "--dry-run", "--resolve") == 1
    first = contact_reads(sandbox)
    assert first == 30 + 1 <= min(5_000, math.ceil(3_000 / 100)) + 1
    results = rows_of(tmp_path / "r.csv")
    found = {int(r["row"]) - 2: r for r in results if r["contact_id"]}
    assert len(found) == 3_000 - 3_000 // 50  # every live contact; archived ones are errors
    assert all(int(r["contact_id"]) == 10_001 + i for i, r in found.items())
    assert sum(r["error"].startswith("no contact with email gone") for r in results) == 2_000

    assert run(sandbox, tmp_path, data, BY_EMAIL, "--dry-run", "--resolve") == 1
    assert contact_reads(sandbox) - first == 1  # the key check only
    assert rows_of(tmp_path / "r.csv") == results


async def test_lookups_give_way_to_a_scan_across_chunks(tmp_path):
    async with (
        running_sandbox(SandboxSettings(limits=())) as sandbox,
        aiohttp.ClientSession() as session,
    ):  # 1,000: 10 pages
        sender = Sender(session, sandbox.api_key, fast(sandbox))
        await sender.check_key()
        resolver = ContactResolver(sender, index_path=None)
        for chunk in range(10):  # 4 new emails a chunk, as a file read 4 rows at a time
            keys = [f"email:{email_of(n)}" for n in range(4 * chunk + 1, 4 * chunk + 5)]
            found = await resolver.resolve_many(keys)
            assert [r.contact_id for r in found.values()] == [
                10_000 + n for n in range(4 * chunk + 1, 4 * chunk + 5)
            ]
        resolver.close()
    # Lookups until those made and to make reach the 10 pages of a scan, then one scan.
    assert contact_reads(sandbox) == 1 + 4 + 4 + 10  # key check, 2 chunks of lookups, a scan


# -- never the wrong account -----------------------------------------------------------------


def test_an_index_made_against_another_server_is_never_used(sandbox_of, tmp_path, capsys):
    first, other = sandbox_of(), sandbox_of()
    moved = Contact(id=30_001, first_name="Ada", last_name="Moved", external_id="MOVED-1")
    first.store.add_contact(moved)
    other.store.add_contact(
        Contact(id=20_001, first_name="Ada", last_name="Moved", external_id="MOVED-1")
    )
    data = write_csv(tmp_path / "m.csv", ["Legacy ID", "Type"], [["MOVED-1", "note"]])

    assert run(first, tmp_path, data, BY_EXTERNAL_ID) == 0
    assert rows_of(tmp_path / "r.csv")[0]["contact_id"] == "30001"
    capsys.readouterr()
    assert run(other, tmp_path, data, BY_EXTERNAL_ID) == 0

    assert rows_of(tmp_path / "r.csv")[0]["contact_id"] == "20001"
    said = [line for line in capsys.readouterr().err.splitlines() if "another server" in line]
    assert said == [
        f"contact index {tmp_path / 'state' / 'contacts.sqlite'}: it was made for another"
        f" server ({first.base_url}); started afresh"
    ]
    assert contact_reads(other) == 1 + 11  # key check, and a scan of 1,001 contacts


async def test_an_index_made_with_another_key_is_never_used(tmp_path):
    path = tmp_path / "contacts.sqlite"
    async with (
        running_sandbox(SandboxSettings(limits=(), api_key="the-right-key")) as sandbox,
        aiohttp.ClientSession() as session,
    ):
        sender = Sender(session, "the-right-key", fast(sandbox))
        other_key = Sender(session, "another-key", fast(sandbox))
        index, _ = open_index(path, Account(sandbox.base_url, other_key.key_fingerprint))
        wrong = IndexedContact(99_999, False, (email_of(7),), ("CRM-000007",))
        index.replace_with_scan([wrong], time.time())
        index.close()
        notices: list[str] = []
        resolver = ContactResolver(sender, index_path=path, on_notice=notices.append)
        found = await resolver.resolve_many(["external_id:CRM-000007", f"email:{email_of(7)}"])
        resolver.close()
    assert [r.contact_id for r in found.values()] == [10_007, 10_007]
    assert [n for n in notices if "another API key" in n] == [
        f"contact index {path}: it was made with another API key; started afresh"
    ]
    stored = path.read_bytes()
    assert b"the-right-key" not in stored and b"another-key" not in stored


async def test_the_same_server_spelt_differently_is_the_same_account(tmp_path):
    assert normalise_base_url("HTTPS://API.Givebutter.com:443/v1/") == (
        "https://api.givebutter.com/v1"
    )
    assert normalise_base_url("http://127.0.0.1:8765/v1") != normalise_base_url(
        "http://127.0.0.1:8766/v1"
    )


# -- the key is scrubbed from what is shown, never from the data -----------------------------


def test_a_3_character_key_leaves_external_ids_intact(sandbox_of, tmp_path):
    sandbox = sandbox_of(api_key="RM-")  # inside every seeded external id: CRM-000001
    rows = [[f"CRM-{n:06d}", "note"] for n in (3, 4, 5)]
    data = write_csv(tmp_path / "k.csv", ["Legacy ID", "Type"], rows)
    assert run(sandbox, tmp_path, data, BY_EXTERNAL_ID) == 0
    assert [r["contact_id"] for r in rows_of(tmp_path / "r.csv")] == ["10003", "10004", "10005"]


async def test_a_3_character_key_leaves_dates_intact_and_is_scrubbed_from_messages():
    key = "00Z"  # inside every date the API writes: 2023-02-01T15:50:00.000000Z
    async with (
        running_sandbox(SandboxSettings(limits=(), api_key=key)) as sandbox,
        aiohttp.ClientSession() as session,
    ):
        sender = Sender(session, key, SenderSettings(base_url=sandbox.base_url, rate=1000.0))
        contact = await sender.request("GET", "/contacts/10050")
        missing = await sender.request("GET", "/nothing-00Z-here")
    assert contact.json_body["archived_at"] == "2023-02-01T15:50:00.000000Z"
    assert contact.json_body["created_at"] == "2023-01-02T15:50:00.000000Z"
    assert "00Z" in missing.text  # the data is what the API sent...
    assert missing.message() == "The route v1/nothing-<API key>-here could not be found."  # ...
    assert "00Z" not in repr(missing)  # ...and what is shown never holds the key


# -- external_ids[] as documented -------------------------------------------------------------


async def test_the_sandbox_serves_external_ids_as_documented_objects():
    async with (
        running_sandbox(SandboxSettings(limits=())) as sandbox,
        aiohttp.ClientSession() as session,
    ):
        sender = Sender(session, sandbox.api_key, fast(sandbox))
        served = (await sender.request("GET", "/contacts/10020")).json_body
    assert served["external_id"] == "CRM-000020"  # LEGACY-00020 is only in external_ids[]
    assert served["external_ids"] == [
        {"id": 1_002_001, "label": "Imported", "external_id": "LEGACY-00020"}
    ]


def test_a_contact_known_only_by_external_ids_is_found(sandbox_of, tmp_path):
    sandbox = sandbox_of()
    rows = [["LEGACY-00020", "note"], ["LEGACY-00030", "sms"]]
    data = write_csv(tmp_path / "legacy.csv", ["Legacy ID", "Type"], rows)
    assert run(sandbox, tmp_path, data, BY_EXTERNAL_ID) == 0
    results = rows_of(tmp_path / "r.csv")
    assert [(r["contact_id"], r["found_by"]) for r in results] == [
        ("10020", "external_id"),
        ("10030", "external_id"),
    ]


# -- the contact that is not there yet -------------------------------------------------------


def migration(tmp_path: Path, people: int = 200, missing: int = 10) -> tuple[Path, list[str]]:
    """Two rows per person; `missing` of the people (5%) are not in the sandbox."""
    known = [n for n in range(101, 1_000) if live(n)][: people - missing]
    rows = [[email_of(n), "", "", "", "note", f"a {n}"] for n in known]
    new = [f"new.person.{i}@example.net" for i in range(missing)]
    rows += [
        [e, f"New{i}", "Person", f"+1666000{i:04d}", "note", f"a {e}"] for i, e in enumerate(new)
    ]
    rows += [[r[0].upper(), *r[1:5], r[5].replace("a ", "b ")] for r in rows]  # second rows
    header = ["Email", "First", "Last", "Phone", "Type", "Note"]
    return write_csv(tmp_path / "migration.csv", header, rows), new


def people_with(sandbox: Sandbox, email: str) -> int:
    return sandbox.store.list_contacts(email=email)[1]


def test_missing_people_are_created_once_with_create_contacts(sandbox_of, tmp_path):
    sandbox = sandbox_of()
    data, new = migration(tmp_path)
    assert run(sandbox, tmp_path, data, CREATING, "--create-contacts") == 0
    results = rows_of(tmp_path / "r.csv")
    assert contacts_created(sandbox) == 10 and sandbox.store.count_contacts() == 1_010
    assert all(people_with(sandbox, email) == 1 for email in new)
    created = [r for r in results if r["found_by"] == "created"]
    assert len(created) == 20 and {r["status"] for r in results} == {"created"}
    assert sandbox.store.count_activities() == 400
    reads = contact_reads(sandbox)
    assert reads == 1 + 10  # key check; 200 emails among 1,000 contacts: one scan of 10 pages

    assert run(sandbox, tmp_path, data, CREATING, "--create-contacts") == 0
    assert contacts_created(sandbox) == 10 and contact_reads(sandbox) == reads + 1
    assert {r["status"] for r in rows_of(tmp_path / "r.csv")} == {"skipped"}


def test_without_create_contacts_the_mapping_creates_nobody_and_says_how(sandbox_of, tmp_path):
    sandbox = sandbox_of()
    data, _ = migration(tmp_path)
    assert run(sandbox, tmp_path, data, CREATING) == 1
    results = rows_of(tmp_path / "r.csv")
    assert contacts_created(sandbox) == 0
    hint = (
        "no contact with email new.person.0@example.net"
        " (the mapping can create it: add --create-contacts)"
    )
    assert next(r["error"] for r in results if r["status"] == "invalid") == hint


def test_create_contacts_without_create_in_the_mapping_stops_at_once(sandbox_of, tmp_path, capsys):
    sandbox = sandbox_of()
    data, _ = migration(tmp_path)
    assert run(sandbox, tmp_path, data, BY_EMAIL, "--create-contacts") == 2
    err = capsys.readouterr().err
    assert "the mapping does not say how" in err and "(--create-contacts)" in err
    assert sandbox.stats.count() == 0


def test_a_dry_run_says_would_create_contact_and_creates_nothing(sandbox_of, tmp_path):
    sandbox = sandbox_of()
    data, _ = migration(tmp_path)
    code = run(sandbox, tmp_path, data, CREATING, "--create-contacts", "--dry-run", "--resolve")
    results = rows_of(tmp_path / "r.csv")
    assert code == 0 and contacts_created(sandbox) == 0
    would = [r for r in results if r["warning"]]
    assert len(would) == 20 and {r["status"] for r in would} == {"valid"}
    assert would[0]["warning"] == (
        "would create contact (no contact with email new.person.0@example.net)"
    )


def test_an_archived_persons_email_is_never_created_again(sandbox_of, tmp_path):
    sandbox = sandbox_of()
    rows = [
        [email_of(50), "Maria", "Gone", "", "note", "x"],  # contact 10050 is archived
        ["fresh@example.net", "", "Person", "", "note", "y"],  # no first name: cannot be made
    ]
    data = write_csv(tmp_path / "a.csv", ["Email", "First", "Last", "Phone", "Type", "Note"], rows)
    assert run(sandbox, tmp_path, data, CREATING, "--create-contacts") == 1
    errors = [r["error"] for r in rows_of(tmp_path / "r.csv")]
    assert errors == [
        f"contact 10050 (email {email_of(50)}) is archived",
        "no contact with email fresh@example.net, and none can be made: its first name is blank",
    ]
    assert contacts_created(sandbox) == 0


async def test_a_creation_whose_answer_was_lost_is_found_not_made_again(tmp_path, monkeypatch):
    """The crash window: the POST landed, the process died before the index recorded it."""

    class Killed(BaseException):
        pass

    record = ContactIndex.record_lookups
    began: list[str] = []

    def dies_after_a_creation(self, answers, at=None):
        if began:
            raise Killed
        record(self, answers, at)

    path = tmp_path / "contacts.sqlite"
    key = "email:late@example.net"
    new = {key: NewContact("Late", "Comer", "")}
    async with (
        running_sandbox(SandboxSettings(limits=())) as sandbox,
        aiohttp.ClientSession() as session,
    ):
        sender = Sender(session, sandbox.api_key, fast(sandbox))
        with monkeypatch.context() as patched:
            patched.setattr(ContactIndex, "record_lookups", dies_after_a_creation)
            begin = ContactIndex.begin_creations
            patched.setattr(
                ContactIndex,
                "begin_creations",
                lambda self, emails, at=None: (began.extend(emails), begin(self, emails, at)),
            )
            killed = ContactResolver(sender, index_path=path, create_contacts=True)
            with pytest.raises(Killed):
                await killed.resolve_many([key], new_contacts=new)
            killed.close()
        assert contacts_created(sandbox) == 1  # it landed; the index never heard
        reads = contact_reads(sandbox)

        again = ContactResolver(sender, index_path=path, create_contacts=True)
        found = (await again.resolve_many([key], new_contacts=new))[key]
        again.close()
        assert found.contact_id == sandbox.store.list_contacts(email="late@example.net")[0][0].id
        assert contacts_created(sandbox) == 1  # not posted again: looked up first
        assert contact_reads(sandbox) == reads + 1
        assert people_with(sandbox, "late@example.net") == 1


def test_kill_9_while_creating_then_rerun_creates_each_person_once(tmp_path):
    data, new = migration(tmp_path)
    with sandbox_in_thread(SandboxSettings(limits=())) as sandbox:
        command = [
            sys.executable,
            "-m",
            "importer",
            *import_args(sandbox.base_url, tmp_path, data, CREATING, "killed.csv"),
            "--create-contacts",
        ]
        env = {**os.environ, "GIVEBUTTER_API_KEY": sandbox.api_key}
        slow = [*command[:-1], "--rate", "5/s", "--create-contacts"]  # a later --rate wins
        victim = subprocess.Popen(
            slow, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while contacts_created(sandbox) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert 3 <= contacts_created(sandbox) < 10  # it died while creating
        assert sandbox.store.count_activities() == 0

        # The same command, in-process (only the victim needs a process of its own).
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GIVEBUTTER_API_KEY", sandbox.api_key)
            assert main(command[3:]) == 0
        assert [people_with(sandbox, email) for email in new] == [1] * 10
        assert sandbox.store.count_contacts() == 1_010
        assert sandbox.store.count_activities() == 400
        assert {r["status"] for r in rows_of(tmp_path / "killed.csv")} == {"created"}

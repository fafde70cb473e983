"""The contact index file: one account's answers, with their age, and creations begun."""

import hashlib
import hmac
import sqlite3
from pathlib import Path

from importer.contact_index import Account, ContactMatch, IndexedContact, open_index

BASE = "https://api.givebutter.com/v1"
HOUR = 3600.0


def account(key: str = "key-one", base_url: str = BASE) -> Account:
    return Account(base_url, lambda salt: hmac.new(salt, key.encode(), hashlib.sha256).hexdigest())


def test_an_index_of_an_earlier_version_is_started_afresh_and_says_why(tmp_path: Path):
    path = tmp_path / "contacts.sqlite"
    with sqlite3.connect(path) as db:  # what version 1 wrote: no account recorded
        db.execute(f"PRAGMA application_id = {0x47424349}")  # "GBCI"
        db.execute("PRAGMA user_version = 1")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE external_ids (value TEXT, contact_id INTEGER, archived INTEGER)")
        db.execute("INSERT INTO external_ids VALUES ('CRM-1', 99, 0)")
    db.close()
    index, why = open_index(path, account())
    assert why == (
        f"contact index {path}: it was made by an earlier version, which did not record the"
        " account; started afresh"
    )
    assert index.answers("external_id", ["CRM-1"], max_age=HOUR) == {}
    index.close()
    again, why = open_index(path, account())
    assert why is None  # now it records its account
    again.close()


def test_the_same_account_reopens_its_index_silently(tmp_path: Path):
    path = tmp_path / "contacts.sqlite"
    index, why = open_index(path, account())
    index.replace_with_scan([IndexedContact(7, False, ("a@x.org",), ("E-7",))], began_at=100.0)
    index.close()
    index, why = open_index(path, account())
    assert why is None
    assert index.answers("external_id", ["E-7", "E-8"], max_age=HOUR, now=110.0) == {
        "E-7": [ContactMatch(7, False)],
        "E-8": [],  # a young scan answers every key: no contact has E-8
    }
    assert index.answers("external_id", ["E-7"], max_age=HOUR, now=100.0 + HOUR) == {}
    index.close()


def test_a_lookup_answers_its_email_only_while_young(tmp_path: Path):
    index, _ = open_index(None, account())
    index.record_lookups({"a@x.org": [ContactMatch(7, False)], "b@x.org": []}, at=100.0)
    assert index.answers("email", ["a@x.org", "b@x.org", "c@x.org"], max_age=60, now=150) == {
        "a@x.org": [ContactMatch(7, False)],
        "b@x.org": [],
    }
    assert index.answers("email", ["a@x.org"], max_age=60, now=161) == {}
    index.close()


def test_a_creation_begun_hides_every_older_answer_until_one_newer_comes(tmp_path: Path):
    index, _ = open_index(None, account())
    index.replace_with_scan([], began_at=100.0)  # no contact has new@x.org...
    index.record_lookups({"new@x.org": []}, at=110.0)
    index.begin_creations(["new@x.org"], at=120.0)  # ...and then a POST may have landed
    assert index.answers("email", ["new@x.org"], max_age=HOUR, now=130.0) == {}
    assert index.creations_begun() == {"new@x.org"}
    index.replace_with_scan([IndexedContact(9, False, ("new@x.org",), ())], began_at=140.0)
    assert index.answers("email", ["new@x.org"], max_age=HOUR, now=150.0) == {
        "new@x.org": [ContactMatch(9, False)]
    }
    index.record_lookups({"new@x.org": [ContactMatch(9, False)]}, at=160.0)
    assert index.creations_begun() == set()  # its answer is known now
    index.close()


def test_the_index_keeps_a_salted_fingerprint_never_the_key(tmp_path: Path):
    path = tmp_path / "contacts.sqlite"
    key = "gb-live-0123456789abcdef"
    index, _ = open_index(path, account(key))
    index.close()
    stored = path.read_bytes()
    assert key.encode() not in stored
    assert hashlib.sha256(key.encode()).hexdigest().encode() not in stored  # not a bare hash
    _, why = open_index(path, account("gb-live-other"))
    assert why is not None and "another API key" in why

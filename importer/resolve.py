"""The resolve stage: turn a row's contact key into a Givebutter contact id, or say why not.

A key is what the mapper puts in `MappedRow.contact`: a bare number (a Givebutter contact
id), `email:VALUE` or `external_id:VALUE`. `ContactResolver.resolve_many(keys)` gives one
`Resolution` per distinct key: the contact id and the kind of key that found it, or a plain
one-line error naming the key's kind and value.

What is promised
- A bare id resolves to itself without a request (`found_by` "id"); the POST tells whether
  the contact exists.
- An email is trimmed and lower-cased; a blank one, or one that does not look like an address
  (no `@` with something on each side, or a space inside), is an error without a request.
  Each distinct email is looked up once per resolver (one resolver per run: the cache lives
  as long as it does), with `GET /v1/contacts?email=...` through the run's `Sender`, so the
  lookups share the rate limit and the retry policy of the POSTs. A listed contact counts as
  a match only if one of its addresses (`emails[].value`, `primary_email`) equals the email,
  ignoring case: a loose filter on the API's side cannot make a wrong match.
- An external id is trimmed and compared exactly (case matters: it is another system's
  key). It is found in a local index of every contact's `external_id` and `external_ids[]`,
  built by paging `GET /v1/contacts?per_page=100` along `links.next`. The index is built
  only when an external id is first asked for, at most once per resolver, and kept in a
  SQLite file (`index_path`, created 0600 in a directory created 0700) with its build time;
  a later resolver reuses the file while it is younger than `max_age` seconds, else
  rebuilds it. Without `index_path`, the index lives in memory for this resolver only.
- Never a guess: several contacts with the key is an error naming their ids; so is no
  contact. An archived contact (`archived_at` set) is an error too ("contact 10050 (email x)
  is archived"): the API answers 403 to any activity for it, so the POST would only waste a
  request.
- A lookup that gets no usable answer (the retries are used up, a 5xx, an odd 4xx) is an
  error for that key only, saying what happened. `AuthError` (a 401) propagates: nothing
  more can be done with that key. An index that cannot be built raises `ImporterError`: the
  run cannot resolve what it was asked to.

What is not promised
- The index knows the contacts as they were when it was built: a contact created or given
  an external id since is "not found" until the index is refreshed (`refresh_index()`, the
  `contacts refresh` command, or a smaller `max_age`).
- The index file does not know which account it came from: keep one per account (beside
  the ledger, which has the same rule).
- Overlapping `resolve_many` calls on one resolver are correct but may look the same email
  up twice; calls one after another share the cache.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from importer.errors import ConfigError, ImporterError
from importer.payload import CONTACT_ID_PATTERN
from importer.records import Outcome, Status
from importer.send import ApiResponse, RequestFailed, Sender

EMAIL_PREFIX = "email:"
EXTERNAL_ID_PREFIX = "external_id:"
DEFAULT_MAX_AGE = 86400.0  # seconds: a day
PAGE_SIZE = 100  # the API's largest page

# PRAGMA application_id of an index file ("GBCI"): tells our file from any other SQLite file.
_APPLICATION_ID = 0x47424349
_SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE external_ids (value TEXT NOT NULL, contact_id INTEGER NOT NULL,"
    " archived INTEGER NOT NULL, PRIMARY KEY (value, contact_id)) WITHOUT ROWID",
)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What became of one contact key: the contact id and the kind of key that found it
    (`id`, `email`, `external_id`), or no id and a one-line `error`."""

    contact_id: int | None
    error: str = ""
    found_by: str = ""

    @property
    def ok(self) -> bool:
        """True if a contact id was found."""
        return self.contact_id is not None


@dataclass(frozen=True, slots=True)
class ContactMatch:
    """A contact that carries the key looked for: its id, and whether it is archived."""

    id: int
    archived: bool


@dataclass(slots=True)
class ContactIndex:
    """Contacts by external id (from `external_id` and every `external_ids[]` entry)."""

    built_at: float  # time.time() when the listing began
    contacts: int = 0  # how many contacts were listed
    by_external_id: dict[str, list[ContactMatch]] = field(default_factory=dict)

    def add(self, contact: Mapping[str, Any], contact_id: int) -> None:
        """Index one listed contact under each of its external ids."""
        match = ContactMatch(contact_id, contact.get("archived_at") is not None)
        self.contacts += 1
        for value in _external_ids(contact):
            matches = self.by_external_id.setdefault(value, [])
            if match not in matches:
                matches.append(match)


class ContactResolver:
    """Resolves contact keys for one run, through the run's sender."""

    def __init__(
        self,
        sender: Sender,
        *,
        index_path: Path | None,
        max_age: float = DEFAULT_MAX_AGE,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        """`index_path`: the external-id index file (None: in memory, for this resolver
        only). `max_age`: seconds an index file is reused before it is rebuilt (0: always
        rebuilt). `on_notice`: told, in one line each, when the index is built or reused."""
        self._sender = sender
        self._index_path = Path(index_path) if index_path is not None else None
        self._max_age = max_age
        self._notice = on_notice or (lambda _message: None)
        self._emails: dict[str, Resolution] = {}
        self._index: ContactIndex | None = None
        self._index_lock = asyncio.Lock()

    async def resolve_many(
        self, keys: Iterable[str], *, concurrency: int = 8
    ) -> dict[str, Resolution]:
        """One `Resolution` per distinct key, keyed as given. Emails not yet in the cache
        are looked up by `concurrency` workers; the index is built or loaded if an external
        id is among the keys. Raises `AuthError` on a 401, `ImporterError` if the index
        cannot be built."""
        distinct = list(dict.fromkeys(keys))
        emails = [_email_of(key) for key in distinct if key.startswith(EMAIL_PREFIX)]
        await self._look_up_emails([e for e in emails if _email_problem(e) is None], concurrency)
        if any(key.startswith(EXTERNAL_ID_PREFIX) for key in distinct):
            await self._ensure_index()
        return {key: self._resolve_known(key) for key in distinct}

    async def refresh_index(self) -> int:
        """Rebuild the external-id index now (and save it, with an `index_path`); give how
        many contacts were listed. Raises `ImporterError` if the listing fails."""
        async with self._index_lock:
            self._index = await self._build_index()
        return self._index.contacts

    # -- one key, once its lookups are done ----------------------------------------------

    def _resolve_known(self, key: str) -> Resolution:
        if CONTACT_ID_PATTERN.fullmatch(key):
            return Resolution(int(key), found_by="id")
        if key.startswith(EMAIL_PREFIX):
            email = _email_of(key)
            problem = _email_problem(email)
            return Resolution(None, problem) if problem else self._emails[email]
        if key.startswith(EXTERNAL_ID_PREFIX):
            return self._by_external_id(key.removeprefix(EXTERNAL_ID_PREFIX).strip())
        if not key.strip():
            return Resolution(None, "contact is blank")
        return Resolution(
            None, f"contact {key} is not a contact id (a number), email:... or external_id:..."
        )

    def _by_external_id(self, value: str) -> Resolution:
        if not value:
            return Resolution(None, "external_id is blank")
        assert self._index is not None  # resolve_many built or loaded it
        return _verdict("external_id", value, self._index.by_external_id.get(value, []))

    # -- emails ----------------------------------------------------------------------------

    async def _look_up_emails(self, emails: list[str], concurrency: int) -> None:
        todo = [email for email in dict.fromkeys(emails) if email not in self._emails]
        shared = iter(todo)

        async def worker() -> None:
            for email in shared:  # the workers share one iterator: each email goes to one
                self._emails[email] = await self._look_up_email(email)

        await _run_workers(worker, min(max(1, concurrency), len(todo)))

    async def _look_up_email(self, email: str) -> Resolution:
        params = {"email": email, "per_page": str(PAGE_SIZE)}
        try:
            answer = await self._sender.request("GET", "/contacts", params=params)
        except RequestFailed as failure:
            return Resolution(None, f"could not look up email {email}: {failure.reason}")
        page = _page(answer)
        if page is None:
            return Resolution(None, f"could not look up email {email}: {_answer_words(answer)}")
        contacts, next_url = page
        matches = [m for c in contacts if _has_email(c, email) and (m := _match(c)) is not None]
        if next_url and len(matches) < 2:
            # More than a page listed for one address: the filter was not exact, and the
            # match may be on a page not read. Say so rather than guess.
            return Resolution(
                None, f"email {email}: the API listed more than {PAGE_SIZE} contacts for it"
            )
        return _verdict("email", email, matches)

    # -- the external-id index -------------------------------------------------------------

    async def _ensure_index(self) -> None:
        async with self._index_lock:
            if self._index is None:
                self._index = self._load_fresh_index() or await self._build_index()

    def _load_fresh_index(self) -> ContactIndex | None:
        if self._index_path is None or not self._index_path.exists():
            return None
        index = load_index(self._index_path)
        if index is None:
            return None
        age = time.time() - index.built_at
        if not 0 <= age < self._max_age:
            return None
        self._notice(
            f"contact index: {index.contacts} contacts, built {_duration(age)} ago, reused"
        )
        return index

    async def _build_index(self) -> ContactIndex:
        self._notice("building the contact index (listing every contact)...")
        index = ContactIndex(built_at=time.time())
        skipped = 0
        async for contacts in self._contact_pages():
            for contact in contacts:
                contact_id = _contact_id(contact)
                if contact_id is None:
                    skipped += 1
                else:
                    index.add(contact, contact_id)
        if skipped:
            self._notice(f"contact index: {skipped} contacts without a numeric id left out")
        if self._index_path is not None:
            save_index(self._index_path, index)
        self._notice(f"contact index: {index.contacts} contacts listed")
        return index

    async def _contact_pages(self) -> AsyncIterator[list[Any]]:
        """Each page of `GET /contacts`, following `links.next` until it is null."""
        params: dict[str, str] | None = {"per_page": str(PAGE_SIZE)}
        seen: set[tuple[tuple[str, str], ...]] = set()
        while params is not None:
            marker = tuple(sorted(params.items()))
            if marker in seen:
                raise ImporterError("cannot build the contact index: the API's pages loop")
            seen.add(marker)
            contacts, next_url = await self._contact_page(params)
            yield contacts
            params = _next_params(next_url) if contacts else None

    async def _contact_page(self, params: dict[str, str]) -> tuple[list[Any], str | None]:
        try:
            answer = await self._sender.request("GET", "/contacts", params=params)
        except RequestFailed as failure:
            raise ImporterError(f"cannot build the contact index: {failure.reason}") from None
        page = _page(answer)
        if page is None:
            raise ImporterError(
                f"cannot build the contact index: GET /contacts {_answer_words(answer)}"
            )
        return page


# -- the index file ----------------------------------------------------------------------


def save_index(path: Path, index: ContactIndex) -> None:
    """Write `index` to the file at `path` in one transaction, replacing what it held.
    Creates the file 0600 (its directory 0700) if missing. Raises `ConfigError` if the file
    cannot be written or is not a contact index."""
    rows = [
        (value, match.id, int(match.archived))
        for value, matches in index.by_external_id.items()
        for match in matches
    ]
    with closing(_open_index(path)) as db:
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM meta")
            db.execute("DELETE FROM external_ids")
            db.executemany("INSERT INTO external_ids VALUES (?, ?, ?)", rows)
            meta = {"built_at": repr(index.built_at), "contacts": str(index.contacts)}
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            db.execute("COMMIT")
        except sqlite3.Error as error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise ConfigError(f"cannot write the contact index {path}: {error}") from None


def load_index(path: Path) -> ContactIndex | None:
    """The index stored at `path`, or None if it holds none yet. Raises `ConfigError` if
    the file is not a contact index."""
    with closing(_open_index(path)) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "built_at" not in meta:
            return None
        index = ContactIndex(built_at=float(meta["built_at"]), contacts=int(meta["contacts"]))
        for value, contact_id, archived in db.execute("SELECT * FROM external_ids"):
            index.by_external_id.setdefault(value, []).append(
                ContactMatch(contact_id, bool(archived))
            )
    return index


def _open_index(path: Path) -> sqlite3.Connection:
    """Open (creating if need be) the index file, with its schema in place."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # an existing file keeps the mode its owner gave it
    except OSError as error:
        raise ConfigError(f"cannot create the contact index {path}: {error.strerror}") from None
    else:
        os.fchmod(fd, 0o600)  # whatever the umask; SQLite gives its journal the same mode
        os.close(fd)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        _prepare_schema(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _prepare_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file, recreate it in an index of another version, and
    refuse any other SQLite file (it is not ours to overwrite)."""
    not_ours = ConfigError(f"{path} is not a contact index; give another path")
    try:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    except sqlite3.DatabaseError:
        raise not_ours from None
    if application_id == _APPLICATION_ID and version == _SCHEMA_VERSION:
        return
    if application_id not in (0, _APPLICATION_ID) or (application_id == 0 and tables):
        raise not_ours
    db.execute("BEGIN IMMEDIATE")
    for table in tables:  # an index of another version: it is only a cache
        db.execute(f'DROP TABLE "{table}"')
    for statement in _SCHEMA:
        db.execute(statement)
    db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    db.execute("COMMIT")


# -- reading the API's answers ----------------------------------------------------------


def _page(answer: ApiResponse) -> tuple[list[Any], str | None] | None:
    """A list page's contacts and its `links.next`, or None if the answer is not one."""
    body = answer.json_body
    if not answer.ok or not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return None
    links = body.get("links")
    next_url = links.get("next") if isinstance(links, dict) else None
    return [c for c in body["data"] if isinstance(c, dict)], next_url or None


def _next_params(next_url: str | None) -> dict[str, str] | None:
    """The query of a `links.next` URL, to ask of `/contacts` again: only the query is taken
    from it, so the request still goes to the sender's own base URL."""
    if not isinstance(next_url, str):
        return None
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(next_url).query))
    params.setdefault("per_page", str(PAGE_SIZE))
    return params


def _answer_words(answer: ApiResponse) -> str:
    said = answer.message()
    if not answer.ok:
        return f"the API answered {answer.status}" + (f" ({said})" if said else "")
    return f"the API answered {answer.status} with something other than a list of contacts"


def _contact_id(contact: Mapping[str, Any]) -> int | None:
    """A contact's id as an int (the API may give it as a number or a string)."""
    value = contact.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and CONTACT_ID_PATTERN.fullmatch(value.strip()):
        return int(value)
    return None


def _match(contact: Mapping[str, Any]) -> ContactMatch | None:
    contact_id = _contact_id(contact)
    if contact_id is None:
        return None
    return ContactMatch(contact_id, contact.get("archived_at") is not None)


def _has_email(contact: Mapping[str, Any], email: str) -> bool:
    return email in set(_addresses(contact))


def _addresses(contact: Mapping[str, Any]) -> Iterator[str]:
    emails = contact.get("emails")
    for entry in emails if isinstance(emails, list) else []:
        value = entry.get("value") if isinstance(entry, dict) else None
        if isinstance(value, str):
            yield value.strip().lower()
    primary = contact.get("primary_email")
    if isinstance(primary, str):
        yield primary.strip().lower()


def _external_ids(contact: Mapping[str, Any]) -> list[str]:
    """`external_id` and every entry of `external_ids[]`, trimmed, blanks left out."""
    listed = contact.get("external_ids")
    values = [contact.get("external_id"), *(listed if isinstance(listed, list) else [])]
    found = (str(v).strip() for v in values if isinstance(v, str | int) and not isinstance(v, bool))
    return list(dict.fromkeys(v for v in found if v))


# -- words -------------------------------------------------------------------------------


def _verdict(kind: str, value: str, matches: list[ContactMatch]) -> Resolution:
    """One match resolves (unless archived); none or several are errors, never a guess."""
    distinct = sorted(set(matches), key=lambda m: m.id)
    if not distinct:
        return Resolution(None, f"no contact with {kind} {value}")
    if len(distinct) > 1:
        ids = ", ".join(f"{m.id}{' (archived)' if m.archived else ''}" for m in distinct)
        return Resolution(None, f"{len(distinct)} contacts share {kind} {value} (ids {ids})")
    match = distinct[0]
    if match.archived:
        return Resolution(None, f"contact {match.id} ({kind} {value}) is archived")
    return Resolution(match.id, found_by=kind)


def _email_of(key: str) -> str:
    return key.removeprefix(EMAIL_PREFIX).strip().lower()


def _email_problem(email: str) -> str | None:
    """Why `email` (trimmed, lower-cased) cannot be looked up, or None if it can."""
    if not email:
        return "email is blank"
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in email):
        return f"email {email} is not an email address"
    return None


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


async def _run_workers(worker: Callable[[], Any], count: int) -> None:
    """Run `count` copies of `worker` until all end; if one raises, stop the others and
    raise its error (the first, if several)."""
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None


def given_contact_id(key: str) -> int | None:
    """The Givebutter contact id a key names outright (a bare number), or None for a key
    to look up (`email:…`, `external_id:…`) or a blank one."""
    return int(key) if key and ":" not in key else None


async def resolve_contacts(outcomes: list[Outcome], resolver: ContactResolver) -> None:
    """Give each valid row that names its contact by email or external id its contact id,
    or make it invalid with the reason. One request per distinct key at most."""
    pending = [o for o in outcomes if o.status is Status.VALID and o.contact_id is None]
    if not pending:
        return
    found = await resolver.resolve_many({o.contact for o in pending})
    for outcome in pending:
        resolution = found[outcome.contact]
        if resolution.contact_id is not None:
            outcome.contact_id, outcome.found_by = resolution.contact_id, resolution.found_by
        else:
            outcome.status, outcome.error = Status.INVALID, resolution.error

"""The resolve stage: turn a row's contact key into a Givebutter contact id, or say why not.

A key is what the mapper puts in `MappedRow.contact`: a bare number (a Givebutter contact
id), `email:VALUE` or `external_id:VALUE`. `ContactResolver.resolve_many(keys)` gives one
`Resolution` per distinct key: the contact id and how it was found (`found_by`: `id`,
`email`, `external_id`, `created`), or a plain one-line error naming the key's kind and
value. `resolve_contacts(outcomes, resolver)` does it for a chunk's rows.

What is promised
- A bare id resolves to itself without a request; the POST tells whether it exists.
- An email is trimmed and compared ignoring case (the rest as written); a blank one, or one
  that does not look like an address, is an error without a request. A listed contact
  matches only if one of its addresses (`emails[].value`, `primary_email`) is the email: a
  loose filter on the API's side cannot make a wrong match.
- An external id is trimmed and compared exactly (case matters: it is another system's
  key), against every contact's `external_id` and each `external_ids[].external_id`.
- **The fewest requests.** Answers come first from the account's contact index
  (`importer.contact_index`: one file per account, beside the ledger), while younger than
  `max_age`: a re-run makes no contact read. For what it does not answer, the resolver
  plans: external ids need a scan of every contact (the API has no filter by external id);
  emails are looked up one by one (`GET /contacts?email=`) or found by one scan
  (`GET /contacts?per_page=100`, every page), whichever takes fewer requests. The count of
  contacts comes from the sender's key check (`meta.total`) or, failing that, from one
  `per_page=1` page. Across the chunks of one run it is the ski-rental rule: emails are
  looked up until the lookups made and to make would reach the pages of a scan, then one
  scan answers everything, so a run never makes more than twice the reads it needs. Every
  answer (a scan's, a lookup's, a creation's) goes into the index with its time.
- Never a guess: several contacts with the key is an error naming their ids; so is none. An
  archived contact is an error ("contact 10050 (email x) is archived"): the API answers 403
  to any activity for it.
- **Creating missing contacts** (opt-in twice: the mapping's `contact: {create: ...}` gives a
  row's `NewContact`, and `create_contacts=True`, the CLI's `--create-contacts`). An email
  with no contact at all (an archived one is not "no contact") gets one
  `POST /contacts` with the first row's first and last name (both required) and phone;
  `found_by` is `created`. With `dry_run`, nothing is posted: the row says `would create
  contact`. Exactly once, even across a kill -9: the index records, durably, that the
  creation began before the POST goes out, and the answer before the id is used. An email
  whose creation began and whose answer was not recorded is answered by nothing older: it
  is looked up again (or scanned) before anything is created, and Givebutter's own
  de-duplication (same first + last name with the same email gives back the contact
  already there) covers a contact that a lookup cannot see yet.
- A lookup or creation that gets no usable answer is an error for that key only, saying
  what happened. `AuthError` (a 401) propagates. A scan that fails raises `ImporterError`.

What is not promised
- The index knows the contacts as they were when it learnt them: a contact created or given
  an external id since is "not found" until the answer is older than `max_age`, or the index
  is refreshed (`refresh_index()`, `contacts refresh`).
- Overlapping `resolve_many` calls on one resolver are correct but may ask twice.
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.contact_index import (
    Account,
    ContactIndex,
    ContactMatch,
    IndexedContact,
    KeyKind,
    addresses,
    match_of,
    normalise_email,
    open_index,
)
from importer.errors import ImporterError
from importer.payload import CONTACT_ID_PATTERN
from importer.records import NewContact, Outcome, Status
from importer.send import ApiResponse, RequestFailed, Sender

EMAIL_PREFIX = "email:"
EXTERNAL_ID_PREFIX = "external_id:"
DEFAULT_MAX_AGE = 86400.0  # seconds: a day
PAGE_SIZE = 100  # the API's largest page
CREATED = "created"  # `found_by` of a contact made by this run


@dataclass(frozen=True, slots=True)
class Resolution:
    """What became of one contact key: the contact id and how it was found, or no id and a
    one-line `error`. In a dry run that would create the contact: no id, no error, and
    `would_create` saying so."""

    contact_id: int | None
    error: str = ""
    found_by: str = ""
    would_create: str = ""

    @property
    def ok(self) -> bool:
        """True if a contact id was found."""
        return self.contact_id is not None


async def resolve_contacts(outcomes: list[Outcome], resolver: ContactResolver) -> None:
    """Give each valid row that names its contact by email or external id its contact id,
    or make it invalid with the reason (a dry run's would-be creation stays valid, with a
    warning). One request per distinct key at most."""
    pending = [o for o in outcomes if o.status is Status.VALID and o.contact_id is None]
    if not pending:
        return
    new_contacts: dict[str, NewContact] = {}
    for outcome in pending:
        if outcome.new_contact is not None:
            new_contacts.setdefault(outcome.contact, outcome.new_contact)  # the first row's
    found = await resolver.resolve_many(
        [o.contact for o in pending], new_contacts=new_contacts or None
    )
    for outcome in pending:
        resolution = found[outcome.contact]
        if resolution.contact_id is not None:
            outcome.contact_id, outcome.found_by = resolution.contact_id, resolution.found_by
        elif resolution.would_create:
            outcome.warnings.append(resolution.would_create)
        else:
            outcome.status, outcome.error = Status.INVALID, resolution.error


class ContactResolver:
    """Resolves contact keys for one run, through the run's sender."""

    def __init__(
        self,
        sender: Sender,
        *,
        index_path: Path | None,
        max_age: float = DEFAULT_MAX_AGE,
        on_notice: Callable[[str], None] | None = None,
        create_contacts: bool = False,
        dry_run: bool = False,
    ) -> None:
        """`index_path`: the account's contact index (None: in memory, for this resolver
        only). `max_age`: seconds an answer in the index is used (0: never).
        `on_notice`: told, in one line each, what the index and the plan are.
        `create_contacts`: create the missing contacts rows say how to create (with
        `dry_run`, only say so)."""
        self._sender = sender
        self._index_path = Path(index_path) if index_path is not None else None
        self._max_age = max_age
        self._notice = on_notice or (lambda _message: None)
        self._create = create_contacts
        self._dry_run = dry_run
        self._index: ContactIndex | None = None
        self._lock = asyncio.Lock()
        self._known: dict[tuple[KeyKind, str], list[ContactMatch]] = {}  # learnt this run
        # Emails settled otherwise than by their contacts: a lookup that failed, a creation.
        self._settled: dict[str, Resolution] = {}
        self._told_all_known = False
        self._scanned = False  # a scan was made by this resolver
        self._lookups = 0  # emails looked up one by one by this resolver
        self._total: int | None = None  # contacts in the account, once asked

    async def resolve_many(
        self,
        keys: Iterable[str],
        *,
        concurrency: int = 8,
        new_contacts: Mapping[str, NewContact] | None = None,
    ) -> dict[str, Resolution]:
        """One `Resolution` per distinct key, keyed as given. `new_contacts`: for email keys,
        how to create the contact if none has the email. Raises `AuthError` on a 401,
        `ImporterError` if a needed scan fails."""
        distinct = list(dict.fromkeys(keys))
        emails = {k: _email_of(k) for k in distinct if k.startswith(EMAIL_PREFIX)}
        emails = {k: e for k, e in emails.items() if _email_problem(e) is None}
        external = {k: _external_id_of(k) for k in distinct if k.startswith(EXTERNAL_ID_PREFIX)}
        external = {k: v for k, v in external.items() if v}
        if emails or external:
            async with self._lock:
                await self._learn(set(emails.values()), set(external.values()), concurrency)
                creating: dict[str, NewContact] = {}
                for key, new in (new_contacts or {}).items():
                    if key in emails:  # the first key of an email says how to make it
                        creating.setdefault(emails[key], new)
                await self._create_missing(creating, concurrency)
        return {key: self._resolve_known(key, new_contacts or {}) for key in distinct}

    async def refresh_index(self) -> int:
        """Scan every contact into the index now; give how many were listed. Raises
        `ImporterError` if the listing fails."""
        async with self._lock:
            await self._scan()
        return self._opened().scanned_contacts()

    # -- learning what the keys are --------------------------------------------------------

    async def _learn(self, emails: set[str], external: set[str], concurrency: int) -> None:
        index = self._opened()
        emails_todo = self._from_index("email", emails)
        external_todo = self._from_index("external_id", external)
        asked = len(emails) + len(external)
        if asked and not emails_todo and not external_todo and not self._told_all_known:
            self._told_all_known = True
            scanned = index.scanned_at()
            age = f" (scanned {_duration(time.time() - scanned)} ago)" if scanned else ""
            self._notice(f"contact index reused{age}: all {asked:,} keys answered, no request")
        # External ids have no filter: only a scan finds them, and it answers the emails too.
        if external_todo or (emails_todo and await self._scan_is_cheaper(len(emails_todo))):
            await self._scan()
        elif emails_todo:
            await self._look_up_emails(sorted(emails_todo), concurrency)
        if self._scanned:  # answers everything not yet known
            todo: tuple[tuple[KeyKind, set[str]], ...] = (
                ("email", emails_todo),
                ("external_id", external_todo),
            )
            for kind, values in todo:
                found = index.answers(kind, values, max_age=math.inf)
                self._known.update(((kind, value), m) for value, m in found.items())

    def _from_index(self, kind: KeyKind, values: set[str]) -> set[str]:
        """Take what the index answers into `_known`; give the values it does not answer."""
        todo = {v for v in values if (kind, v) not in self._known and v not in self._settled}
        if todo:
            age = math.inf if self._scanned else self._max_age
            found = self._opened().answers(kind, todo, max_age=age)
            self._known.update(((kind, value), matches) for value, matches in found.items())
            todo -= found.keys()
        return todo

    async def _scan_is_cheaper(self, emails: int) -> bool:
        """Whether one scan costs no more requests than looking these emails up (with the
        lookups this resolver already made: the ski-rental rule, see the module doc)."""
        if emails + self._lookups < 2:
            return False  # one lookup is never dearer than a scan
        if self._total is None and self._sender.key_check is None and emails <= 2:
            return False  # asking the count would cost as much as it could save
        total = await self._contacts_total()
        if total is None:
            return False
        pages = max(1, math.ceil(total / PAGE_SIZE))
        cheaper = pages <= emails + self._lookups
        if cheaper:
            self._notice(
                f"contacts: {emails:,} emails to find among {total:,} contacts: one scan of"
                f" {pages:,} pages rather than {emails:,} lookups"
            )
        else:
            self._notice(
                f"contacts: looking up {emails:,} emails one by one"
                f" (a scan of {total:,} contacts would take {pages:,} requests)"
            )
        return cheaper

    async def _contacts_total(self) -> int | None:
        """How many contacts the account has: from the key check, else one small page."""
        if self._total is None and self._sender.key_check is not None:
            self._total = _total_of(self._sender.key_check)
        if self._total is None:
            try:
                answer = await self._sender.request("GET", "/contacts", params={"per_page": "1"})
            except RequestFailed:
                return None
            self._total = _total_of(answer)
        return self._total

    # -- emails one by one -----------------------------------------------------------------

    async def _look_up_emails(self, emails: list[str], concurrency: int) -> None:
        shared = iter(emails)
        answers: dict[str, list[ContactMatch]] = {}

        async def worker() -> None:
            for email in shared:  # the workers share one iterator: each email goes to one
                found = await self._look_up_email(email)
                if isinstance(found, list):
                    answers[email] = self._known["email", email] = found
                else:
                    self._settled[email] = Resolution(None, found)  # an error, not an answer

        self._lookups += len(emails)
        try:
            await _run_workers(worker, min(max(1, concurrency), len(emails)))
        finally:
            if answers:
                self._opened().record_lookups(answers)

    async def _look_up_email(self, email: str) -> list[ContactMatch] | str:
        """The contacts with `email`, or why they could not be listed."""
        params = {"email": email, "per_page": str(PAGE_SIZE)}
        try:
            answer = await self._sender.request("GET", "/contacts", params=params)
        except RequestFailed as failure:
            return f"could not look up email {email}: {failure.reason}"
        page = _page(answer)
        if page is None:
            return f"could not look up email {email}: {_answer_words(answer)}"
        contacts, next_url = page
        matches = [m for c in contacts if email in addresses(c) and (m := match_of(c))]
        if next_url and len(matches) < 2:
            # More than a page listed for one address: the filter was not exact, and the
            # match may be on a page not read. Say so rather than guess.
            return f"email {email}: the API listed more than {PAGE_SIZE} contacts for it"
        return matches

    # -- one scan of every contact ----------------------------------------------------------

    async def _scan(self) -> None:
        self._notice("contacts: listing every contact into the contact index...")
        began = time.time()
        listed: list[IndexedContact] = []  # only what the index needs: full contacts add up
        skipped = 0
        async for contacts in self._contact_pages():
            for contact in contacts:
                indexed = IndexedContact.of(contact)
                if indexed is None:
                    skipped += 1
                else:
                    listed.append(indexed)
        if skipped:
            self._notice(f"contact index: {skipped} contacts without a numeric id left out")
        count = self._opened().replace_with_scan(listed, began)
        self._scanned = True
        self._notice(f"contact index: {count:,} contacts listed")

    async def _contact_pages(self) -> AsyncIterator[list[Any]]:
        """Each page of `GET /contacts`, following `links.next` until it is null."""
        params: dict[str, str] | None = {"per_page": str(PAGE_SIZE)}
        seen: set[tuple[tuple[str, str], ...]] = set()
        while params is not None:
            marker = tuple(sorted(params.items()))
            if marker in seen:
                raise ImporterError("cannot list the contacts: the API's pages loop")
            seen.add(marker)
            contacts, next_url = await self._contact_page(params)
            yield contacts
            params = _next_params(next_url) if contacts else None

    async def _contact_page(self, params: dict[str, str]) -> tuple[list[Any], str | None]:
        try:
            answer = await self._sender.request("GET", "/contacts", params=params)
        except RequestFailed as failure:
            raise ImporterError(f"cannot list the contacts: {failure.reason}") from None
        page = _page(answer)
        if page is None:
            raise ImporterError(f"cannot list the contacts: GET /contacts {_answer_words(answer)}")
        return page

    # -- creating the missing ----------------------------------------------------------------

    async def _create_missing(self, wanted: Mapping[str, NewContact], concurrency: int) -> None:
        """POST a contact for each email with no contact at all, if asked to and able to."""
        todo = [
            email
            for email, new in wanted.items()
            if self._known.get(("email", email)) == []
            and email not in self._settled
            and self._create
            and not self._dry_run
            and not _missing_names(new)
        ]
        if not todo:
            return
        self._notice(f"contacts: creating {len(todo):,} contacts (POST /contacts)")
        index = self._opened()
        index.begin_creations(todo)  # on disk before any POST goes out
        shared = iter(todo)

        async def worker() -> None:
            for email in shared:
                resolution, answered, refused = await self._create_one(email, wanted[email])
                if answered is not None:  # on disk before the id is used
                    index.record_lookups({email: answered})
                    self._known["email", email] = answered
                elif refused:  # it surely did not happen: nothing to look for next time
                    index.end_creations([email])
                self._settled[email] = resolution

        await _run_workers(worker, min(max(1, concurrency), len(todo)))

    async def _create_one(
        self, email: str, new: NewContact
    ) -> tuple[Resolution, list[ContactMatch] | None, bool]:
        """POST one contact: its resolution, what the index should now hold for the email
        (None if nothing was learnt), and whether the API surely created nothing."""
        body = {"first_name": new.first_name, "last_name": new.last_name, "email": email}
        if new.phone:
            body["phone"] = new.phone
        cannot = f"could not create a contact for email {email}"
        try:
            answer = await self._sender.request("POST", "/contacts", json=body)
        except RequestFailed as failure:
            return Resolution(None, f"{cannot}: {failure.reason}"), None, not failure.ambiguous
        resource = answer.json_body
        if isinstance(resource, dict) and "id" not in resource and "data" in resource:
            resource = resource["data"]  # tolerate a wrapped resource
        match = match_of(resource) if answer.ok and isinstance(resource, dict) else None
        if match is None:
            refused = not answer.ok and not answer.ambiguous
            return Resolution(None, f"{cannot}: {_answer_words(answer)}"), None, refused
        if match.archived:  # Givebutter's de-duplication gave back an archived contact
            archived = f"contact {match.id} (email {email}) is archived"
            return Resolution(None, archived), [match], False
        return Resolution(match.id, found_by=CREATED), [match], False

    # -- one key, once its lookups are done ----------------------------------------------

    def _resolve_known(self, key: str, new_contacts: Mapping[str, NewContact]) -> Resolution:
        if CONTACT_ID_PATTERN.fullmatch(key):
            return Resolution(int(key), found_by="id")
        if key.startswith(EMAIL_PREFIX):
            email = _email_of(key)
            problem = _email_problem(email)
            if problem:
                return Resolution(None, problem)
            return self._by_email(email, new_contacts.get(key))
        if key.startswith(EXTERNAL_ID_PREFIX):
            value = _external_id_of(key)
            if not value:
                return Resolution(None, "external_id is blank")
            return _verdict("external_id", value, self._known["external_id", value])
        if not key.strip():
            return Resolution(None, "contact is blank")
        return Resolution(
            None, f"contact {key} is not a contact id (a number), email:... or external_id:..."
        )

    def _by_email(self, email: str, new: NewContact | None) -> Resolution:
        if email in self._settled:
            return self._settled[email]
        matches = self._known["email", email]
        verdict = _verdict("email", email, matches)
        if matches or new is None:
            return verdict
        if missing := _missing_names(new):
            return Resolution(None, f"{verdict.error}, and none can be made: its {missing}")
        if not self._create:
            return Resolution(
                None, f"{verdict.error} (the mapping can create it: add --create-contacts)"
            )
        return Resolution(None, would_create=f"would create contact ({verdict.error})")

    def _opened(self) -> ContactIndex:
        if self._index is None:
            account = Account(self._sender.base_url, self._sender.key_fingerprint)
            self._index, why = open_index(self._index_path, account)
            if why:
                self._notice(why)
        return self._index

    def close(self) -> None:
        """Close the index (a resolver is not used after)."""
        if self._index is not None:
            self._index.close()
            self._index = None


# -- reading the API's answers ----------------------------------------------------------


def _page(answer: ApiResponse) -> tuple[list[Any], str | None] | None:
    """A list page's contacts and its `links.next`, or None if the answer is not one."""
    body = answer.json_body
    if not answer.ok or not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return None
    links = body.get("links")
    next_url = links.get("next") if isinstance(links, dict) else None
    return [c for c in body["data"] if isinstance(c, dict)], next_url or None


def _total_of(answer: ApiResponse) -> int | None:
    """`meta.total` of a list page: how many there are in all (None if it does not say)."""
    body = answer.json_body
    meta = body.get("meta") if answer.ok and isinstance(body, dict) else None
    total = meta.get("total") if isinstance(meta, dict) else None
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    return None


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
    return f"the API answered {answer.status} with something other than contacts"


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


def _missing_names(new: NewContact) -> str:
    """What a row lacks to create its contact ('' if nothing)."""
    blank = [name for name in ("first_name", "last_name") if not getattr(new, name)]
    return " and ".join(f"{name.replace('_', ' ')}" for name in blank) + (
        " is blank" if len(blank) == 1 else " are blank" if blank else ""
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{max(0.0, seconds):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _email_of(key: str) -> str:
    return normalise_email(key.removeprefix(EMAIL_PREFIX))


def _external_id_of(key: str) -> str:
    return key.removeprefix(EXTERNAL_ID_PREFIX).strip()


def _email_problem(email: str) -> str | None:
    """Why `email` (normalised) cannot be looked up, or None if it can."""
    if not email:
        return "email is blank"
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in email):
        return f"email {email} is not an email address"
    return None


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

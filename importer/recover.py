"""Finding an activity whose creation is in doubt, before sending it again.

The API has no idempotency key: a POST that timed out, lost its connection or got a 5xx
may or may not have created the activity. `search()` reads the contact's activities of the
same type (`GET /v1/contacts/{contact}/activities?type=…`, every page) and gives one of
three answers:

- `Found(id)`: exactly one activity fits (or, for identical rows in doubt, no more fit
  than there are such rows: any one of them is this row's, once);
- `Absent()`: every page was read and none fits: sending it is safe;
- `Unknown(reason)`: a page could not be read (an error, a 429 or 5xx to the end of the
  retries, an answer that is not JSON), or the fields cannot tell candidates apart. The row
  is *in doubt*: it must not be sent again on a guess.

What "fits" means is built from what the API reference promises about an activity (`id`,
`type`, `occurred_at`, `created_at`, ...; not the subject or note that were sent) and what
the caller knows that the server cannot say (`Claims`). An activity fits a row when:

- its `type` is the row's type;
- its `occurred_at` is the row's, as an instant to the second, when the row has one;
- its `created_at` is no earlier than the moment the row was marked `sending`, less
  `CLOCK_SKEW` (our clock and the server's may disagree by that much);
- its id is not claimed by another row (`Claims.ids`: created entries of the ledger and
  activities this run was given as answers);
- `subject` and `note`, *when the answer carries them* (at the top level, or in `data` when
  that is a JSON object holding them), equal the row's, blanks and surrounding spaces
  ignored (Laravel trims strings and turns "" into null).

An activity field that cannot be read (a date that does not parse) is kept as a candidate:
that can only turn an answer into `Unknown`, never into `Absent`. Other rows in doubt that
would fit the same activity (`Claims.in_doubt`, `Claims.in_flight`) make the answer
`Unknown`, unless they are identical to the sought row and no request of theirs is out.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from importer.payload import ActivityPayload

PER_PAGE = 100
MAX_PAGES = 10_000  # a `next` link that never ends is an answer we cannot trust

CLOCK_SKEW = timedelta(minutes=5)
"""How far the server's clock (which stamps `created_at`) may be behind ours (which stamps
the ledger's mark) without losing an activity this run made. Larger only widens the search:
more answers become `Unknown`, none becomes a wrong `Absent`."""


class LookupFailed(Exception):
    """A page of the search could not be read; `str()` says why, in plain words."""


# (path, params) -> the parsed JSON body of a 2xx answer (None if it was not JSON); raises
# `LookupFailed` for any other answer, or none.
GetJson = Callable[[str, dict[str, str]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Sought:
    """A row whose creation may have happened: what the search looks for."""

    contact_id: int
    payload: ActivityPayload
    marked_at: datetime | None  # when it was marked `sending` (aware); None: no lower bound
    row: int = 0  # the spreadsheet row, for the reason given when the answer is Unknown

    def identical(self, other: Sought) -> bool:
        """The same activity in every field sent: copies of one row (`--allow-duplicates`)."""
        return self.contact_id == other.contact_id and _body(self) == _body(other)


@dataclass(frozen=True, slots=True)
class Claims:
    """What the caller knows that the server cannot say: activities and rows already spoken
    for. The caller adds an id here as soon as it gives that id to a row, committed or not."""

    ids: frozenset[str] = frozenset()
    """Activity ids that belong to other rows: not candidates."""

    in_doubt: tuple[Sought, ...] = ()
    """Other rows whose creation is in doubt and whose requests are over: an activity that
    would fit one of them, unless it is identical to the sought row, makes the answer
    Unknown. Identical ones share the candidates: any one is theirs, once."""

    in_flight: tuple[Sought, ...] = ()
    """Other rows with a request out now: its answer may yet claim any activity that fits,
    so one that fits any of them makes the answer Unknown."""


@dataclass(frozen=True, slots=True)
class Found:
    """The activity exists: this is its id."""

    activity_id: str


@dataclass(frozen=True, slots=True)
class Absent:
    """Every page was read and no activity fits: the row was not created."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """Could not tell; `reason` says why, in plain words."""

    reason: str


Search = Found | Absent | Unknown


async def search(get_json: GetJson, sought: Sought, claims: Claims | None = None) -> Search:
    """Look for the activity `sought` may have created; one of the three answers."""
    try:
        activities = [a async for a in _activities(get_json, sought)]
    except LookupFailed as failure:
        return Unknown(f"could not read the contact's activities: {failure}")
    return decide(sought, activities, claims or Claims())


def decide(sought: Sought, activities: list[dict[str, Any]], claims: Claims) -> Search:
    """The answer, given every activity of the contact and type (pure: no I/O)."""
    candidates = [a for a in activities if fits(a, sought) and _id(a) not in claims.ids]
    if not candidates:
        return Absent()
    for other in claims.in_flight:
        if any(fits(a, other) for a in candidates):
            return Unknown(f"row {other.row}'s request is still out and may be that activity")
    twins = 1
    for other in claims.in_doubt:
        if sought.identical(other):
            twins += 1
        elif any(fits(a, other) for a in candidates):
            return Unknown(f"row {other.row}, also in doubt, fits the same activity")
    if len(candidates) > twins:
        return Unknown(f"{len(candidates)} activities fit it and nothing tells them apart")
    first = min(candidates, key=lambda a: (str(a.get("created_at")), _id(a)))
    return Found(_id(first))


def fits(activity: dict[str, Any], sought: Sought) -> bool:
    """Whether `activity` may be the one `sought` created (see the module docstring)."""
    payload = sought.payload
    if activity.get("type") != payload.type.value or not _id(activity):
        return False
    if payload.occurred_at is not None:
        occurred = _instant(activity.get("occurred_at"))
        if occurred is not None and _seconds(occurred) != _seconds(payload.occurred_at):
            return False
    if sought.marked_at is not None:
        created = _instant(activity.get("created_at"))
        if created is not None and created < sought.marked_at - CLOCK_SKEW:
            return False
    echoed = _echoed(activity)
    return all(_same(echoed[name], getattr(payload, name)) for name in echoed)


async def _activities(get_json: GetJson, sought: Sought) -> AsyncIterator[dict[str, Any]]:
    """Every activity of the contact and type, page by page; `LookupFailed` if any page
    cannot be read or is not a page."""
    path = f"/contacts/{int(sought.contact_id)}/activities"
    for page in range(1, MAX_PAGES + 1):
        params = {"type": sought.payload.type.value, "per_page": str(PER_PAGE), "page": str(page)}
        body = await get_json(path, params)
        if body is None:
            raise LookupFailed(f"page {page} was not JSON")
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise LookupFailed(f"page {page} was not a list of activities")
        for activity in items:
            if isinstance(activity, dict):
                yield activity
        links = body.get("links")
        if not isinstance(links, dict) or not links.get("next"):
            return
    raise LookupFailed(f"more than {MAX_PAGES} pages")


def shows(activity: dict[str, Any], payload: ActivityPayload) -> bool:
    """Whether `activity` (an answer to `GET …/activities/{id}`) shows every field of
    `payload`, so that a change to it whose answer was lost is known to have landed. Only
    what the answer carries can tell: a field it does not show (the reference promises no
    `subject`, `note` or `timezone`) means it cannot be told, and False."""
    body = payload.to_body()
    if activity.get("type") != body["type"]:
        return False
    if payload.occurred_at is not None:
        occurred = _instant(activity.get("occurred_at"))
        if occurred is None or _seconds(occurred) != _seconds(payload.occurred_at):
            return False
    texts = [name for name in body if name not in ("type", "occurred_at")]
    echoed = _echoed(activity, texts)
    return all(
        name in echoed and isinstance(echoed[name], str) and _same(echoed[name], body[name])
        for name in texts
    )


def _echoed(activity: dict[str, Any], names: Sequence[str] = ("subject", "note")) -> dict[str, Any]:
    """The fields `names` as far as the answer carries them (the reference promises none
    of them): top-level keys first, else keys of `data` when it is a JSON object."""
    found: dict[str, Any] = {n: activity[n] for n in names if n in activity}
    data = activity.get("data")
    if isinstance(data, str) and data.lstrip().startswith("{"):
        try:
            inner = json.loads(data)
        except ValueError:
            inner = None
        if isinstance(inner, dict):
            for name in names:
                if name in inner and name not in found:
                    found[name] = inner[name]
    return found


def _same(echoed: Any, sent: str | None) -> bool:
    if echoed is not None and not isinstance(echoed, str):
        return True  # not a text we can compare: it cannot rule the activity out
    return (echoed or "").strip() == (sent or "").strip()


def _body(sought: Sought) -> str:
    return json.dumps(sought.payload.to_body(), sort_keys=True, default=str)


def _id(activity: dict[str, Any]) -> str:
    value = activity.get("id")
    return "" if value is None or isinstance(value, bool) else str(value)


def _seconds(moment: datetime) -> datetime:
    # The server may keep whole seconds only; a row never carries two instants a second apart.
    return moment.replace(microsecond=0)


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None

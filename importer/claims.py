"""What one sending run has in the air and has been given: the part of `recover.Claims`
that only the sender knows.

A search for a row in doubt must not take an activity that another row of the same run
was given as its answer (committed to the ledger or not), nor one that a request still out
may have made. `RunClaims` keeps, per contact:

- the rows with a request out now (`start` … `end`);
- the rows this run left in doubt (their requests are over, their fate unknown);
- the activity ids this run was given, for as long as a search can still see them: a search
  looks no earlier than the start of the oldest request out, less `CLOCK_SKEW`, and the
  server's clock may be that much ahead of ours, so an id given more than twice the skew
  before that start can no longer be a candidate and is let go. Memory stays bounded by a
  few minutes of sending, however long the run. When the caller keeps the ids its rows
  were given itself (`ids_kept_by_caller`: delivery with a ledger, whose claims hold every
  result it was told, committed or not), the ids of rows sent are not kept here at all: at
  no rate limit, a few minutes are the whole run.

What the ledger knows (created entries of earlier runs, rows in doubt since an earlier
run) is the caller's to add (`Sender.send_all(claims=...)`); `ledger_claims` reads it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable

from importer.ledger import Ledger, LedgerEntry
from importer.payload import ActivityPayload
from importer.recover import CLOCK_SKEW, Claims, Sought

_FORGET_AFTER = 2 * CLOCK_SKEW.total_seconds()


class RunClaims:
    """The rows out and in doubt, and the ids given, of one run (see the module doc)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tickets = itertools.count()
        self._out: dict[int, tuple[float, Sought]] = {}  # ticket -> (start, row)
        self._in_doubt: dict[int, list[Sought]] = {}  # contact id -> rows
        self._given: dict[int, set[str]] = {}  # contact id -> activity ids
        self._given_order: deque[tuple[float, int, str]] = deque()
        self.ids_kept_by_caller = False
        """The caller's claims hold the id of every row `end` is told of: keep none."""

    def start(self, sought: Sought) -> int:
        """A request for `sought` may go out from now on; the ticket to `end` it with."""
        ticket = next(self._tickets)
        self._out[ticket] = (self._clock(), sought)
        return ticket

    def end(self, ticket: int, *, activity_id: str | None, in_doubt: bool) -> None:
        """The row's requests are over: it was given `activity_id`, or is left in doubt."""
        _, sought = self._out.pop(ticket)
        if activity_id and not self.ids_kept_by_caller:
            self.give(sought.contact_id, activity_id)
        elif in_doubt:
            self._in_doubt.setdefault(sought.contact_id, []).append(sought)
        self._let_go()

    def give(self, contact_id: int, activity_id: str) -> None:
        """`activity_id` belongs to a row of this run: no other row may take it."""
        self._given.setdefault(contact_id, set()).add(activity_id)
        self._given_order.append((self._clock(), contact_id, activity_id))

    def settled(self, sought: Sought) -> None:
        """A row this run had left in doubt is settled (found, or found absent)."""
        rows = self._in_doubt.get(sought.contact_id, [])
        if sought in rows:
            rows.remove(sought)

    def claims(
        self, sought: Sought, known: Claims | None = None, ticket: int | None = None
    ) -> Claims:
        """The claims a search for `sought` must respect: this run's, plus `known` (the
        caller's), leaving out `sought` itself and the request `ticket` belongs to."""
        contact = sought.contact_id
        out = tuple(
            row for t, (_, row) in self._out.items() if t != ticket and row.contact_id == contact
        )
        doubtful = tuple(row for row in self._in_doubt.get(contact, ()) if row is not sought)
        known = known or Claims()
        return Claims(
            ids=known.ids | self._given.get(contact, set()),
            in_doubt=known.in_doubt + doubtful,
            in_flight=known.in_flight + out,
        )

    def _let_go(self) -> None:
        oldest = min((start for start, _ in self._out.values()), default=self._clock())
        while self._given_order and self._given_order[0][0] < oldest - _FORGET_AFTER:
            _, contact, activity_id = self._given_order.popleft()
            ids = self._given.get(contact)
            if ids is not None:
                ids.discard(activity_id)
                if not ids:
                    del self._given[contact]


def ledger_claims(ledger: Ledger, contact_id: int, ours: Callable[[str], bool]) -> Claims:
    """What the ledger knows of a contact that a look on the server must respect: the
    activity ids its entries and records hold, and its entries still `sending` (rows in
    doubt since earlier runs) but those `ours(key)` says this run settles itself. Called on
    the ledger's thread."""
    entries = [e for e in ledger.in_doubt(contact_id) if not ours(e.key)]
    return Claims(ids=ledger.claimed_ids(contact_id), in_doubt=tuple(map(_sought, entries)))


def _sought(entry: LedgerEntry) -> Sought:
    """An entry left `sending`, as a search sees another row in doubt."""
    payload = ActivityPayload.model_validate_json(entry.payload_json)
    return Sought(entry.contact_id, payload, entry.marked_instant, entry.row)

"""The rows' way through delivery: in (`RowFeed`), on their way (`ToSend`), out in input
order (`OrderedOutcomes`), and the two ways a run is stopped early from outside
(`Interruption`) or by itself (`FailureLimit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from importer.records import Change, Outcome
from importer.send import SendJob

ReportCallback = Callable[[list[Outcome]], None]
ResolveContacts = Callable[[list[Outcome]], Awaitable[None]]
MIN_JUDGED = 20  # rows sent before a percentage of failures is judged


class Interruption:
    """A handle for stopping a delivery from outside, as a ctrl-c does in the CLI.

    `drain()` takes no more rows and lets the requests in flight finish, so that no row is
    left in doubt; `abandon()` stops those too (their rows may have been created). Either
    way the delivery ends normally, every row with its outcome, and `happened` is True.
    Safe to call before the delivery starts or after it ends (then it does nothing more).
    """

    def __init__(self) -> None:
        self.happened = False
        self._drain: Callable[[], None] | None = None
        self._abandon: Callable[[], None] | None = None

    def drain(self) -> None:
        self.happened = True
        if self._drain is not None:
            self._drain()

    def abandon(self) -> None:
        self.happened = True
        if self._abandon is not None:
            self._abandon()

    @contextlib.contextmanager
    def _attached(self, drain: Callable[[], None], abandon: Callable[[], None]) -> Iterator[None]:
        self._drain, self._abandon = drain, abandon
        try:
            if self.happened:
                drain()
            yield
        finally:
            self._drain = self._abandon = None


class OrderedOutcomes:
    """Hands outcomes on in input order, holding any that arrive before earlier ones."""

    def __init__(self, sink: ReportCallback) -> None:
        self._sink = sink
        self._next = 0
        self._waiting: dict[int, Outcome] = {}
        self._moved = asyncio.Event()  # outcomes were handed on since the last `moved()`

    def put(self, seq: int, outcome: Outcome) -> None:
        self.put_many(((seq, outcome),))

    def put_many(self, decided: Iterable[tuple[int, Outcome]]) -> None:
        """Several outcomes at once: the sink hears once of every row now in order."""
        waiting = self._waiting
        for seq, outcome in decided:
            waiting[seq] = outcome
        ready = []
        while self._next in waiting:
            ready.append(waiting.pop(self._next))
            self._next += 1
        if ready:
            self._sink(ready)
            self._moved.set()

    @property
    def held(self) -> int:
        """Outcomes waiting for an earlier row's."""
        return len(self._waiting)

    async def moved(self) -> None:
        """Wait until some outcomes are handed on."""
        self._moved.clear()
        await self._moved.wait()


class RowFeed:
    """The rows of a run, a chunk at a time, decided as far as they can be before sending,
    each numbered in input order. `resolve`, if given, finds the contacts of a chunk's
    valid rows before they are sent (rows read on after an interruption are not resolved)."""

    def __init__(
        self, chunks: Iterable[list[Outcome]], resolve: ResolveContacts | None = None
    ) -> None:
        self._chunks = iter(chunks)
        self._resolve = resolve
        self._seqs = itertools.count()
        self.pending: deque[tuple[int, Outcome]] = deque()  # read, not yet taken

    async def next_chunk(self) -> list[tuple[int, Outcome]] | None:
        """The next chunk's rows, not yet resolved; kept in `pending` until taken."""
        chunk = next(self._chunks, None)
        if chunk is None:
            return None
        rows = [(next(self._seqs), outcome) for outcome in chunk]
        self.pending.extend(rows)  # kept there, so an interruption loses no row
        return rows

    async def resolve(self, outcomes: list[Outcome]) -> None:
        """Find the contacts of those valid rows that do not have one yet."""
        if self._resolve is not None:
            await self._resolve(outcomes)

    def next_seq(self) -> int:
        """A place in the output after every row read so far (for lines of no input row)."""
        return next(self._seqs)

    def rest(self) -> Iterator[tuple[int, Outcome]]:
        """Rows not yet taken: those pending from the current chunk, then the rest."""
        while self.pending:
            yield self.pending.popleft()
        for chunk in self._chunks:
            yield from ((next(self._seqs), outcome) for outcome in chunk)


@dataclass(slots=True)
class ToSend:
    """A valid row on its way: its place in the input, its ledger key and its body's JSON,
    made once (the body itself is the outcome's, `Outcome.made_body`)."""

    seq: int
    outcome: Outcome
    key: str  # the ledger's key: the content's hash, or the source key (`version` set)
    body_json: str  # its canonical JSON: what the ledger keeps
    version: str = ""  # with a source key: `content_hash` of the contact and body
    change: Change = Change.CREATE
    activity_id: str | None = None  # update, move, delete: the existing activity
    old_contact_id: int | None = None  # move: the contact of the old activity
    found_id: str | None = None  # move: the new activity, found on the server already

    def job(self) -> SendJob:
        outcome = self.outcome
        assert outcome.payload is not None and outcome.contact_id is not None
        return SendJob(
            outcome.row,
            outcome.contact_id,
            outcome.payload,
            outcome.made_body(),
            change=self.change,
            activity_id=self.activity_id,
            old_contact_id=self.old_contact_id,
            found_id=self.found_id,
        )


@dataclass(frozen=True, slots=True)
class FailureLimit:
    """`count` failed rows, or `percent` of the rows sent (judged after `MIN_JUDGED`)."""

    count: int | None = None
    percent: float | None = None

    def reached(self, failed: int, sent: int) -> bool:
        if self.count is not None and failed >= self.count:
            return True
        return (
            self.percent is not None and sent >= MIN_JUDGED and failed * 100 >= self.percent * sent
        )

    def describe(self) -> str:
        return f"{self.count:,} rows" if self.count is not None else f"{self.percent:g}% of rows"

    @classmethod
    def parse(cls, text: str) -> FailureLimit:
        """`N` rows, or `P%` of the rows sent; ValueError if neither (or 0)."""
        count, share = number_or_share(text)
        if count == 0:
            raise ValueError("at least 1 row (or a percentage)")
        return cls(count=count, percent=None if share is None else share * 100)


def number_or_share(text: str) -> tuple[int | None, float | None]:
    """`N` (a whole number) as (N, None), or `P%` (0 to 100%) as (None, P / 100)."""
    value = text.strip()
    try:
        if value.endswith("%"):
            share = float(value[:-1]) / 100
            if 0 <= share <= 1:
                return None, share
        elif (count := int(value)) >= 0:
            return count, None
    except ValueError:
        pass
    raise ValueError(f"'{text}' is neither a whole number nor a percentage such as 5%")

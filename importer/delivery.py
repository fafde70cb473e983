"""Delivery: the exactly-once engine between the send and report stages.

`deliver` takes rows already mapped and decided (a `RowFeed`), a sender, a ledger (or none)
and a few settings; it posts every valid row once and hands every row's outcome, in input
order, to a report callback. It knows nothing of files, mappings or the command line, so it
can be driven in-process with a scripted sender and a real ledger.

What it promises, with a ledger:
- every valid row is marked `sending` (durably) before its request goes out, and its
  outcome is reported only once the ledger has committed it;
- a key the ledger has `created` is skipped ("already imported"); a key an earlier run
  left `sending` is looked for on the server first;
- a row identical to an earlier row of the same run is skipped ("duplicate of row N"),
  unless `allow_duplicates`;
- when stopped (an `Interruption`, a cancellation, a refused key), every row still gets
  exactly one outcome: rows never sent say so, rows whose request was abandoned in flight
  say that the activity may exist, and stay `sending` so that the next run looks first.

What it does not promise: that an abandoned request did not land (nobody can), nor any
order of requests beyond "handed to the sender in input order".

Every ledger call runs on a thread of the ledger's own, one at a time, so that the event
loop never waits for an fsync: the next batch is marked while the workers send the last
one, and results are committed while the next requests go out. Batches are sized by
throughput: about `MARK_AHEAD_SECONDS` of sending, within [`SEND_BATCH`, `SEND_BATCH_MAX`].
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from importer.errors import AuthError
from importer.key_records import Begun, KeyRecord, KeyRecords, content_hash
from importer.ledger import (
    EntryState,
    Ledger,
    LedgerEntry,
    NewEntry,
    canonical_body_json,
    key_of_json,
    normalise_base_url,
)
from importer.payload import ActivityPayload
from importer.ratelimit import NoticeCallback
from importer.records import (
    KEY_REFUSED,
    NOT_SENT_INTERRUPTED,
    Change,
    Outcome,
    SendResult,
    Status,
)
from importer.send import SendJob
from importer.sync import changed_fields, is_unchanged, plan

ReportCallback = Callable[[list[Outcome]], None]
ResolveContacts = Callable[[list[Outcome]], Awaitable[None]]

# Each mark and each commit is one fsync. Bigger batches mean fewer of them, but after a
# kill -9 every row marked and not yet committed must be looked for on the server by the next
# run; sized by throughput, that is about MARK_AHEAD_SECONDS + COMMIT_SECONDS of sending.
COMMIT_EVERY = 2000  # outcomes: commit (and report) once this many wait...
COMMIT_SECONDS = 0.5  # ...or this long
SEND_BATCH = 32  # rows marked `sending` in one transaction, at least...
SEND_BATCH_MAX = 2048  # ...and at most
MARK_AHEAD_SECONDS = 0.25  # a batch is about this much sending at the rate rows are taken
LOOKUP_GROUP = 500  # rows whose keys are looked up in the ledger at once

_T = TypeVar("_T")


class ActivitySender(Protocol):
    """What delivery needs of a sender (`importer.send.Sender` is one)."""

    async def send_all(
        self, jobs: AsyncIterable[SendJob], on_result: Callable[[SendJob, SendResult], None]
    ) -> None: ...

    async def find_activity(self, contact_id: int, payload: ActivityPayload) -> str | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliverySettings:
    """What delivery needs to know of the run besides its rows."""

    base_url: str
    """The API's address: part of every ledger key, so that two servers never mix."""

    input_name: str = ""
    """What the ledger says a row came from (the input file's name)."""

    allow_duplicates: bool = False
    """Identical rows in one input are separate activities (the n-th copy is its own key)."""

    source: str = ""
    """The name of the stream of files whose rows have source keys (`key:`): a key is known
    per account and per source."""

    run_id: str = ""
    """This run's id, kept with each record it changes."""

    recreate_deleted: bool = False
    """A keyed row whose activity was deleted in Givebutter is created again (else refused)."""

    deletions: tuple[KeyRecord, ...] = ()
    """Records whose keys left the source, to delete once the input's rows are sent."""

    max_failures: FailureLimit | None = None
    """Take no more rows once this many have failed."""

    dry_run: bool = False
    """Decide every row as a run would, with the ledger's knowledge, and report what would
    be done (`would create`, ...): no request, no ledger write."""


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


MIN_JUDGED = 20  # rows sent before a percentage of failures is judged
WOULD = {
    Change.CREATE: Status.WOULD_CREATE,
    Change.UPDATE: Status.WOULD_UPDATE,
    Change.MOVE: Status.WOULD_MOVE,
    Change.DELETE: Status.WOULD_DELETE,
}
UNRESOLVED = "contact not looked up in a dry run (add --resolve to look it up)"
LOOKED_FIRST = "an earlier run may have created it: the real run looks for it first"


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

    @property
    def held(self) -> int:
        return len(self._waiting)


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
class _ToSend:
    """A valid row on its way: its place in the input, its ledger key and its body, made once."""

    seq: int
    outcome: Outcome
    key: str  # the ledger's key: the content's hash, or the source key (`version` set)
    body: dict[str, Any]  # `payload.to_body()`: what is posted
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
            self.body,
            change=self.change,
            activity_id=self.activity_id,
            old_contact_id=self.old_contact_id,
            found_id=self.found_id,
        )


async def deliver(
    feed: RowFeed,
    sender: ActivitySender | None,
    ledger: Ledger | None,
    settings: DeliverySettings,
    report: ReportCallback,
    *,
    interruption: Interruption | None = None,
    on_notice: NoticeCallback | None = None,
) -> bool:
    """Send every valid row of `feed` once; report every row's outcome in input order.

    Returns True if the delivery was interrupted (by `interruption`). A cancellation of the
    caller finishes the outcomes the same way, then propagates; a refused key (`AuthError`)
    finishes them with "not sent: the API refused the key", then propagates."""
    ordered = OrderedOutcomes(report)
    run = _Delivery(settings, ordered, ledger, on_notice)
    interruption = interruption or Interruption()
    if sender is None and not settings.dry_run:
        raise ValueError("only a dry run may go without a sender")
    producer = asyncio.create_task(run.produce(feed, sender or _DrySender()), name="delivery-feed")
    tasks = [producer]
    if ledger is not None and not settings.dry_run:
        tasks.append(asyncio.create_task(run.commit_regularly(), name="delivery-commit"))
    poster = _DrySender() if settings.dry_run or sender is None else sender
    sending = asyncio.create_task(poster.send_all(run.jobs(producer), run.on_result))

    def drain() -> None:
        run.stop_taking()
        if on_notice is not None:
            on_notice(
                f"interrupted: letting the {len(run.in_flight)} requests in flight finish "
                "(interrupt again to abandon them)"
            )

    def abandon() -> None:
        sending.cancel()

    unsent_reason = NOT_SENT_INTERRUPTED
    try:
        with interruption._attached(drain, abandon):
            await _waiting_on(sending)
    except asyncio.CancelledError:
        if not sending.cancelled():  # the caller was cancelled, not the sending
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await run.stop(*tasks)
            run.finish_unsent(feed, NOT_SENT_INTERRUPTED)
            raise
    except AuthError:
        unsent_reason = KEY_REFUSED
        await run.stop(*tasks)
        run.finish_unsent(feed, unsent_reason)
        raise
    finally:
        if not all(task.done() for task in tasks):
            await run.stop(*tasks)
    if interruption.happened:
        run.finish_unsent(feed, unsent_reason)
    elif run.gave_up:
        run.finish_unsent(feed, run.gave_up)
    return interruption.happened


class _DrySender:
    """A dry run's stand-in for the sender: each job is answered with what would be done;
    nothing is looked for on the server (a dry run never asks it)."""

    async def find_activity(self, contact_id: int, payload: ActivityPayload) -> str | None:
        raise AssertionError("a dry run never looks on the server")

    async def send_all(
        self, jobs: AsyncIterable[SendJob], on_result: Callable[[SendJob, SendResult], None]
    ) -> None:
        async for job in jobs:
            on_result(job, SendResult(WOULD[job.change]))


async def _waiting_on(sending: asyncio.Task[None]) -> None:
    """Wait for the sending task; its cancellation (an abandon) ends the wait quietly."""
    try:
        await asyncio.shield(sending)
    except asyncio.CancelledError:
        if sending.cancelled():
            return
        raise


class _Delivery:
    """One delivery's bookkeeping: what is in flight, the ledger, duplicates in the input.

    A producer task (`produce`) decides the rows and hands the valid ones to the sender's
    workers through `ready`, keeping it about half a batch ahead of them.
    """

    def __init__(
        self,
        settings: DeliverySettings,
        ordered: OrderedOutcomes,
        ledger: Ledger | None,
        on_notice: NoticeCallback | None = None,
    ) -> None:
        self.settings = settings
        self.ordered = ordered
        self.ledger = ledger
        self.on_notice = on_notice
        self.records = (
            KeyRecords(
                ledger, normalise_base_url(settings.base_url), settings.source, settings.run_id
            )
            if ledger is not None
            else None
        )
        self.chunk_records: dict[str, KeyRecord] = {}  # the current chunk's keys, as known
        self.prepared: dict[int, _ToSend] = {}  # seq -> keyed rows made ready while settling
        self.seen_keys: dict[str, int] = {}  # source key -> first row with it, in this run
        self.failed = self.sent = 0
        self.gave_up = ""  # why no more rows are taken after too many failures
        self.updates_refused = ""  # the API said it does not take updates: why
        self.seen: dict[str, int] = {}  # key -> first row with it, in this run
        self.occurrences: Counter[str] = Counter()
        self.batch: list[_ToSend] = []  # admitted, not yet marked
        self.marking: list[_ToSend] = []  # being marked `sending` now
        self.ready: deque[_ToSend] = deque()  # marked, not yet taken by a worker
        self.in_flight: dict[int, _ToSend] = {}  # row -> taken by a worker, no result yet
        # For the ledger at the next commit: the key, the result, the change (keyed rows).
        self.results: list[tuple[str, SendResult, Change | None]] = []
        self.awaiting_commit: list[tuple[int, Outcome]] = []  # reported once committed
        self.committing: list[tuple[int, Outcome]] = []
        self.batch_size = SEND_BATCH
        self._taken = 0  # rows taken by the workers since `_taken_since`
        self._taken_since: float | None = None
        self._changed = asyncio.Event()  # `ready` grew, or the producer ended
        self._room = asyncio.Event()  # `ready` ran down to half a batch
        self._commit_due = asyncio.Event()  # COMMIT_EVERY outcomes await a commit
        self._io = ThreadPoolExecutor(1, "ledger") if ledger is not None else None
        self._stopping = False  # take no more rows: the run was interrupted

    def stop_taking(self) -> None:
        """Hand the workers no more rows; those in flight finish."""
        self._stopping = True
        self._changed.set()

    # -- the producer ---------------------------------------------------------------------

    async def produce(self, feed: RowFeed, sender: ActivitySender) -> None:
        """Decide every row of the input; admit the valid ones and hand them on in batches."""
        look_up = self.ledger is not None and not await self._in_thread(self.ledger.is_empty)
        while (rows := await feed.next_chunk()) is not None:
            await self._settle_keyed(rows)
            await feed.resolve([outcome for _, outcome in rows])
            while feed.pending:
                count = min(LOOKUP_GROUP, len(feed.pending))
                group = {
                    seq: self.prepared.pop(seq)
                    if seq in self.prepared
                    else self._to_send(seq, outcome)
                    for seq, outcome in itertools.islice(feed.pending, count)
                    if outcome.status is Status.VALID
                }
                content_keys = [row.key for row in group.values() if not row.version]
                known = await self._lookup(content_keys) if look_up and content_keys else {}
                for _ in range(count):
                    seq, outcome = feed.pending.popleft()
                    if outcome.status is not Status.VALID:
                        self.ordered.put(seq, outcome)
                        continue
                    row = group[seq]
                    try:
                        if row.version:
                            admitted = await self.admit_keyed(row, sender)
                        else:
                            admitted = await self.admit(row, known.get(row.key), sender)
                    except asyncio.CancelledError:
                        feed.pending.appendleft((seq, outcome))
                        raise
                    if admitted:
                        await self._add_to_batch(row)
        for record in self.settings.deletions:
            await self._add_to_batch(_deletion(feed.next_seq(), record))
        if self.batch:
            await self.hand_on()

    async def _add_to_batch(self, row: _ToSend) -> None:
        self.batch.append(row)
        if len(self.batch) >= self.batch_size:
            await self.hand_on()

    # -- rows with a source key -----------------------------------------------------------

    async def _settle_keyed(self, rows: list[tuple[int, Outcome]]) -> None:
        """Before contacts are looked up: a key repeated in the input is invalid; a row whose
        key the ledger knows in this very version is `unchanged` (its contact is known)."""
        keyed = [(seq, o) for seq, o in rows if o.status is Status.VALID and o.key]
        if not keyed:
            return
        fresh = []
        for seq, outcome in keyed:
            first = self.seen_keys.setdefault(outcome.key, outcome.row)
            if first != outcome.row:
                outcome.status = Status.INVALID
                outcome.error = f"key {outcome.key} repeats row {first}'s: one row a record"
            else:
                fresh.append((seq, outcome))
        self.chunk_records = (
            await self._in_thread(self.records.lookup, [o.key for _, o in fresh])
            if self.records is not None
            else {}
        )
        for seq, outcome in fresh:
            row = self._to_send(seq, outcome)
            record = self.chunk_records.get(outcome.key)
            if is_unchanged(record, row.version):
                assert record is not None
                outcome.status, outcome.activity_id = Status.UNCHANGED, record.activity_id
                outcome.contact_id, outcome.found_by = record.contact_id, "ledger"
            else:
                self.prepared[seq] = row

    async def admit_keyed(self, row: _ToSend, sender: ActivitySender) -> bool:
        """Decide a valid row with a source key: True to send its change."""
        outcome = row.outcome
        record = self.chunk_records.get(row.key)
        if record is not None and record.pending in (Change.CREATE, Change.MOVE):
            record = await self._look_for_pending(row, record, sender)
            if record is None:  # found: the earlier run's change is this row's, done
                return False
        contact_id = outcome.contact_id
        if contact_id is None:  # a dry run that did not look contacts up
            same = record is not None and record.contact == outcome.contact
            contact_id = (record.contact_id if record is not None and same else None) or -1
            outcome.warnings.append(UNRESOLVED)
        decided = plan(
            record, row.version, contact_id, recreate_deleted=self.settings.recreate_deleted
        )
        if decided.refusal or (decided.change is Change.UPDATE and self.updates_refused):
            outcome.status, outcome.error = Status.FAILED, decided.refusal or self.updates_refused
            outcome.activity_id = record.activity_id if record else None
            self.ordered.put(row.seq, outcome)
            return False
        assert decided.change is not None  # unchanged rows were settled before
        row.change, row.activity_id = decided.change, decided.activity_id
        row.old_contact_id = decided.old_contact_id
        if record is not None and decided.change is Change.UPDATE:
            fields = changed_fields(record.body_json, row.body_json)
            outcome.warnings.append("changed: " + (", ".join(fields) or "the contact as written"))
        elif record is not None and decided.change is Change.MOVE:
            outcome.warnings.append(f"contact changed from {record.contact_id}")
        return True

    async def _look_for_pending(
        self, row: _ToSend, record: KeyRecord, sender: ActivitySender
    ) -> KeyRecord | None:
        """A creation or move an earlier run left under way: look for its new activity on
        the server. Found: recorded, and None (the row is decided); else the record."""
        if self.settings.dry_run or record.pending_json is None:
            row.outcome.warnings.append(LOOKED_FIRST) if self.settings.dry_run else None
            return record
        payload = ActivityPayload.model_validate_json(record.pending_json)
        found = await sender.find_activity(record.pending_contact_id or 0, payload)
        if found is None:
            return record
        if record.pending is Change.MOVE:  # the old one may still be there: delete it
            row.found_id = found
            return record
        outcome = row.outcome
        outcome.contact_id = record.pending_contact_id
        self.record(row, SendResult(status=Status.CREATED, activity_id=found))
        outcome.warnings.append("an earlier run had created it; found on the server")
        return None

    def _to_send(self, seq: int, outcome: Outcome) -> _ToSend:
        assert outcome.payload is not None
        body = outcome.payload.to_body()
        body_json = canonical_body_json(body)
        if outcome.key:  # a record: known by its source key, its content is a version
            version = content_hash(outcome.contact, body_json)
            return _ToSend(seq, outcome, outcome.key, body, body_json, version)
        if outcome.contact_id is None:  # a dry run that did not look contacts up
            return _ToSend(seq, outcome, "", body, body_json)
        key = key_of_json(self.settings.base_url, outcome.contact_id, body_json)
        if self.settings.allow_duplicates:
            # The n-th copy in the input is its own activity, on every run alike.
            copy = self.occurrences[key]
            self.occurrences[key] += 1
            key = f"{key}#{copy}" if copy else key
        return _ToSend(seq, outcome, key, body, body_json)

    async def admit(self, row: _ToSend, entry: LedgerEntry | None, sender: ActivitySender) -> bool:
        """Decide a valid row before sending: True to send it, False if already decided.
        `entry` is what the ledger knew of its key when the run looked."""
        outcome = row.outcome
        if not row.key:  # a dry run cannot tell whether an unresolved contact's row is new
            outcome.warnings.append(UNRESOLVED)
            self.ordered.put(row.seq, outcome)
            return False
        if row.key in self.seen:
            outcome.status = Status.SKIPPED
            outcome.error = f"duplicate of row {self.seen[row.key]}: same contact and activity"
            self.ordered.put(row.seq, outcome)
            return False
        self.seen[row.key] = outcome.row
        if entry is not None and entry.state is EntryState.CREATED:
            outcome.status, outcome.activity_id = Status.SKIPPED, entry.activity_id
            if self.settings.dry_run:
                outcome.status = Status.ALREADY_IMPORTED
            outcome.error = (
                f"already imported: activity {entry.activity_id} (row {entry.row} of "
                f"{entry.input_name})"
            )
            self.ordered.put(row.seq, outcome)
            return False
        if entry is not None and entry.state is EntryState.SENDING and self.settings.dry_run:
            outcome.warnings.append(LOOKED_FIRST)
        elif entry is not None and entry.state is EntryState.SENDING:
            assert outcome.payload is not None and outcome.contact_id is not None
            found = await sender.find_activity(outcome.contact_id, outcome.payload)
            if found is not None:
                await self._in_thread(self._mark, [row])
                self.record(row, SendResult(status=Status.CREATED, activity_id=found))
                outcome.warnings.append("an earlier run had created it; found on the server")
                return False
        return True

    async def hand_on(self) -> None:
        """Mark the batch `sending` and hand it to the workers once they are down to half a
        batch, so that they have rows to send while the next batch is marked."""
        while len(self.ready) > self.batch_size // 2:
            self._room.clear()
            await self._room.wait()
        batch, self.batch = self.batch, []
        if self.ledger is not None and not self.settings.dry_run:
            self.marking = batch
            await self._in_thread(self._mark, batch)
            self.marking = []
        self.ready.extend(batch)
        self._changed.set()
        self._resize()

    def _resize(self) -> None:
        """Size the next batch to the rate at which the workers take rows."""
        now = asyncio.get_running_loop().time()
        if self._taken_since is not None and now > self._taken_since and self._taken:
            rate = self._taken / (now - self._taken_since)
            wanted = round(rate * MARK_AHEAD_SECONDS)
            self.batch_size = max(SEND_BATCH, min(SEND_BATCH_MAX, wanted))
        self._taken, self._taken_since = 0, now

    # -- the workers' side ------------------------------------------------------------------

    async def jobs(self, producer: asyncio.Task[None]) -> AsyncIterator[SendJob]:
        """The rows the producer hands on, as jobs for the sender; ends with the producer
        (raising what stopped it, if anything did)."""
        producer.add_done_callback(lambda _: self._changed.set())
        while not self._stopping:
            if producer.done() and (not self.ready or producer.exception() is not None):
                producer.result()
                return
            if not self.ready:
                self._changed.clear()
                await self._changed.wait()
                continue
            row = self.ready.popleft()
            self._taken += 1
            if len(self.ready) <= self.batch_size // 2:
                self._room.set()
            if row.change is Change.UPDATE and self.updates_refused:
                self.record(row, SendResult(Status.FAILED, error=self.updates_refused))
                continue
            self.in_flight[row.outcome.row] = row
            yield row.job()

    def on_result(self, job: SendJob, result: SendResult) -> None:
        self.record(self.in_flight.pop(job.row), result)

    def record(self, row: _ToSend, result: SendResult) -> None:
        outcome = row.outcome
        outcome.status = result.status
        outcome.http_status = result.http_status
        outcome.activity_id = result.activity_id or (
            row.activity_id if row.change is not Change.DELETE else None
        )
        outcome.attempts = result.attempts
        outcome.error = result.error
        self._count(row, result)
        if self.ledger is None or self.settings.dry_run:
            self.ordered.put(row.seq, outcome)
            return
        # An ambiguous failure stays `sending`: the next run looks for it before sending.
        if result.status is not Status.FAILED or not result.ambiguous:
            self.results.append((row.key, result, row.change if row.version else None))
        self.awaiting_commit.append((row.seq, outcome))
        if len(self.awaiting_commit) >= COMMIT_EVERY:
            self._commit_due.set()

    def _count(self, row: _ToSend, result: SendResult) -> None:
        """Failures, for the failure limit; a refusal of updates, said once."""
        if result.unsupported and row.change is Change.UPDATE and not self.updates_refused:
            self.updates_refused = f"not sent: {result.error}"
            if self.on_notice is not None:
                self.on_notice(f"{result.error}; rows that changed are not updated")
        self.sent += 1
        self.failed += result.status is Status.FAILED
        limit = self.settings.max_failures
        if limit is not None and not self.gave_up and limit.reached(self.failed, self.sent):
            self.gave_up = f"not sent: the run stopped after {self.failed:,} failed rows"
            self.gave_up += f" (the limit is {limit.describe()})"
            if self.on_notice is not None:
                self.on_notice(self.gave_up.removeprefix("not sent: "))
            self.stop_taking()

    # -- the ledger -------------------------------------------------------------------------

    async def commit_regularly(self) -> None:
        """Commit every COMMIT_SECONDS, or as soon as COMMIT_EVERY outcomes wait for it."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commit_due.wait(), COMMIT_SECONDS)
            self._commit_due.clear()
            await self.commit()

    async def commit(self) -> None:
        """Make recorded outcomes durable (on the ledger's thread), then report them."""
        if not self.awaiting_commit:
            return
        results, self.results = self.results, []
        self.committing, self.awaiting_commit = self.awaiting_commit, []
        if results:
            await self._in_thread(self._write_results, results)
        committed, self.committing = self.committing, []
        self.ordered.put_many(committed)

    async def stop(self, *tasks: asyncio.Task[None]) -> None:
        """Cancel the producer and the committer, then `finish`; raise what stopped them."""
        for task in tasks:
            task.cancel()
        ends = await asyncio.gather(*tasks, return_exceptions=True)
        self.finish()
        for end in ends:
            if isinstance(end, BaseException) and not isinstance(end, asyncio.CancelledError):
                raise end

    def finish(self) -> None:
        """Let the ledger's thread end its work, then commit and report what is left.

        Rows marked `sending` but never taken by a worker were not sent: the ledger says so
        (`failed`), so that a later run sends them without looking for them first."""
        if self._io is not None:
            self._io.shutdown(wait=True)
        if self.ledger is not None and not self.settings.dry_run:
            unsent = [*self.ready, *self.marking]
            content = [row.key for row in unsent if not row.version]
            marked = self.ledger.lookup(content) if content else {}
            not_sent = SendResult(status=Status.FAILED, error=NOT_SENT_INTERRUPTED)
            for key, entry in marked.items():
                if entry.state is EntryState.SENDING:
                    self.results.append((key, not_sent, None))
            self.results += [(row.key, not_sent, row.change) for row in unsent if row.version]
            results, self.results = self.results, []
            self._write_results(results)
        waiting = [*self.committing, *self.awaiting_commit]
        self.committing, self.awaiting_commit = [], []
        self.ordered.put_many(waiting)

    def finish_unsent(self, feed: RowFeed, reason: str) -> None:
        """Give every row not yet decided its line, `failed` with `reason`: read on to the
        end of the input, send nothing."""
        unsent = [*self.in_flight.values(), *self.ready, *self.marking, *self.batch]
        for row in unsent:
            row.outcome.status, row.outcome.error = Status.FAILED, reason
        self.ordered.put_many((row.seq, row.outcome) for row in unsent)
        self.in_flight.clear()
        self.ready.clear()
        self.marking, self.batch = [], []
        for seq, outcome in feed.rest():
            if outcome.status is Status.VALID:
                outcome.status, outcome.error = Status.FAILED, reason
            self.ordered.put(seq, outcome)

    async def _in_thread(self, call: Callable[..., _T], *args: Any) -> _T:
        """`call(*args)` on the ledger's thread. Once begun it runs to its end, even if the
        caller is cancelled meanwhile: the ledger is never left half-told."""
        assert self._io is not None
        future = asyncio.get_running_loop().run_in_executor(self._io, call, *args)
        future.add_done_callback(_retrieved)
        return await asyncio.shield(future)

    async def _lookup(self, keys: list[str]) -> dict[str, LedgerEntry]:
        assert self.ledger is not None
        return await self._in_thread(self.ledger.lookup, keys) if keys else {}

    def _mark(self, rows: list[_ToSend]) -> None:
        assert self.ledger is not None and self.records is not None
        name = self.settings.input_name
        self.ledger.mark_sending(
            NewEntry(row.key, row.outcome.contact_id or 0, row.outcome.row, name, row.body_json)
            for row in rows
            if not row.version
        )
        self.records.begin(
            [
                Begun(
                    row.key,
                    row.change,
                    row.outcome.contact,
                    row.outcome.contact_id or 0,
                    row.body_json,
                    row.version,
                    row.outcome.row,
                    name,
                )
                for row in rows
                if row.version
            ]
        )

    def _write_results(self, results: list[tuple[str, SendResult, Change | None]]) -> None:
        assert self.ledger is not None and self.records is not None
        for key, result, change in results:
            if change is not None:
                self._finish_record(key, result, change)
            elif result.status is Status.CREATED:
                self.ledger.record_created(key, result.activity_id or "", result.attempts)
            else:
                self.ledger.record_failed(key, result.error, result.attempts, result.http_status)
        self.ledger.commit()
        self.records.commit()

    def _finish_record(self, key: str, result: SendResult, change: Change) -> None:
        assert self.records is not None
        if result.status is not Status.FAILED:
            self.records.finish(key, change, result.activity_id)
        elif result.gone:
            self.records.gone(key)
        else:
            self.records.fail(key)


def _deletion(seq: int, record: KeyRecord) -> _ToSend:
    """A line for a key that left the source: delete its activity."""
    payload = ActivityPayload.model_validate_json(record.body_json)
    outcome = Outcome(
        row=0,
        status=Status.VALID,
        key=record.key,
        contact=record.contact,
        contact_id=record.contact_id,
        found_by="ledger",
        payload=payload,
    )
    outcome.warnings.append(f"the key is no longer in the source (last in row {record.row})")
    return _ToSend(
        seq,
        outcome,
        record.key,
        payload.to_body(),
        record.body_json,
        record.content_hash or "-",
        change=Change.DELETE,
        activity_id=record.activity_id,
    )


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a shielded future's exception as seen: its caller, if still there, raises it."""
    if not future.cancelled():
        future.exception()

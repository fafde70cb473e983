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
from importer.ledger import (
    EntryState,
    Ledger,
    LedgerEntry,
    NewEntry,
    canonical_body_json,
    key_of_json,
)
from importer.payload import ActivityPayload
from importer.ratelimit import NoticeCallback
from importer.records import KEY_REFUSED, NOT_SENT_INTERRUPTED, Outcome, SendResult, Status
from importer.send import SendJob

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
        """The next chunk's rows, resolved; kept in `pending` until taken."""
        chunk = next(self._chunks, None)
        if chunk is None:
            return None
        rows = [(next(self._seqs), outcome) for outcome in chunk]
        self.pending.extend(rows)  # kept there, so an interruption loses no row
        if self._resolve is not None:
            await self._resolve(chunk)
        return rows

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
    key: str
    body: dict[str, Any]  # `payload.to_body()`: what is posted
    body_json: str  # its canonical JSON: what the ledger keeps

    def job(self) -> SendJob:
        outcome = self.outcome
        assert outcome.payload is not None and outcome.contact_id is not None
        return SendJob(outcome.row, outcome.contact_id, outcome.payload, self.body)


async def deliver(
    feed: RowFeed,
    sender: ActivitySender,
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
    run = _Delivery(settings, ordered, ledger)
    interruption = interruption or Interruption()
    producer = asyncio.create_task(run.produce(feed, sender), name="delivery-feed")
    tasks = [producer]
    if ledger is not None:
        tasks.append(asyncio.create_task(run.commit_regularly(), name="delivery-commit"))
    sending = asyncio.create_task(sender.send_all(run.jobs(producer), run.on_result))

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
    return interruption.happened


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
        self, settings: DeliverySettings, ordered: OrderedOutcomes, ledger: Ledger | None
    ) -> None:
        self.settings = settings
        self.ordered = ordered
        self.ledger = ledger
        self.seen: dict[str, int] = {}  # key -> first row with it, in this run
        self.occurrences: Counter[str] = Counter()
        self.batch: list[_ToSend] = []  # admitted, not yet marked
        self.marking: list[_ToSend] = []  # being marked `sending` now
        self.ready: deque[_ToSend] = deque()  # marked, not yet taken by a worker
        self.in_flight: dict[int, _ToSend] = {}  # row -> taken by a worker, no result yet
        self.results: list[tuple[str, SendResult]] = []  # for the ledger at the next commit
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
        while await feed.next_chunk() is not None:
            while feed.pending:
                count = min(LOOKUP_GROUP, len(feed.pending))
                group = {
                    seq: self._to_send(seq, outcome)
                    for seq, outcome in itertools.islice(feed.pending, count)
                    if outcome.status is Status.VALID
                }
                known = await self._lookup([row.key for row in group.values()]) if look_up else {}
                for _ in range(count):
                    seq, outcome = feed.pending.popleft()
                    if outcome.status is not Status.VALID:
                        self.ordered.put(seq, outcome)
                        continue
                    row = group[seq]
                    try:
                        admitted = await self.admit(row, known.get(row.key), sender)
                    except asyncio.CancelledError:
                        feed.pending.appendleft((seq, outcome))
                        raise
                    if admitted:
                        self.batch.append(row)
                        if len(self.batch) >= self.batch_size:
                            await self.hand_on()
        if self.batch:
            await self.hand_on()

    def _to_send(self, seq: int, outcome: Outcome) -> _ToSend:
        assert outcome.payload is not None and outcome.contact_id is not None
        body = outcome.payload.to_body()
        body_json = canonical_body_json(body)
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
        if row.key in self.seen:
            outcome.status = Status.SKIPPED
            outcome.error = f"duplicate of row {self.seen[row.key]}: same contact and activity"
            self.ordered.put(row.seq, outcome)
            return False
        self.seen[row.key] = outcome.row
        if entry is not None and entry.state is EntryState.CREATED:
            outcome.status, outcome.activity_id = Status.SKIPPED, entry.activity_id
            outcome.error = (
                f"already imported: activity {entry.activity_id} (row {entry.row} of "
                f"{entry.input_name})"
            )
            self.ordered.put(row.seq, outcome)
            return False
        if entry is not None and entry.state is EntryState.SENDING:
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
        if self.ledger is not None:
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
            self.in_flight[row.outcome.row] = row
            self._taken += 1
            if len(self.ready) <= self.batch_size // 2:
                self._room.set()
            yield row.job()

    def on_result(self, job: SendJob, result: SendResult) -> None:
        self.record(self.in_flight.pop(job.row), result)

    def record(self, row: _ToSend, result: SendResult) -> None:
        outcome = row.outcome
        outcome.status = result.status
        outcome.http_status = result.http_status
        outcome.activity_id = result.activity_id
        outcome.attempts = result.attempts
        outcome.error = result.error
        if self.ledger is None:
            self.ordered.put(row.seq, outcome)
            return
        # An ambiguous failure stays `sending`: the next run looks for it before sending.
        if result.status is Status.CREATED or not result.ambiguous:
            self.results.append((row.key, result))
        self.awaiting_commit.append((row.seq, outcome))
        if len(self.awaiting_commit) >= COMMIT_EVERY:
            self._commit_due.set()

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
        if self.ledger is not None:
            unsent = [*self.ready, *self.marking]
            marked = self.ledger.lookup(row.key for row in unsent) if unsent else {}
            for key, entry in marked.items():
                if entry.state is EntryState.SENDING:
                    self.results.append(
                        (key, SendResult(status=Status.FAILED, error=NOT_SENT_INTERRUPTED))
                    )
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
        assert self.ledger is not None
        name = self.settings.input_name
        self.ledger.mark_sending(
            NewEntry(row.key, row.outcome.contact_id or 0, row.outcome.row, name, row.body_json)
            for row in rows
        )

    def _write_results(self, results: list[tuple[str, SendResult]]) -> None:
        assert self.ledger is not None
        for key, result in results:
            if result.status is Status.CREATED:
                self.ledger.record_created(key, result.activity_id or "", result.attempts)
            else:
                self.ledger.record_failed(key, result.error, result.attempts, result.http_status)
        self.ledger.commit()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a shielded future's exception as seen: its caller, if still there, raises it."""
    if not future.cancelled():
        future.exception()

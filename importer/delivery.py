"""Delivery: the exactly-once engine between the send and report stages.

`deliver` takes rows already mapped and decided (a `RowFeed`), a sender, a ledger (or none)
and a few settings; it posts every valid row once and hands every row's outcome, in input
order, to a report callback. It knows nothing of files, mappings or the command line, so it
can be driven in-process with a scripted sender and a real ledger.

What it promises, with a ledger:
- every valid row is marked `sending` (durably) before its request goes out, and its
  outcome is reported only once the ledger has committed it;
- a key the ledger has `created` is skipped ("already imported"); a key an earlier run
  left `sending` is looked for on the server first (`importer.recover`, with `claims`):
  found, recorded created; absent, sent; could not tell, failed "in doubt", not sent;
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
import dataclasses
import itertools
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from importer.answers import in_doubt
from importer.claims import ledger_claims
from importer.delivery_settings import DeliverySettings
from importer.errors import AuthError
from importer.feed import (
    Interruption,
    OrderedOutcomes,
    ReportCallback,
    RowFeed,
    ToSend,
)
from importer.key_records import KeyRecords, content_hash
from importer.ledger import (
    EntryState,
    Ledger,
    LedgerEntry,
    canonical_body_json,
    key_of_json,
    normalise_base_url,
)
from importer.ledger_writes import Written, mark_sending, write_results
from importer.ratelimit import NoticeCallback
from importer.records import (
    KEY_REFUSED,
    NOT_SENT_INTERRUPTED,
    Change,
    Outcome,
    SendResult,
    Status,
)
from importer.recover import Claims, Found, Sought, Unknown
from importer.seen_keys import SeenKeys
from importer.send import SendJob
from importer.sender_protocol import ActivitySender, DrySender
from importer.sync import LOOKED_FIRST, UNRESOLVED, KeyedRows, deletion

# Each mark and each commit is one fsync. Bigger batches mean fewer of them, but after a
# kill -9 every row marked and not yet committed must be looked for on the server by the next
# run; sized by throughput, that is about MARK_AHEAD_SECONDS + COMMIT_SECONDS of sending.
COMMIT_EVERY = 2000  # outcomes: commit (and report) once this many wait...
COMMIT_SECONDS = 0.5  # ...or this long
SEND_BATCH = 32  # rows marked `sending` in one transaction, at least...
SEND_BATCH_MAX = 2048  # ...and at most
MARK_AHEAD_SECONDS = 0.25  # a batch is about this much sending at the rate rows are taken
LOOKUP_GROUP = 500  # rows whose keys are looked up in the ledger at once
# Decided rows (unchanged, imported, duplicates) wait in input order behind rows being sent;
# the producer reads on only while fewer wait (a 1%-edited sync had held 55,000 of them).
HELD_AT_MOST = 10_000

_T = TypeVar("_T")


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
    producer = asyncio.create_task(run.produce(feed, sender or DrySender()), name="delivery-feed")
    tasks = [producer]
    if ledger is not None and not settings.dry_run:
        tasks.append(asyncio.create_task(run.commit_regularly(), name="delivery-commit"))
    poster = DrySender() if settings.dry_run or sender is None else sender
    claims = run.claims if ledger is not None and not settings.dry_run else None
    sending = asyncio.create_task(poster.send_all(run.jobs(producer), run.on_result, claims=claims))

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
        self.keyed = KeyedRows(
            self.records,
            recreate_deleted=settings.recreate_deleted,
            dry_run=settings.dry_run,
            in_thread=self._in_thread,
            put=ordered.put,
            found=self._found_on_server,
            doubt=self._left_in_doubt,
            claims=self.claims,
        )
        self.failed = self.sent = 0
        self.gave_up = ""  # why no more rows are taken after too many failures
        self.seen = SeenKeys(hex_digests=True)  # key -> first row with it, in this run
        self.left_in_doubt: set[str] = set()  # keys of this run's rows that could not be told
        self.occurrences: Counter[str] = Counter()
        self.batch: list[ToSend] = []  # admitted, not yet marked
        self.marking: list[ToSend] = []  # being marked `sending` now
        self.ready: deque[ToSend] = deque()  # marked, not yet taken by a worker
        self.in_flight: dict[int, ToSend] = {}  # id(job) -> taken by a worker, no result yet
        # For the ledger at the next commit: the key, the result, the change (keyed rows).
        self.results: list[Written] = []
        self.writing: list[Written] = []  # the results the ledger's thread is writing now
        self._writes_done = 0
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
        self._catching_up = False  # the producer waits for held outcomes to be reported

    def stop_taking(self) -> None:
        """Hand the workers no more rows; those in flight finish."""
        self._stopping = True
        self._changed.set()

    # -- the producer ---------------------------------------------------------------------

    async def produce(self, feed: RowFeed, sender: ActivitySender) -> None:
        """Decide every row of the input; admit the valid ones and hand them on in batches."""
        look_up = self.ledger is not None and not await self._in_thread(self.ledger.is_empty)
        while True:
            await self._catch_up()
            if (rows := await feed.next_chunk()) is None:
                break
            await self.keyed.settle(rows, self._to_send)
            await feed.resolve([outcome for _, outcome in rows])
            while feed.pending:
                count = min(LOOKUP_GROUP, len(feed.pending))
                group = {
                    seq: self.keyed.take_prepared(seq) or self._to_send(seq, outcome)
                    for seq, outcome in itertools.islice(feed.pending, count)
                    if outcome.status is Status.VALID
                }
                content_keys = [row.key for row in group.values() if not row.version]
                self.seen.look_ahead(content_keys)
                known = await self._lookup(content_keys) if look_up and content_keys else {}
                looked = await self._admit_in_doubt(group, known, sender)
                decided: list[tuple[int, Outcome]] = []  # handed on together, not one by one
                try:
                    for _ in range(count):
                        seq, outcome = feed.pending.popleft()
                        if outcome.status is not Status.VALID:
                            decided.append((seq, outcome))
                            continue
                        row = group[seq]
                        try:
                            if seq in looked:
                                admitted = looked[seq]
                            elif row.version:
                                admitted = await self.keyed.admit(row, sender)
                            else:
                                admitted = await self.admit(row, known.get(row.key), sender)
                        except asyncio.CancelledError:
                            feed.pending.appendleft((seq, outcome))
                            raise
                        if admitted:
                            await self._add_to_batch(row)
                finally:
                    self.ordered.put_many(decided)
        for record in self.settings.deletions:
            await self._add_to_batch(deletion(feed.next_seq(), record))
        if self.batch:
            await self.hand_on()

    async def _admit_in_doubt(
        self, group: dict[int, ToSend], known: dict[str, LedgerEntry], sender: ActivitySender
    ) -> dict[int, bool]:
        """Admit first, by seq, the group's rows an earlier run left under way (`sending`;
        keyed: a creation or move), each looked for on the server: one contact's rows one
        after another in input order (a look respects what earlier looks found), up to
        `settings.looks_at_once` contacts at a time (a resume need not wait a round trip
        per row)."""
        by_contact: dict[int, list[ToSend]] = {}
        for row in group.values():
            entry = known.get(row.key)
            if entry is not None and entry.state is EntryState.SENDING and not row.version:
                by_contact.setdefault(row.outcome.contact_id or 0, []).append(row)
            elif row.version and (contact_id := self.keyed.pending_look(row.key)) is not None:
                by_contact.setdefault(contact_id, []).append(row)
        admitted: dict[int, bool] = {}
        if self.settings.dry_run or len(by_contact) < 2:  # nothing to look for at once
            return admitted
        slots = asyncio.Semaphore(self.settings.looks_at_once)

        async def look_for(rows: list[ToSend]) -> None:
            async with slots:
                for row in rows:
                    if row.version:
                        admitted[row.seq] = await self.keyed.admit(row, sender)
                    else:
                        admitted[row.seq] = await self.admit(row, known[row.key], sender)

        looks = [asyncio.ensure_future(look_for(rows)) for rows in by_contact.values()]
        try:
            await asyncio.gather(*looks)
        finally:  # one look failed, or the run was stopped: the others stop too
            for look in looks:
                look.cancel()
            await asyncio.gather(*looks, return_exceptions=True)
        return admitted

    async def _catch_up(self) -> None:
        """Return once fewer than HELD_AT_MOST outcomes wait for earlier rows': meanwhile the
        rows they wait for are handed to the workers, and results committed as they come."""
        self._catching_up = True
        try:
            while self.ordered.held >= HELD_AT_MOST:
                if self.batch:
                    await self.hand_on()
                self._commit_due.set()
                await self.ordered.moved()
        finally:
            self._catching_up = False

    async def _add_to_batch(self, row: ToSend) -> None:
        self.batch.append(row)
        if len(self.batch) >= self.batch_size:
            await self.hand_on()

    def _left_in_doubt(self, row: ToSend, reason: str) -> None:
        """A look for a row an earlier run left under way could not tell: not sent, it stays
        `sending` (or its change pending), and the next run looks again."""
        why = f"could not check whether an earlier run created it ({reason})"
        self.record(row, SendResult(Status.FAILED, error=in_doubt(why), ambiguous=True))

    def _found_on_server(self, row: ToSend, activity_id: str) -> None:
        self.record(row, SendResult(status=Status.CREATED, activity_id=activity_id))
        row.outcome.warnings.append("an earlier run had created it; found on the server")

    def _to_send(self, seq: int, outcome: Outcome) -> ToSend:
        assert outcome.payload is not None
        body_json = canonical_body_json(outcome.made_body())
        if outcome.key:  # a record: known by its source key, its content is a version
            version = content_hash(outcome.contact, body_json)
            return ToSend(seq, outcome, outcome.key, body_json, version)
        if outcome.contact_id is None:  # a dry run that did not look contacts up
            return ToSend(seq, outcome, "", body_json)
        key = key_of_json(self.settings.base_url, outcome.contact_id, body_json)
        if self.settings.allow_duplicates:
            # The n-th copy in the input is its own activity, on every run alike.
            copy = self.occurrences[key]
            self.occurrences[key] += 1
            key = f"{key}#{copy}" if copy else key
        return ToSend(seq, outcome, key, body_json)

    async def admit(self, row: ToSend, entry: LedgerEntry | None, sender: ActivitySender) -> bool:
        """Decide a valid row before sending: True to send it, False if already decided.
        `entry` is what the ledger knew of its key when the run looked."""
        outcome = row.outcome
        if not row.key:  # a dry run cannot tell whether an unresolved contact's row is new
            outcome.warnings.append(UNRESOLVED)
            self.ordered.put(row.seq, outcome)
            return False
        if (first := self.seen.first_row(row.key)) is not None:
            outcome.status = Status.SKIPPED
            outcome.error = f"duplicate of row {first}: same contact and activity"
            self.ordered.put(row.seq, outcome)
            return False
        self.seen.add(row.key, outcome.row)
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
            sought = Sought(outcome.contact_id, outcome.payload, entry.marked_instant, outcome.row)
            found = await sender.search_activity(sought, await self.claims(outcome.contact_id))
            if isinstance(found, Found):
                await self._in_thread(self._mark, [row])
                self.record(row, SendResult(status=Status.CREATED, activity_id=found.activity_id))
                outcome.warnings.append("an earlier run had created it; found on the server")
                return False
            if isinstance(found, Unknown):  # stays `sending`: the next run looks again
                self.left_in_doubt.add(row.key)
                self._left_in_doubt(row, found.reason)
                return False
        return True

    async def claims(self, contact_id: int) -> Claims:
        """What a look for a row of `contact_id` must respect (`ledger_claims`), with every
        id this run was given and has not committed (the sender keeps none: `send_all`)."""
        assert self.ledger is not None
        writes_before = -1
        while self._writes_done != writes_before:  # a write ended during the read: its ids
            writes_before = self._writes_done  # may be in neither the read nor `results`
            known = await self._in_thread(ledger_claims, self.ledger, contact_id, self.ours)
        unwritten = itertools.chain(self.results, self.writing)
        given = {result.activity_id for _, result, _ in unwritten if result.activity_id}
        return dataclasses.replace(known, ids=known.ids | given)

    def ours(self, key: str) -> bool:  # this run has settled the row of `key`, or is on it
        return key in self.seen and key not in self.left_in_doubt

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
            if row.change is Change.UPDATE and self.keyed.updates_refused:
                self.record(row, SendResult(Status.FAILED, error=self.keyed.updates_refused))
                continue
            job = row.job()
            self.in_flight[id(job)] = row  # by the job itself: lines of no row share row 0
            yield job

    def on_result(self, job: SendJob, result: SendResult) -> None:
        self.record(self.in_flight.pop(id(job)), result)

    def record(self, row: ToSend, result: SendResult) -> None:
        outcome = row.outcome
        outcome.status = result.status
        outcome.http_status = result.http_status
        outcome.activity_id = result.activity_id or row.activity_id  # deleted: the one deleted
        outcome.attempts = result.attempts
        outcome.error = result.error
        outcome.in_doubt = result.in_doubt
        self._count(row, result)
        if self.ledger is None or self.settings.dry_run:
            self.ordered.put(row.seq, outcome)
            return
        # An ambiguous failure stays `sending`: the next run looks for it before sending.
        if result.status is not Status.FAILED or not result.ambiguous:
            self.results.append((row.key, result, row.change if row.version else None))
        self.awaiting_commit.append((row.seq, outcome))
        if len(self.awaiting_commit) >= COMMIT_EVERY or self._catching_up:
            self._commit_due.set()

    def _count(self, row: ToSend, result: SendResult) -> None:
        """Failures, for the failure limit; a refusal of updates, said once."""
        if result.unsupported and row.change is Change.UPDATE and not self.keyed.updates_refused:
            self.keyed.updates_refused = f"not sent: {result.error}"
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
            self.writing = results
            await self._in_thread(self._write_results, results)
            self.writing = []
            self._writes_done += 1
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

    def _mark(self, rows: list[ToSend]) -> None:
        assert self.ledger is not None and self.records is not None
        mark_sending(self.ledger, self.records, self.settings.input_name, rows)

    def _write_results(self, results: list[Written]) -> None:
        assert self.ledger is not None and self.records is not None
        write_results(self.ledger, self.records, results)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a shielded future's exception as seen: its caller, if still there, raises it."""
    if not future.cancelled():
        future.exception()

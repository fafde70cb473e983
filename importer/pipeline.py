"""The pipeline: wires read → map → resolve → send → report for one run.

A library user builds `RunOptions` and calls `run_import(options)`; the CLI does nothing
more. Before any row is read, the input's header is checked against the mapping and the
results file is created, so a run that cannot start fails at once (`ImporterError`).

Every input row ends in exactly one line of the results CSV, in input order: rows that
cannot be sent (invalid, skipped) are decided at once; sent rows are decided when the
sender answers, and an `OrderedOutcomes` buffer holds later rows until earlier ones are
decided. Nothing is sent in a dry run: the sender is not even built.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.errors import ConfigError
from importer.ledger import (
    EntryState,
    Ledger,
    LedgerEntry,
    NewEntry,
    canonical_body_json,
    key_of_json,
)
from importer.mapper import Mapper
from importer.mapping import Mapping, check_columns
from importer.payload import validate_payload
from importer.read import SourceOptions, SourceTable, open_table
from importer.records import MappedChunk, Outcome, OutcomeBlock, SendResult, Status
from importer.report import ResultsWriter, Summary, write_summary_json
from importer.resolve import DEFAULT_MAX_AGE, ContactResolver
from importer.send import Sender, SenderSettings, SendJob, check_base_url

ProgressCallback = Callable[[int], None]
NoticeCallback = Callable[[str], None]

INTERRUPTED = "not sent: the run was interrupted"


@dataclass(kw_only=True)
class RunOptions:
    """Everything one run needs. Paths are checked when the run starts."""

    input_path: Path
    mapping: Mapping
    results_path: Path
    dry_run: bool = False
    overwrite_results: bool = False
    summary_json: Path | None = None
    chunk_rows: int = 50_000
    sender: SenderSettings = field(default_factory=SenderSettings)
    api_key: str | None = None  # needed unless dry_run
    ledger_path: Path | None = None  # None: no ledger (re-runs may send rows again)
    allow_duplicates: bool = False  # identical rows in one file are separate activities
    only_rows: frozenset[int] | None = None  # `retry`: the spreadsheet rows to take; None: all
    resolve: bool = False  # in a dry run, look contacts up (a read: needs the key)
    contacts_index: Path | None = None  # the external-id index; None: in memory, this run
    contacts_max_age: float = DEFAULT_MAX_AGE  # seconds an index is reused
    on_start: Callable[[SourceTable], None] | None = None  # called once the header is read
    on_progress: ProgressCallback | None = None  # rows decided since the last call
    on_notice: NoticeCallback | None = None  # a line the user should see (rate changes)


def run_import(options: RunOptions) -> Summary:
    """Run one import (or dry run) to the end; give its summary."""
    table = _open_checked(options)
    if not options.dry_run or options.resolve:
        _check_send_settings(options)
    summary = Summary(dry_run=options.dry_run, results_path=str(options.results_path))
    with ResultsWriter(options.results_path, overwrite=options.overwrite_results) as writer:
        if options.on_start is not None:
            options.on_start(table)
        report = _Reporter(writer, summary, options.on_progress)
        try:
            if options.dry_run and options.resolve:
                asyncio.run(_dry_run_resolving(table, Mapper(options.mapping), report, options))
            elif options.dry_run:
                _dry_run(table, Mapper(options.mapping), report, options)
            else:
                with open_ledger(options.ledger_path) as ledger:
                    asyncio.run(_send_run(table, Mapper(options.mapping), report, options, ledger))
        finally:
            summary.finish()
            writer.flush()
    if options.summary_json is not None:
        write_summary_json(summary, options.summary_json)
    return summary


@contextlib.contextmanager
def open_ledger(path: Path | None) -> Iterator[Ledger | None]:
    if path is None:
        yield None
        return
    with Ledger.open(path) as ledger:
        yield ledger


def _open_checked(options: RunOptions) -> SourceTable:
    if options.results_path.resolve() == options.input_path.resolve():
        raise ConfigError("the results path is the input file; choose another --results")
    source = options.mapping.source
    table = open_table(
        options.input_path,
        SourceOptions(
            encoding=source.encoding,
            delimiter=source.delimiter,
            sheet=source.sheet,
            header_row=source.header_row,
            chunk_rows=options.chunk_rows,
        ),
    )
    check_columns(options.mapping, table.columns)
    return table


def _check_send_settings(options: RunOptions) -> None:
    check_base_url(options.sender.base_url)
    if not options.api_key:
        raise ConfigError(
            "no API key: set GIVEBUTTER_API_KEY (or use --dry-run, or --sandbox to try it out)"
        )


class _Reporter:
    """Writes decided outcomes, counts them and tells the progress callback."""

    def __init__(
        self, writer: ResultsWriter, summary: Summary, on_progress: ProgressCallback | None
    ) -> None:
        self.writer = writer
        self.summary = summary
        self.on_progress = on_progress

    def __call__(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        self.writer.write(outcomes)
        self.summary.add(outcomes)
        if self.on_progress is not None:
            self.on_progress(len(outcomes))

    def block(self, block: OutcomeBlock) -> None:
        self.writer.write_block(block)
        self.summary.add_block(block)
        if self.on_progress is not None:
            self.on_progress(len(block))


def decide(chunk: MappedChunk) -> OutcomeBlock:
    """A mapped chunk's outcomes before sending, column by column: SKIPPED, INVALID, or
    VALID (to send). Only valid rows show their payload's fields."""
    n = len(chunk)
    statuses, errors = [Status.VALID] * n, [""] * n
    decided = np.asarray(chunk.skipped, dtype=object) != ""
    for pos in np.flatnonzero(decided):
        statuses[pos], errors[pos] = Status.SKIPPED, chunk.skipped[pos]
    for pos, reasons in chunk.errors.items():
        statuses[pos], errors[pos] = Status.INVALID, "; ".join(reasons)
    decided[list(chunk.errors)] = True
    valid = pa.array(~decided)
    values = {name: pc.if_else(valid, column, "") for name, column in chunk.values.items()}
    # A Givebutter id is the contact; other keys are looked up (resolve.py).
    keys = pc.if_else(valid, chunk.contacts, "")
    distinct = pc.unique(keys)
    ids = [int(key) if key and ":" not in key else None for key in distinct.to_pylist()]
    contact_ids = pa.array(ids, pa.int64()).take(pc.index_in(keys, value_set=distinct))
    return OutcomeBlock(
        rows=chunk.rows,
        statuses=statuses,
        contacts=chunk.contacts,
        contact_ids=contact_ids,
        found_by=pc.if_else(pc.is_valid(contact_ids), "id", ""),
        errors=errors,
        warnings=dict(chunk.warnings),
        values=values,
    )


def decide_rows(chunk: MappedChunk) -> list[Outcome]:
    """`decide`, row by row, with a payload for each valid row: what sending needs."""
    block = decide(chunk)
    contacts, contact_ids = chunk.contacts.to_pylist(), block.contact_ids.to_pylist()
    valid = [i for i, status in enumerate(block.statuses) if status is Status.VALID]
    bodies = dict(zip(valid, chunk.bodies(valid), strict=True))
    outcomes = []
    for i, status in enumerate(block.statuses):
        outcome = Outcome(
            row=chunk.rows[i],
            status=status,
            contact=contacts[i],
            error=block.errors[i],
            warnings=list(block.warnings.get(i, ())),
        )
        if status is Status.VALID:
            outcome.payload, reasons = validate_payload(bodies[i])
            if reasons:  # the fields passed one by one: only a rule across fields gets here
                outcome.status, outcome.error = Status.INVALID, "; ".join(reasons)
            elif contact_ids[i] is not None:
                outcome.contact_id, outcome.found_by = contact_ids[i], "id"
        outcomes.append(outcome)
    return outcomes


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


UNRESOLVED = "contact not looked up in a dry run (add --resolve to look it up)"


def chunks_to_take(table: SourceTable, only_rows: frozenset[int] | None) -> Iterator[pd.DataFrame]:
    """The table's chunks, keeping only `only_rows` when given."""
    for chunk in table.chunks():
        if only_rows is not None:
            chunk = chunk[chunk.index.isin(only_rows)]
        if len(chunk):
            yield chunk


def _dry_run(table: SourceTable, mapper: Mapper, report: _Reporter, options: RunOptions) -> None:
    for chunk in chunks_to_take(table, options.only_rows):
        block = decide(mapper.map_columns(chunk))
        unresolved = pc.is_null(block.contact_ids).to_numpy(zero_copy_only=False)
        for pos in np.flatnonzero(unresolved):
            if block.statuses[pos] is Status.VALID:
                block.warnings.setdefault(int(pos), []).append(UNRESOLVED)
        report.block(block)
        pa.default_memory_pool().release_unused()  # arrow keeps freed memory otherwise


async def _dry_run_resolving(
    table: SourceTable, mapper: Mapper, report: _Reporter, options: RunOptions
) -> None:
    async with _api_session(options) as sender:
        resolver = _resolver(sender, options)
        for chunk in chunks_to_take(table, options.only_rows):
            outcomes = decide_rows(mapper.map_columns(chunk))
            await resolve_contacts(outcomes, resolver)
            report(outcomes)


@contextlib.asynccontextmanager
async def api_session(
    settings: SenderSettings, api_key: str, on_notice: NoticeCallback | None = None
) -> AsyncIterator[Sender]:
    """One HTTP session and sender for a run, the key checked before anything else."""
    check_base_url(settings.base_url)
    if not api_key:
        raise ConfigError("no API key: set GIVEBUTTER_API_KEY")
    timeout = aiohttp.ClientTimeout(total=settings.timeout)
    connector = aiohttp.TCPConnector(limit=settings.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        sender = Sender(session, api_key, settings, on_notice=on_notice)
        await sender.check_key()
        yield sender


def _api_session(options: RunOptions) -> contextlib.AbstractAsyncContextManager[Sender]:
    return api_session(options.sender, options.api_key or "", options.on_notice)


def _resolver(sender: Sender, options: RunOptions) -> ContactResolver:
    return ContactResolver(
        sender,
        index_path=options.contacts_index,
        max_age=options.contacts_max_age,
        on_notice=options.on_notice,
    )


class OrderedOutcomes:
    """Hands outcomes on in input order, holding any that arrive before earlier ones."""

    def __init__(self, sink: Callable[[list[Outcome]], None]) -> None:
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


class _RowFeed:
    """Mapped rows, one at a time, read chunk by chunk; each row numbered in input order."""

    def __init__(
        self, table: SourceTable, mapper: Mapper, only_rows: frozenset[int] | None
    ) -> None:
        self._chunks = chunks_to_take(table, only_rows)
        self._mapper = mapper
        self._seqs = itertools.count()
        self.pending: deque[tuple[int, Outcome]] = deque()  # read, not yet taken

    def next_chunk(self) -> list[tuple[int, Outcome]] | None:
        """The next chunk's rows, decided as far as they can be before sending."""
        chunk = next(self._chunks, None)
        if chunk is None:
            return None
        return [(next(self._seqs), o) for o in decide_rows(self._mapper.map_columns(chunk))]

    def __iter__(self) -> Iterator[tuple[int, Outcome]]:
        """Rows not yet taken: those pending from the current chunk, then the rest."""
        while self.pending:
            yield self.pending.popleft()
        while (rows := self.next_chunk()) is not None:
            yield from rows


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


_T = TypeVar("_T")


class _Sending:
    """One sending run's bookkeeping: what is in flight, the ledger, duplicates in the file.

    A producer task (`produce`) decides the rows and hands the valid ones to the sender's
    workers through `ready`, keeping it about half a batch ahead of them. With a ledger,
    every row is marked `sending` (durably) before it is handed on, and its outcome is
    reported only once the ledger has committed it. A key already `created` is skipped; a
    key left `sending` by an earlier run is looked for on the server first.

    Every ledger call runs on a thread of the ledger's own, one at a time, so that the
    event loop never waits for an fsync: the next batch is marked while the workers send
    the last one, and results are committed while the next requests go out. Batches are
    sized by throughput: about `MARK_AHEAD_SECONDS` of sending, within
    [`SEND_BATCH`, `SEND_BATCH_MAX`] rows.
    """

    def __init__(self, options: RunOptions, ordered: OrderedOutcomes, ledger: Ledger | None):
        self.options = options
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

    async def produce(self, feed: _RowFeed, resolver: ContactResolver, sender: Sender) -> None:
        """Decide every row of the input; admit the valid ones and hand them on in batches."""
        look_up = self.ledger is not None and not await self._in_thread(self.ledger.is_empty)
        while (rows := feed.next_chunk()) is not None:
            feed.pending.extend(rows)  # kept there, so an interruption loses no row
            await resolve_contacts([outcome for _, outcome in rows], resolver)
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
        key = key_of_json(self.options.sender.base_url, outcome.contact_id, body_json)
        if self.options.allow_duplicates:
            # The n-th copy in the file is its own activity, on every run alike.
            copy = self.occurrences[key]
            self.occurrences[key] += 1
            key = f"{key}#{copy}" if copy else key
        return _ToSend(seq, outcome, key, body, body_json)

    async def admit(self, row: _ToSend, entry: LedgerEntry | None, sender: Sender) -> bool:
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
                    self.results.append((key, SendResult(status=Status.FAILED, error=INTERRUPTED)))
            results, self.results = self.results, []
            self._write_results(results)
        waiting = [*self.committing, *self.awaiting_commit]
        self.committing, self.awaiting_commit = [], []
        self.ordered.put_many(waiting)

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
        name = self.options.input_path.name
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


# Each mark and each commit is one fsync. Bigger batches mean fewer of them, but after a
# kill -9 every row marked and not yet committed must be looked for on the server by the next
# run; sized by throughput, that is about MARK_AHEAD_SECONDS + COMMIT_SECONDS of sending.
COMMIT_EVERY = 2000  # outcomes: commit (and report) once this many wait...
COMMIT_SECONDS = 0.5  # ...or this long
SEND_BATCH = 32  # rows marked `sending` in one transaction, at least...
SEND_BATCH_MAX = 2048  # ...and at most
MARK_AHEAD_SECONDS = 0.25  # a batch is about this much sending at the rate rows are taken
LOOKUP_GROUP = 500  # rows whose keys are looked up in the ledger at once


async def _send_run(
    table: SourceTable,
    mapper: Mapper,
    report: _Reporter,
    options: RunOptions,
    ledger: Ledger | None,
) -> None:
    ordered = OrderedOutcomes(report)
    feed = _RowFeed(table, mapper, options.only_rows)
    run = _Sending(options, ordered, ledger)

    async with _api_session(options) as sender:
        resolver = _resolver(sender, options)
        producer = asyncio.create_task(run.produce(feed, resolver, sender), name="send-feed")
        tasks = [producer]
        if ledger is not None:
            tasks.append(asyncio.create_task(run.commit_regularly(), name="ledger-commit"))
        try:
            with _first_interrupt_drains(run, report.summary, options.on_notice):
                await sender.send_all(run.jobs(producer), run.on_result)
        except asyncio.CancelledError:
            report.summary.interrupted = True
        finally:
            await run.stop(*tasks)
    if report.summary.interrupted:
        _finish_interrupted(feed, run, ordered)


@contextlib.contextmanager
def _first_interrupt_drains(
    run: _Sending, summary: Summary, on_notice: NoticeCallback | None
) -> Iterator[None]:
    """While sending, a first ctrl-c takes no more rows and lets the requests in flight
    finish, so that none is left in doubt; a second abandons them, as one did before.
    Where the loop cannot take the signal (not the main thread; Windows), the first does."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    previous = signal.getsignal(signal.SIGINT)

    def again() -> None:
        if main is not None:
            main.cancel()

    def first() -> None:
        summary.interrupted = True
        run.stop_taking()
        loop.add_signal_handler(signal.SIGINT, again)
        if on_notice is not None:
            on_notice(
                f"interrupted: letting the {len(run.in_flight)} requests in flight finish "
                "(ctrl-c again to abandon them)"
            )

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, previous)  # asyncio.run's own, for what follows


def _finish_interrupted(feed: _RowFeed, run: _Sending, ordered: OrderedOutcomes) -> None:
    """Give every row not yet decided its line: read on to the end, send nothing."""
    unsent = [*run.in_flight.values(), *run.ready, *run.marking, *run.batch]
    for row in unsent:
        row.outcome.status, row.outcome.error = Status.FAILED, INTERRUPTED
    ordered.put_many((row.seq, row.outcome) for row in unsent)
    run.in_flight.clear()
    run.ready.clear()
    run.marking, run.batch = [], []
    for seq, outcome in feed:
        if outcome.status is Status.VALID:
            outcome.status, outcome.error = Status.FAILED, INTERRUPTED
        ordered.put(seq, outcome)

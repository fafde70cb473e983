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
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.errors import ConfigError
from importer.ledger import EntryState, Ledger, NewEntry, activity_key, canonical_json
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
    for pos in np.flatnonzero(np.asarray(chunk.skipped, dtype=object) != ""):
        statuses[pos], errors[pos] = Status.SKIPPED, chunk.skipped[pos]
    for pos, reasons in chunk.errors.items():
        statuses[pos], errors[pos] = Status.INVALID, "; ".join(reasons)
    valid = pa.array(np.fromiter((s is Status.VALID for s in statuses), bool, n))
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
        self._waiting[seq] = outcome
        ready = []
        while self._next in self._waiting:
            ready.append(self._waiting.pop(self._next))
            self._next += 1
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


class _Sending:
    """One sending run's bookkeeping: what is in flight, the ledger, duplicates in the file.

    With a ledger, each row's key is marked `sending` (durably) before its POST, and its
    outcome is reported only once the ledger has committed it. A key already `created`
    is skipped; a key left `sending` by an earlier run is looked for on the server first.
    """

    def __init__(self, options: RunOptions, ordered: OrderedOutcomes, ledger: Ledger | None):
        self.options = options
        self.ordered = ordered
        self.ledger = ledger
        self.in_flight: dict[int, tuple[int, Outcome, str]] = {}  # row -> (seq, outcome, key)
        self.seen: dict[str, int] = {}  # key -> first row with it, in this run
        self.occurrences: Counter[str] = Counter()
        self.awaiting_commit: list[tuple[int, Outcome]] = []
        self.batch: list[tuple[int, Outcome, str]] = []

    def key_of(self, outcome: Outcome) -> str:
        assert outcome.payload is not None and outcome.contact_id is not None
        key = activity_key(self.options.sender.base_url, outcome.contact_id, outcome.payload)
        if self.options.allow_duplicates:
            # The n-th copy in the file is its own activity, on every run alike.
            copy = self.occurrences[key]
            self.occurrences[key] += 1
            return f"{key}#{copy}" if copy else key
        return key

    async def admit(self, seq: int, outcome: Outcome, sender: Sender) -> bool:
        """Decide a valid row before sending: True to send it, False if already decided."""
        key = self.key_of(outcome)
        if key in self.seen:
            outcome.status = Status.SKIPPED
            outcome.error = f"duplicate of row {self.seen[key]}: same contact and activity"
            self.ordered.put(seq, outcome)
            return False
        self.seen[key] = outcome.row
        entry = self.ledger.lookup([key]).get(key) if self.ledger else None
        if entry is not None and entry.state is EntryState.CREATED:
            outcome.status, outcome.activity_id = Status.SKIPPED, entry.activity_id
            outcome.error = (
                f"already imported: activity {entry.activity_id} (row {entry.row} of "
                f"{entry.input_name})"
            )
            self.ordered.put(seq, outcome)
            return False
        if entry is not None and entry.state is EntryState.SENDING:
            assert outcome.payload is not None and outcome.contact_id is not None
            found = await sender.find_activity(outcome.contact_id, outcome.payload)
            if found is not None:
                self.mark_sending([(seq, outcome, key)])
                self.record(seq, outcome, key, SendResult(status=Status.CREATED, activity_id=found))
                outcome.warnings.append("an earlier run had created it; found on the server")
                return False
        self.batch.append((seq, outcome, key))
        return True

    def release_batch(self) -> list[SendJob]:
        batch, self.batch = self.batch, []
        self.mark_sending(batch)
        jobs = []
        for seq, outcome, key in batch:
            assert outcome.payload is not None and outcome.contact_id is not None
            self.in_flight[outcome.row] = (seq, outcome, key)
            jobs.append(
                SendJob(row=outcome.row, contact_id=outcome.contact_id, payload=outcome.payload)
            )
        return jobs

    def mark_sending(self, batch: list[tuple[int, Outcome, str]]) -> None:
        if self.ledger is None or not batch:
            return
        self.ledger.mark_sending(
            NewEntry(
                key=key,
                contact_id=outcome.contact_id or 0,
                row=outcome.row,
                input_name=self.options.input_path.name,
                payload_json=canonical_json(outcome.payload),
            )  # type: ignore[arg-type]
            for _, outcome, key in batch
        )

    def on_result(self, job: SendJob, result: SendResult) -> None:
        seq, outcome, key = self.in_flight.pop(job.row)
        self.record(seq, outcome, key, result)

    def record(self, seq: int, outcome: Outcome, key: str, result: SendResult) -> None:
        outcome.status = result.status
        outcome.http_status = result.http_status
        outcome.activity_id = result.activity_id
        outcome.attempts = result.attempts
        outcome.error = result.error
        if self.ledger is None:
            self.ordered.put(seq, outcome)
            return
        if result.status is Status.CREATED:
            self.ledger.record_created(key, result.activity_id or "", result.attempts)
        elif not result.ambiguous:
            self.ledger.record_failed(key, result.error, result.attempts, result.http_status)
        # An ambiguous failure stays `sending`: the next run looks for it before sending.
        self.awaiting_commit.append((seq, outcome))
        if len(self.awaiting_commit) >= COMMIT_EVERY:
            self.commit()

    def commit(self) -> None:
        """Make recorded outcomes durable, then report them."""
        if self.ledger is not None and self.ledger.pending_results:
            self.ledger.commit()
        waiting, self.awaiting_commit = self.awaiting_commit, []
        for seq, outcome in waiting:
            self.ordered.put(seq, outcome)

    async def commit_regularly(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_SECONDS)
            self.commit()


COMMIT_EVERY = 200
COMMIT_SECONDS = 0.25
SEND_BATCH = 32


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

        async def jobs() -> AsyncIterator[SendJob]:
            while (rows := feed.next_chunk()) is not None:
                feed.pending.extend(rows)  # kept there, so an interruption loses no row
                await resolve_contacts([outcome for _, outcome in rows], resolver)
                while feed.pending:
                    seq, outcome = feed.pending.popleft()
                    if outcome.status is not Status.VALID:
                        ordered.put(seq, outcome)
                        continue
                    try:
                        admitted = await run.admit(seq, outcome, sender)
                    except asyncio.CancelledError:
                        feed.pending.appendleft((seq, outcome))
                        raise
                    if admitted and len(run.batch) >= SEND_BATCH:
                        for job in run.release_batch():
                            yield job
            for job in run.release_batch():
                yield job

        committer = asyncio.create_task(run.commit_regularly())
        try:
            await sender.send_all(jobs(), run.on_result)
        except asyncio.CancelledError:
            report.summary.interrupted = True
        finally:
            committer.cancel()
            run.commit()
    if report.summary.interrupted:
        _finish_interrupted(feed, run, ordered)


def _finish_interrupted(feed: _RowFeed, run: _Sending, ordered: OrderedOutcomes) -> None:
    """Give every row not yet decided its line: read on to the end, send nothing."""
    for seq, outcome, _ in [*run.in_flight.values(), *run.batch]:
        outcome.status, outcome.error = Status.FAILED, INTERRUPTED
        ordered.put(seq, outcome)
    run.in_flight.clear()
    run.batch.clear()
    for seq, outcome in feed:
        if outcome.status is Status.VALID:
            outcome.status, outcome.error = Status.FAILED, INTERRUPTED
        ordered.put(seq, outcome)

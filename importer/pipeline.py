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
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from importer.errors import ConfigError
from importer.mapper import Mapper
from importer.mapping import Mapping, check_columns
from importer.read import SourceOptions, SourceTable, open_table
from importer.records import MappedRow, Outcome, SendResult, Status
from importer.report import ResultsWriter, Summary, write_summary_json
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
    on_start: Callable[[SourceTable], None] | None = None  # called once the header is read
    on_progress: ProgressCallback | None = None  # rows decided since the last call
    on_notice: NoticeCallback | None = None  # a line the user should see (rate changes)


def run_import(options: RunOptions) -> Summary:
    """Run one import (or dry run) to the end; give its summary."""
    table = _open_checked(options)
    if not options.dry_run:
        _check_send_settings(options)
    summary = Summary(dry_run=options.dry_run, results_path=str(options.results_path))
    with ResultsWriter(options.results_path, overwrite=options.overwrite_results) as writer:
        if options.on_start is not None:
            options.on_start(table)
        report = _Reporter(writer, summary, options.on_progress)
        try:
            if options.dry_run:
                _dry_run(table, Mapper(options.mapping), report)
            else:
                asyncio.run(_send_run(table, Mapper(options.mapping), report, options))
        finally:
            summary.finish()
            writer.flush()
    if options.summary_json is not None:
        write_summary_json(summary, options.summary_json)
    return summary


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


def decide(mapped: MappedRow) -> Outcome:
    """A mapped row's outcome before sending: VALID (to send), INVALID or SKIPPED."""
    outcome = Outcome(
        row=mapped.row, status=Status.INVALID, contact=mapped.contact, warnings=mapped.warnings
    )
    if mapped.skipped_by is not None:
        outcome.status, outcome.error = Status.SKIPPED, mapped.skipped_by
    elif mapped.errors:
        outcome.error = "; ".join(mapped.errors)
    elif ":" in mapped.contact:
        outcome.error = f"contact: cannot look up {mapped.contact} (only contact ids for now)"
    else:
        outcome.status = Status.VALID
        outcome.contact_id = int(mapped.contact)
        outcome.payload = mapped.payload
    return outcome


def _dry_run(table: SourceTable, mapper: Mapper, report: _Reporter) -> None:
    for chunk in table.chunks():
        report([decide(m) for m in mapper.map_chunk(chunk)])


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

    def __init__(self, table: SourceTable, mapper: Mapper) -> None:
        self._chunks = table.chunks()
        self._mapper = mapper
        self._rows: deque[MappedRow] = deque()
        self._seqs = itertools.count()

    def __iter__(self) -> Iterator[tuple[int, MappedRow]]:
        while True:
            if not self._rows:
                chunk = next(self._chunks, None)
                if chunk is None:
                    return
                self._rows.extend(self._mapper.map_chunk(chunk))
                continue
            yield next(self._seqs), self._rows.popleft()


async def _send_run(
    table: SourceTable, mapper: Mapper, report: _Reporter, options: RunOptions
) -> None:
    ordered = OrderedOutcomes(report)
    feed = _RowFeed(table, mapper)
    in_flight: dict[int, tuple[int, Outcome]] = {}  # row -> (seq, outcome so far)

    def on_result(job: SendJob, result: SendResult) -> None:
        seq, outcome = in_flight.pop(job.row)
        outcome.status = result.status
        outcome.http_status = result.http_status
        outcome.activity_id = result.activity_id
        outcome.attempts = result.attempts
        outcome.error = result.error
        ordered.put(seq, outcome)

    async def jobs() -> AsyncIterator[SendJob]:
        for seq, mapped in feed:
            outcome = decide(mapped)
            if outcome.status is not Status.VALID or outcome.payload is None:
                ordered.put(seq, outcome)
                continue
            in_flight[mapped.row] = (seq, outcome)
            yield SendJob(row=mapped.row, contact_id=int(mapped.contact), payload=outcome.payload)

    timeout = aiohttp.ClientTimeout(total=options.sender.timeout)
    connector = aiohttp.TCPConnector(limit=options.sender.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        sender = Sender(session, options.api_key or "", options.sender, on_notice=options.on_notice)
        await sender.check_key()
        try:
            await sender.send_all(jobs(), on_result)
        except asyncio.CancelledError:
            report.summary.interrupted = True
    if report.summary.interrupted:
        _finish_interrupted(feed, in_flight, ordered)


def _finish_interrupted(
    feed: _RowFeed, in_flight: dict[int, tuple[int, Outcome]], ordered: OrderedOutcomes
) -> None:
    """Give every row not yet decided its line: read on to the end, send nothing."""
    for seq, outcome in in_flight.values():
        outcome.status, outcome.error = Status.FAILED, INTERRUPTED
        ordered.put(seq, outcome)
    in_flight.clear()
    for seq, mapped in feed:
        outcome = decide(mapped)
        if outcome.status is Status.VALID:
            outcome.status, outcome.error = Status.FAILED, INTERRUPTED
        ordered.put(seq, outcome)

"""The pipeline: wires read → map → resolve → send → report for one run.

A library user builds `RunOptions` and calls `run_import(options)`, or, from async code,
`await run_import_async(options)`; the CLI does nothing more. Before any row is read, the
input's header is checked against the mapping and the results file is created, so a run
that cannot start fails at once (`ImporterError`).

Every input row ends in exactly one line of the results CSV, in input order, whatever
happens: a dry run without a ledger decides each chunk at once; a sending run (and a dry
run with a ledger, which says what a run would do) hands the decided rows to
`importer.delivery`, which posts them exactly once and reports them as the API answers.
Nothing is sent in a dry run. The summary file, when asked for, is written at every end,
a failed one included, so a stale one never survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from importer.decide import decide_rows_of
from importer.delivery import DeliverySettings, RowFeed, deliver
from importer.dry_run import chunks_to_take, dry_run_in_thread, dry_run_resolving
from importer.errors import ConfigError, ImporterError
from importer.key_records import KeyRecords
from importer.ledger import Ledger, normalise_base_url
from importer.ledger_file import default_ledger_path
from importer.mapper import Mapper
from importer.mapping import check_columns
from importer.options import DEFAULT_SOURCE, RunOptions, contacts_index_beside
from importer.ratelimit import NoticeCallback
from importer.read import SourceOptions, SourceTable, open_table
from importer.records import Outcome
from importer.report import Reporter, ResultsWriter, Summary, write_summary_json
from importer.resolve import ContactResolver, resolve_contacts
from importer.selection import RowSelection
from importer.send import Sender, SenderSettings, api_session, check_base_url
from importer.sync_run import keys_to_delete
from importer.undo import failed_rows


def run_import(options: RunOptions) -> Summary:
    """Run one import (or dry run) to the end; give its summary. Not from a running event
    loop: there, `await run_import_async(options)`."""
    return run_to_end(run_import_async(options), "run_import_async")


def retry_failed(results_of: Path, options: RunOptions) -> Summary | None:
    """Send again the rows an earlier run's results CSV reports `failed` (None: there are
    none). `options` is the earlier run's, with a new results path."""
    return run_to_end(retry_failed_async(results_of, options), "retry_failed_async")


async def retry_failed_async(results_of: Path, options: RunOptions) -> Summary | None:
    if not (rows := failed_rows(results_of)):
        return None
    again = dataclasses.replace(options, rows=RowSelection.of(rows), dry_run=False, resolve=False)
    return await run_import_async(again)


async def refresh_contact_index(
    settings: SenderSettings,
    api_key: str,
    index_path: Path | None = None,
    *,
    session: aiohttp.ClientSession | None = None,
    on_notice: NoticeCallback | None = None,
) -> int:
    """Rebuild the contact index now (default: beside the default ledger); give the
    number of contacts in it."""
    index = index_path or contacts_index_beside(default_ledger_path())
    async with api_session(settings, api_key, on_notice=on_notice, session=session) as sender:
        resolver = ContactResolver(sender, index_path=index, on_notice=on_notice)
        with contextlib.closing(resolver):
            return await resolver.refresh_index()


_T = TypeVar("_T")
SENDING_CHUNK_ROWS = 10_000  # rows a sending run reads at a time (`_chunk_rows`)


def run_to_end(work: Coroutine[Any, Any, _T], async_name: str) -> _T:
    """`asyncio.run(work)`, or, inside a running event loop, a `ConfigError` naming the
    async function to await instead (and `work` closed, never started)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    work.close()
    raise ConfigError(f"called inside a running event loop: await {async_name}(...) instead")


async def run_import_async(options: RunOptions) -> Summary:
    """`run_import` for async code: the file work runs on a thread, so the caller's event
    loop is never blocked for long."""
    summary = Summary(dry_run=options.dry_run, results_path=str(options.results_path))
    writer: ResultsWriter | None = None
    try:
        table = _open_checked(options)
        if not options.dry_run or options.resolve:
            _check_send_settings(options)
        writer = ResultsWriter(options.results_path, overwrite=options.overwrite_results)
        with writer:
            if options.on_start is not None:
                options.on_start(table)
            report = Reporter(writer, summary, options.on_progress)
            try:
                await _run(table, Mapper(options.mapping), report, options)
            finally:
                writer.flush()
    except ImporterError as error:
        summary.error = str(error)
        if writer is not None and writer.rows_written == 0:
            # It could not start (the key refused, a ledger in use, a guard): a results
            # file of a header alone would read as an empty input.
            options.results_path.unlink(missing_ok=True)
        raise
    except asyncio.CancelledError:
        summary.interrupted = True
        raise
    finally:
        summary.finish()
        if options.summary_json is not None:
            write_summary_json(summary, options.summary_json)
    return summary


async def _run(table: SourceTable, mapper: Mapper, report: Reporter, options: RunOptions) -> None:
    # A dry run with a ledger at hand says what a run would do (`would create`, ...).
    reads_ledger = options.dry_run and options.ledger is not None and options.ledger.exists()
    if options.dry_run and not options.resolve:
        if reads_ledger:
            await _deliver(table, mapper, report, options, None, None)
        else:
            await dry_run_in_thread(table, mapper, report, options.rows)
        return
    async with api_session(
        options.sender,
        options.api_key or "",
        on_notice=options.on_notice,
        session=options.session,
    ) as sender:
        resolver = ContactResolver(
            sender,
            index_path=options.contact_index,
            max_age=options.contacts_max_age,
            on_notice=options.on_notice,
            create_contacts=options.create_contacts,
            dry_run=options.dry_run,
        )
        with contextlib.closing(resolver):
            if options.dry_run and not reads_ledger:
                await dry_run_resolving(table, mapper, report, options.rows, resolver)
            else:
                await _deliver(table, mapper, report, options, sender, resolver)


def _open_checked(options: RunOptions) -> SourceTable:
    if options.results_path.resolve() == options.input_path.resolve():
        raise ConfigError("the results path is the input file; choose another results path")
    if options.summary_json is not None:
        _check_summary_path(options.summary_json)
    if options.create_contacts and options.mapping.contact.create is None:
        raise ConfigError(
            "creating contacts was asked for, but the mapping does not say how (contact:"
            " {email: …, create: {first_name: …, last_name: …}})",
            setting="create_contacts",
        )
    source = options.mapping.source
    table = open_table(
        options.input_path,
        SourceOptions(
            encoding=source.encoding,
            delimiter=source.delimiter,
            sheet=source.sheet,
            header_row=source.header_row,
            chunk_rows=options.rows.chunk_rows(_chunk_rows(options), source.header_row),
        ),
    )
    check_columns(options.mapping, table.columns)
    return table


def _chunk_rows(options: RunOptions) -> int:
    """A dry run reads `options.chunk_rows` at a time (its columnar checks are faster on
    long chunks); a sending run at most SENDING_CHUNK_ROWS: it sends a few thousand rows a
    second at best, and a longer chunk costs only memory (a 50,000-row chunk made a long
    run's peak 1.2× a short one's)."""
    return options.chunk_rows if options.dry_run else min(options.chunk_rows, SENDING_CHUNK_ROWS)


def _check_summary_path(path: Path) -> None:
    """Before the first request, as the results path is: the summary must be writable at
    the end, whatever the end (it is written on every exit, so no stale one survives)."""
    if path.is_dir():
        raise ConfigError(f"the summary path {path} is a folder")
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write the summary {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"cannot write the summary {path}: permission denied")


def _check_send_settings(options: RunOptions) -> None:
    check_base_url(options.sender.base_url)
    if not options.api_key:
        raise ConfigError("no API key was given: a run that sends (or resolves) needs one")


async def _deliver(
    table: SourceTable,
    mapper: Mapper,
    report: Reporter,
    options: RunOptions,
    sender: Sender | None,
    resolver: ContactResolver | None,
) -> None:
    chunks = decide_rows_of(chunks_to_take(table, options.rows), mapper)

    async def resolve(outcomes: list[Outcome]) -> None:
        if resolver is not None:
            await resolve_contacts(outcomes, resolver)

    with _opened_ledger(options.ledger, new_ledger=options.new_ledger) as ledger:
        if not options.dry_run:
            _settle_by_hand(ledger, options)
        settings = DeliverySettings(
            base_url=options.sender.base_url,
            input_name=options.input_path.name,
            allow_duplicates=options.allow_duplicates,
            source=options.source or DEFAULT_SOURCE,
            run_id=time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}",
            recreate_deleted=options.recreate_deleted,
            max_failures=options.max_failures,
            looks_at_once=options.sender.concurrency,
            dry_run=options.dry_run,
        )
        if options.delete_missing and ledger is not None and options.mapping.key:
            records = KeyRecords(ledger, normalise_base_url(settings.base_url), settings.source, "")
            missing = keys_to_delete(table.chunks(), mapper, records, options.max_delete)
            settings = dataclasses.replace(settings, deletions=missing)
        try:
            report.summary.interrupted = await deliver(
                RowFeed(chunks, resolve),
                sender,
                ledger,
                settings,
                report,
                interruption=options.interruption,
                on_notice=options.on_notice,
            )
        except asyncio.CancelledError:
            report.summary.interrupted = True
            raise


@contextlib.contextmanager
def _opened_ledger(path: Path | None, *, new_ledger: bool = False) -> Iterator[Ledger | None]:
    if path is None:
        yield None
        return
    with Ledger.open(path, new_ledger=new_ledger) as ledger:
        yield ledger


def _settle_by_hand(ledger: Ledger | None, options: RunOptions) -> None:
    """Apply `--mark-created` / `--mark-absent` to rows of this input before sending."""
    if not (options.mark_created or options.mark_absent):
        return
    if ledger is None:
        raise ConfigError("--mark-created and --mark-absent settle rows in the ledger: keep one")
    name = options.input_path.name
    for row, activity_id in sorted(options.mark_created.items()):
        ledger.settle_created(row, activity_id, input_name=name)
        _tell(options, f"row {row}: settled by hand as created (activity {activity_id})")
    for row in sorted(options.mark_absent):
        ledger.settle_absent(row, input_name=name)
        _tell(options, f"row {row}: settled by hand as not created; it is sent in this run")


def _tell(options: RunOptions, line: str) -> None:
    if options.on_notice is not None:
        options.on_notice(line)

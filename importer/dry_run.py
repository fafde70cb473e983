"""A dry run: every row mapped and decided, nothing sent.

A plain dry run works column by column (`decide_columns`) on a thread of its own, so that
an event loop that awaits it stays free; rows whose contact is named by email or external
id are `valid` with a warning that they were not looked up. `dry_run_resolving` looks them
up (a read, through the run's sender) and decides row by row.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.decide import decide_columns, decide_rows_of
from importer.mapper import Mapper
from importer.read import SourceTable
from importer.records import Status
from importer.report import Reporter
from importer.resolve import ContactResolver, resolve_contacts
from importer.selection import RowSelection

UNRESOLVED = "contact not looked up in a dry run (add --resolve to look it up)"


def chunks_to_take(table: SourceTable, rows: RowSelection) -> Iterator[pd.DataFrame]:
    """The table's chunks, keeping only the selected rows (reading no further than needed)."""
    return rows.take(table.chunks())


async def dry_run_in_thread(
    table: SourceTable, mapper: Mapper, report: Reporter, rows: RowSelection
) -> None:
    """The dry run on a thread of its own; a cancellation stops it between chunks."""
    stop = threading.Event()
    work = asyncio.ensure_future(asyncio.to_thread(_dry_run, table, mapper, report, rows, stop))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.gather(work, return_exceptions=True)
        raise


def _dry_run(
    table: SourceTable,
    mapper: Mapper,
    report: Reporter,
    rows: RowSelection,
    stop: threading.Event,
) -> None:
    for chunk in chunks_to_take(table, rows):
        if stop.is_set():
            return
        block = decide_columns(mapper.map_columns(chunk))
        unresolved = pc.is_null(block.contact_ids).to_numpy(zero_copy_only=False)
        for pos in np.flatnonzero(unresolved):
            if block.statuses[pos] is Status.VALID:
                block.warnings.setdefault(int(pos), []).append(UNRESOLVED)
        report.block(block)
        pa.default_memory_pool().release_unused()  # arrow keeps freed memory otherwise


async def dry_run_resolving(
    table: SourceTable,
    mapper: Mapper,
    report: Reporter,
    rows: RowSelection,
    resolver: ContactResolver,
) -> None:
    for outcomes in decide_rows_of(chunks_to_take(table, rows), mapper):
        await resolve_contacts(outcomes, resolver)
        report(outcomes)

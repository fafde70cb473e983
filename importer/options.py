"""`RunOptions`: everything one run needs, with the command line's defaults, and where a
run keeps its state unless told otherwise (the ledger in the user's data folder, the
contact index beside it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from importer.delivery import Interruption
from importer.feed import FailureLimit
from importer.ledger_file import default_ledger_path
from importer.mapping import Mapping
from importer.ratelimit import NoticeCallback
from importer.read import SourceTable
from importer.resolve import DEFAULT_MAX_AGE
from importer.selection import EVERY_ROW, RowSelection
from importer.send import SenderSettings
from importer.sync_run import DeleteLimit

DEFAULT_SOURCE = "default"


def contacts_index_beside(ledger: Path | None) -> Path | None:
    """The contact index lives beside the ledger (one per account); none: in memory."""
    return None if ledger is None else ledger.with_name("contacts.sqlite")


@dataclass(kw_only=True)
class RunOptions:
    """Everything one run needs. Paths are checked when the run starts.

    The defaults are the command line's: a ledger in the user's data folder (so that a
    re-run never sends a row twice), its contact index beside it."""

    input_path: Path
    mapping: Mapping
    results_path: Path
    dry_run: bool = False
    overwrite_results: bool = False
    summary_json: Path | None = None
    chunk_rows: int = 50_000
    sender: SenderSettings = field(default_factory=SenderSettings)
    api_key: str | None = None  # needed unless dry_run
    session: aiohttp.ClientSession | None = None  # None: one is built for the run
    keep_ledger: bool = True  # False: no record; a re-run sends every row again
    ledger_path: Path | None = None  # None: `default_ledger_path()`
    allow_duplicates: bool = False  # identical rows in one file are separate activities
    rows: RowSelection = EVERY_ROW  # the data rows to take (--limit, --rows); others: no line
    new_ledger: bool = False  # an empty ledger file is meant: start a new ledger in it
    mark_created: dict[int, str] = field(default_factory=dict)  # rows in doubt settled by hand
    mark_absent: frozenset[int] = frozenset()  # rows in doubt a person found absent: send them
    resolve: bool = False  # in a dry run, look contacts up (a read: needs the key)
    contacts_index: Path | None = None  # None: beside the ledger (in memory without one)
    contacts_max_age: float = DEFAULT_MAX_AGE  # seconds an index is reused
    source: str = ""  # with `key:`: the stream of files the keys belong to; "" = "default"
    recreate_deleted: bool = False  # a keyed row whose activity was deleted is created again
    delete_missing: bool = False  # with `key:`: delete the activities of keys not in the input
    max_delete: DeleteLimit = field(default_factory=DeleteLimit)  # ...but never more than this
    max_failures: FailureLimit | None = None  # take no more rows after this many failed
    create_contacts: bool = False  # create missing contacts as the mapping's `create:` says
    interruption: Interruption | None = None  # lets a caller stop the run (ctrl-c)
    on_start: Callable[[SourceTable], None] | None = None  # called once the header is read
    on_progress: Callable[[int], None] | None = None  # rows decided since the last call
    on_notice: NoticeCallback | None = None  # a line the user should see (rate changes)

    @property
    def ledger(self) -> Path | None:
        """The ledger's path, or None when the run keeps none."""
        if not self.keep_ledger:
            return None
        return self.ledger_path or default_ledger_path()

    @property
    def contact_index(self) -> Path | None:
        return self.contacts_index or contacts_index_beside(self.ledger)

"""What delivery writes to the ledger, on the ledger's thread: rows about to be sent, then
their results, each a transaction (one fsync).

A row without a source key is an entry of the ledger (known by its content); a row with
one, a record of `KeyRecords` (known by its key, its content a version).
"""

from __future__ import annotations

from collections.abc import Iterable

from importer.feed import ToSend
from importer.key_records import Begun, KeyRecords
from importer.ledger import Ledger, NewEntry
from importer.records import Change, SendResult, Status

# A row's ledger key, its result, and its change (None: a row without a source key).
Written = tuple[str, SendResult, Change | None]


def mark_sending(ledger: Ledger, records: KeyRecords, input_name: str, rows: list[ToSend]) -> None:
    """Mark `rows` as being sent, durably, before any of their requests goes out."""
    ledger.mark_sending(
        NewEntry(row.key, row.outcome.contact_id or 0, row.outcome.row, input_name, row.body_json)
        for row in rows
        if not row.version
    )
    records.begin([_begun(row, input_name) for row in rows if row.version])


def write_results(ledger: Ledger, records: KeyRecords, results: Iterable[Written]) -> None:
    """Record what became of rows sent, and commit."""
    for key, result, change in results:
        if change is not None:
            _finish_record(records, key, result, change)
        elif result.status is Status.CREATED:
            ledger.record_created(key, result.activity_id or "", result.attempts)
        else:
            ledger.record_failed(key, result.error, result.attempts, result.http_status)
    ledger.commit()
    records.commit()


def _begun(row: ToSend, input_name: str) -> Begun:
    outcome = row.outcome
    return Begun(
        row.key,
        row.change,
        outcome.contact,
        outcome.contact_id or 0,
        row.body_json,
        row.version,
        outcome.row,
        input_name,
    )


def _finish_record(records: KeyRecords, key: str, result: SendResult, change: Change) -> None:
    if result.status is not Status.FAILED:
        records.finish(key, change, result.activity_id)
    elif result.gone:
        records.gone(key)
    else:
        records.fail(key)

"""Taking a run back: `givebutter-import undo RESULTS.csv` puts Givebutter back as it was
before that run, as far as the run changed it.

`undo_lines` reads the lines of a results CSV that changed something; `undo_changes` takes
each back, one after another, through the same sender, rate limit and retries as an import:

- created: `DELETE` the activity (a 404 counts: it is gone either way); the ledger forgets
  it, so that a corrected run may create it again;
- updated (a sync run): `PUT` back the content the ledger kept from before the update;
- moved: delete the new activity, create the old content on the old contact again;
- deleted (`--delete-missing`): create the activity again from the content the ledger kept.

Taking back an update, a move or a deletion needs the ledger (it alone knows what was there
before); without it such a line is reported not undone. Undo the latest run first: the
ledger keeps one earlier version of each record.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from importer.errors import InputError
from importer.key_records import find_record
from importer.ledger import Ledger, normalise_base_url
from importer.payload import ActivityPayload
from importer.records import Status
from importer.send import RequestFailed, Sender, SenderSettings, api_session

UNDOABLE = (Status.CREATED, Status.UPDATED, Status.MOVED, Status.DELETED)


@dataclass(frozen=True, slots=True)
class ChangedLine:
    """One line of a results CSV whose run changed something in Givebutter."""

    row: int | None
    key: str
    status: Status
    contact_id: int
    activity_id: str

    def describe(self) -> str:
        where = f"row {self.row}" if self.row else f"key {self.key}"
        return (
            f"{where} ({self.status.value}): contact {self.contact_id}, activity {self.activity_id}"
        )


@dataclass(frozen=True, slots=True)
class Undone:
    line: ChangedLine
    done: bool
    reason: str = ""


def read_results(path: Path) -> list[dict[str, str]]:
    """The lines of a results CSV written by this tool; InputError if it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"cannot read results {path}: {error}") from None
    if lines and not {"row", "status", "contact_id", "activity_id"} <= set(lines[0]):
        raise InputError(f"{path} is not a results CSV of givebutter-import")
    return lines


def failed_rows(path: Path) -> list[int]:
    """The spreadsheet rows a run reported `failed`."""
    return [int(line["row"]) for line in read_results(path) if line["status"] == Status.FAILED]


def undo_lines(path: Path) -> list[ChangedLine]:
    """The lines whose run created, updated, moved or deleted an activity, in file order."""
    return [
        ChangedLine(
            int(line["row"]) if line["row"] else None,
            line.get("key", ""),
            Status(line["status"]),
            int(line["contact_id"]),
            line["activity_id"],
        )
        for line in read_results(path)
        if line["status"] in UNDOABLE and line["activity_id"] and line["contact_id"]
    ]


async def undo_changes(
    sender: Sender,
    lines: list[ChangedLine],
    ledger: Ledger | None,
    base_url: str,
    on_done: Callable[[Undone], None] | None = None,
) -> list[Undone]:
    """Take each line's change back, one after another; give what happened to each."""
    keys = _ledger_keys(ledger) if any(not line.key for line in lines) else {}
    account = normalise_base_url(base_url)
    done = []
    for line in lines:
        try:
            if line.key:
                undone = await _undo_record(sender, line, ledger, account)
            else:
                undone = await _delete(sender, line)
                if undone.done and ledger is not None and line.activity_id in keys:
                    ledger.forget(keys[line.activity_id])
        except RequestFailed as failure:
            undone = Undone(line, False, str(failure))
        done.append(undone)
        if on_done is not None:
            on_done(undone)
    return done


async def _delete(sender: Sender, line: ChangedLine) -> Undone:
    answer = await sender.request("DELETE", _activity_path(line.contact_id, line.activity_id))
    if answer.ok or answer.status == 404:
        return Undone(line, True)
    return Undone(line, False, f"{answer.status}: {answer.message()}")


async def _undo_record(
    sender: Sender, line: ChangedLine, ledger: Ledger | None, account: str
) -> Undone:
    """A sync run's line: put the record back as the ledger knew it before the run."""
    found = find_record(ledger, account, line.activity_id) if ledger is not None else None
    if found is None:
        return Undone(line, False, "the ledger does not know this activity: not undone")
    records, record = found
    if line.status is Status.CREATED:
        undone = await _delete(sender, line)
        if undone.done:
            records.forget(record.key)
        return undone
    before = record.previous_json or (record.body_json if line.status is Status.DELETED else None)
    if before is None:
        return Undone(line, False, "the ledger kept no earlier content: not undone")
    body = json.loads(before)
    if line.status is Status.UPDATED:
        answer = await sender.request(
            "PUT", _activity_path(line.contact_id, line.activity_id), json=body
        )
        if not answer.ok:
            return Undone(line, False, f"{answer.status}: {answer.message()}")
        records.restore(record, line.activity_id)
        return Undone(line, True)
    if line.status is Status.MOVED:
        undone = await _delete(sender, line)
        if not undone.done:
            return undone
    contact_id = record.previous_contact_id or record.contact_id or line.contact_id
    created = await sender.create_activity(contact_id, ActivityPayload.model_validate(body))
    if created.status is not Status.CREATED:
        return Undone(line, False, created.error)
    records.restore(record, created.activity_id)
    return Undone(line, True)


async def undo_run(
    results_of: Path,
    settings: SenderSettings,
    api_key: str,
    *,
    ledger_path: Path | None,
    session: aiohttp.ClientSession | None = None,
    on_done: Callable[[Undone], None] | None = None,
) -> list[Undone]:
    """Take back what the run behind `results_of` did (see the module's docstring), using
    the ledger at `ledger_path` if it exists."""
    lines = undo_lines(results_of)
    if not lines:
        return []
    async with api_session(settings, api_key, session=session) as sender:
        if ledger_path is None or not ledger_path.exists():
            return await undo_changes(sender, lines, None, settings.base_url, on_done)
        with Ledger.open(ledger_path) as ledger:
            return await undo_changes(sender, lines, ledger, settings.base_url, on_done)


def _activity_path(contact_id: int, activity_id: str) -> str:
    return f"/contacts/{int(contact_id)}/activities/{activity_id}"


def _ledger_keys(ledger: Ledger | None) -> dict[str, str]:
    if ledger is None:
        return {}
    return {e.activity_id: e.key for e in ledger.created_entries() if e.activity_id}

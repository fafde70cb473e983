"""Taking a run back: `givebutter-import undo RESULTS.csv` deletes what that run created.

`created_lines` reads a results CSV's `created` rows; `delete_activities` sends
`DELETE /v1/contacts/{contact}/activities/{activity}` for each, through the same sender,
rate limit and retries as an import, and forgets each deleted activity in the ledger so
that a later run may create it again. A 404 counts as deleted (it is gone either way).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from importer.errors import InputError
from importer.ledger import Ledger
from importer.records import Status
from importer.send import RequestFailed, Sender, SenderSettings, api_session


@dataclass(frozen=True, slots=True)
class CreatedLine:
    """One `created` line of a results CSV."""

    row: int
    contact_id: int
    activity_id: str


@dataclass(frozen=True, slots=True)
class Deletion:
    line: CreatedLine
    deleted: bool
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


def created_lines(path: Path) -> list[CreatedLine]:
    return [
        CreatedLine(int(line["row"]), int(line["contact_id"]), line["activity_id"])
        for line in read_results(path)
        if line["status"] == Status.CREATED and line["activity_id"] and line["contact_id"]
    ]


async def delete_activities(
    sender: Sender,
    lines: list[CreatedLine],
    ledger: Ledger | None,
    on_done: Callable[[Deletion], None] | None = None,
) -> list[Deletion]:
    """Delete each line's activity, one after another; give what happened to each."""
    keys = _ledger_keys(ledger)
    done = []
    for line in lines:
        path = f"/contacts/{line.contact_id}/activities/{line.activity_id}"
        try:
            answer = await sender.request("DELETE", path)
            deletion = Deletion(
                line,
                answer.ok or answer.status == 404,
                "" if answer.ok else f"{answer.status}: {answer.message()}",
            )
        except RequestFailed as failure:
            deletion = Deletion(line, False, str(failure))
        if deletion.deleted and ledger is not None and line.activity_id in keys:
            ledger.forget(keys[line.activity_id])
        done.append(deletion)
        if on_done is not None:
            on_done(deletion)
    return done


async def undo_run(
    results_of: Path,
    settings: SenderSettings,
    api_key: str,
    *,
    ledger_path: Path | None,
    session: aiohttp.ClientSession | None = None,
    on_done: Callable[[Deletion], None] | None = None,
) -> list[Deletion]:
    """Delete every activity that the run behind `results_of` created; forget them in the
    ledger at `ledger_path` (if it exists), so that a corrected run can create them again."""
    lines = created_lines(results_of)
    if not lines:
        return []
    async with api_session(settings, api_key, session=session) as sender:
        if ledger_path is None or not ledger_path.exists():
            return await delete_activities(sender, lines, None, on_done)
        with Ledger.open(ledger_path) as ledger:
            return await delete_activities(sender, lines, ledger, on_done)


def _ledger_keys(ledger: Ledger | None) -> dict[str, str]:
    if ledger is None:
        return {}
    return {e.activity_id: e.key for e in ledger.created_entries() if e.activity_id}

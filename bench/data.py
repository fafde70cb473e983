"""The benchmark's own data: activity exports of any length, made on demand and cached.

Every file is made from a seeded generator, so the same name always holds the same rows;
a file already in `bench/data/` is reused (an `.xlsx` of 100,000 rows takes a while to
write). The six columns are what a CRM's activity export looks like:

    Contact ID, Channel, Subject, Notes, Date, Status

Two kinds of file:

- `dry_run_csv(rows)`: a realistic mix, with about 1% cancelled rows (skipped), 0.5% dates
  that cannot be read and 0.2% blank contacts (invalid), channels in mixed case, notes with
  commas, quotes, line breaks and accents, and a few subjects over 255 characters;
- `send_csv(rows)`: rows that all become requests the sandbox accepts (live contacts only,
  nothing skipped or invalid), so every row is one POST.

`xlsx(rows)` holds the realistic mix as a workbook, with real date cells.

`sync_csvs(rows, changed)` is a nightly export of records with their own ids: the send file
with an `Activity ID` column, and the next night's copy in which `changed` of the records
have a corrected subject (`MAPPING_SYNC` keys on that column).

`by_email_csv(rows, people)` is an export that knows people only by email (`Email, Type,
Note`): `rows` rows spread over `people` of the sandbox's live seeded contacts, each row a
different activity, the email written in varied case and spacing as exports do.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parent / "data"
COLUMNS = ("Contact ID", "Channel", "Subject", "Notes", "Date", "Status")
_VERSION = 3  # bump when the generator changes, so cached files are made afresh
_SEED = 20240305
_FIRST_CONTACT, _CONTACTS, _ARCHIVED_EVERY = 10001, 1000, 50  # the sandbox's seeded contacts
_CSV_DATE_FORMAT = "%m/%d/%Y %I:%M %p"

_CHANNELS = (
    "Phone Call", "Email", "Meeting", "Text Message", "Note", "Task", "Volunteer Shift",
    "PHONE CALL", "email", " meeting ", "",
)  # fmt: skip
_SUBJECTS = (
    "Thank-you call", "Event invitation", "Site visit", "Year-end appeal follow-up",
    "Board introduction", "Pledge reminder", "Volunteer orientation", "Gala RSVP",
    "Major gift conversation", "Newsletter feedback", "", "Grant report — Q3",
)  # fmt: skip
_CLEAN_CHANNELS = _CHANNELS[:7]  # as the mapping spells them
_CLEAN_SUBJECTS = tuple(s for s in _SUBJECTS if s)
_LONG_SUBJECT = "Notes from the donor advisory committee: " + "agenda item, " * 20
_NOTES = (
    "",
    'Said "call me after the holidays", will follow up in January.',
    "Café meeting went well — loves the youth program.",
    "Left voicemail; no answer.",
    "Asked about matching gifts, sent the form.\nWill check with HR.",
    "Prefers email over phone, 2nd request.",
    "Renewed at the same level as last year.",
    "Interested in volunteering at the spring 5K, Saturday mornings only.",
)

MAPPING_CSV = """\
source: {encoding: utf-8, delimiter: ","}
contact: Contact ID
activity:
  type:
    column: Channel
    map:
      Phone Call: phone_call
      Email: email
      Meeting: meeting
      Text Message: sms
      Note: note
      Task: completed_task
      Volunteer Shift: volunteer_activity
    default: note
  subject: {column: Subject, truncate: 255}
  note: Notes
  occurred_at:
    column: Date
    formats: ["%m/%d/%Y %I:%M %p"]
    timezone: America/Chicago
  timezone: {value: America/Chicago}
skip:
  - {column: Status, equals: Cancelled}
"""

# Workbooks hold real date cells, which arrive as ISO 8601 text: no formats are needed.
MAPPING_XLSX = MAPPING_CSV.replace('    formats: ["%m/%d/%Y %I:%M %p"]\n', "").replace(
    'source: {encoding: utf-8, delimiter: ","}\n', ""
)


def mapping_path(kind: str) -> Path:
    """The mapping YAML for `kind` ("csv" or "xlsx"), written if missing or changed."""
    return _mapping_file(f"mapping-{kind}.yaml", MAPPING_CSV if kind == "csv" else MAPPING_XLSX)


def dry_run_csv(rows: int) -> Path:
    """A CSV of `rows` realistic rows (some skipped, some invalid)."""
    path = DATA_DIR / f"activities-mixed-v{_VERSION}-{rows}.csv"
    return _cached(path, lambda to: _write_csv(activities(rows, mixed=True), to))


def send_csv(rows: int) -> Path:
    """A CSV of `rows` rows that each become one request the sandbox accepts."""
    path = DATA_DIR / f"activities-send-v{_VERSION}-{rows}.csv"
    return _cached(path, lambda to: _write_csv(activities(rows, mixed=False), to))


SYNC_KEY = "Activity ID"
MAPPING_SYNC = f"{MAPPING_CSV}key: {SYNC_KEY}\n"


def sync_mapping() -> Path:
    """The mapping YAML of `sync_csvs`: the CSV mapping, keyed on `SYNC_KEY`."""
    return _mapping_file("mapping-sync.yaml", MAPPING_SYNC)


def sync_csvs(rows: int, changed: int) -> tuple[Path, Path]:
    """Last night's export of `rows` keyed records, and tonight's: the same file with the
    subject of `changed` records (spread over the file) corrected."""
    stem = f"activities-sync-v{_VERSION}-{rows}"
    frame = activities(rows, mixed=False)
    frame.insert(0, SYNC_KEY, [f"00T{i:09d}" for i in range(rows)])  # a Salesforce-like id
    first = _cached(DATA_DIR / f"{stem}.csv", lambda to: _write_csv(frame, to))
    edited = frame.copy()
    picked = np.random.default_rng(_SEED).choice(rows, changed, replace=False)
    edited.loc[picked, "Subject"] = edited.loc[picked, "Subject"] + " (corrected)"
    second = _cached(DATA_DIR / f"{stem}-{changed}-edited.csv", lambda to: _write_csv(edited, to))
    return first, second


MAPPING_BY_EMAIL = "contact: {email: Email}\nactivity: {type: Type, note: Note}\n"


def by_email_mapping() -> Path:
    """The mapping YAML of `by_email_csv`."""
    return _mapping_file("mapping-by-email.yaml", MAPPING_BY_EMAIL)


def _mapping_file(name: str, text: str) -> Path:
    """`bench/data/NAME` holding `text`, written if missing or changed."""
    path = DATA_DIR / name
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


def by_email_csv(rows: int, people: int) -> Path:
    """`rows` rows naming `people` live seeded contacts by email (see the module doc)."""
    path = DATA_DIR / f"activities-by-email-v{_VERSION}-{rows}-{people}.csv"
    return _cached(path, lambda to: _by_email(rows, people).to_csv(to, index=False))


def _by_email(rows: int, people: int) -> pd.DataFrame:
    from importer.sandbox import seeded_contact  # the sandbox's own people, not a copy

    live = [n for n in range(1, people * 2) if n % _ARCHIVED_EVERY][:people]
    emails = np.array([seeded_contact(n).emails[0].value for n in live], dtype=object)
    rng = np.random.default_rng(_SEED)
    picked = emails[np.arange(rows) % people]  # every person, about rows / people times
    rng.shuffle(picked)
    styled = np.where(rng.random(rows) < 0.3, np.char.upper(picked.astype(str)), picked)
    return pd.DataFrame(
        {
            "Email": [f" {e}" if i % 7 == 0 else e for i, e in enumerate(styled)],
            "Type": _pick(rng, ("note", "phone_call", "email", "meeting"), rows),
            "Note": [f"Activity {i} of the old CRM" for i in range(rows)],
        }
    )


def xlsx(rows: int) -> Path:
    """A workbook of `rows` realistic rows on one sheet, dates as real date cells."""
    path = DATA_DIR / f"activities-mixed-v{_VERSION}-{rows}.xlsx"
    return _cached(path, lambda to: _write_xlsx(activities(rows, mixed=True), to))


def activities(rows: int, *, mixed: bool) -> pd.DataFrame:
    """The rows themselves: text columns, except `Date` (naive datetimes)."""
    rng = np.random.default_rng(_SEED + rows + (0 if mixed else 1))
    frame = pd.DataFrame(
        {
            "Contact ID": _contact_ids(rng, rows, live_only=not mixed),
            "Channel": _pick(rng, _CHANNELS if mixed else _CLEAN_CHANNELS, rows),
            "Subject": _pick(rng, _SUBJECTS if mixed else _CLEAN_SUBJECTS, rows),
            "Notes": _pick(rng, _NOTES, rows),
            "Date": _dates(rng, rows),
            "Status": np.full(rows, "Completed", dtype=object),
        },
        columns=list(COLUMNS),
    )
    if mixed:
        _spoil(frame, rng)
    return frame


def _contact_ids(rng: np.random.Generator, rows: int, *, live_only: bool) -> np.ndarray:
    ids = np.arange(_FIRST_CONTACT, _FIRST_CONTACT + _CONTACTS)
    if live_only:  # every 50th seeded contact is archived and answers 403
        ids = ids[ids % _ARCHIVED_EVERY != 0]
    return rng.choice(ids, rows).astype(str).astype(object)


def _pick(rng: np.random.Generator, choices: tuple[str, ...], rows: int) -> np.ndarray:
    return np.asarray(choices, dtype=object)[rng.integers(0, len(choices), rows)]


def _dates(rng: np.random.Generator, rows: int) -> pd.Series:
    start = pd.Timestamp("2019-01-01").value // 10**9
    seconds = rng.integers(0, 5 * 365 * 24 * 4, rows) * 15 * 60  # five years, quarter hours
    return pd.Series(pd.to_datetime(start + seconds, unit="s"))


def _spoil(frame: pd.DataFrame, rng: np.random.Generator) -> None:
    """Make some rows skipped or invalid, as in a real export."""
    n = len(frame)
    frame.loc[rng.random(n) < 0.01, "Status"] = "Cancelled"
    frame.loc[rng.random(n) < 0.002, "Contact ID"] = ""
    frame.loc[rng.random(n) < 0.005, "Subject"] = _LONG_SUBJECT
    frame["Date"] = frame["Date"].astype(object)
    frame.loc[rng.random(n) < 0.005, "Date"] = "sometime in spring"


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    dates = frame["Date"]
    is_date = dates.map(lambda v: isinstance(v, pd.Timestamp | dt.datetime))
    text = dates.astype(object).copy()
    text[is_date] = pd.to_datetime(dates[is_date]).dt.strftime(_CSV_DATE_FORMAT)
    frame.assign(Date=text).to_csv(path, index=False, encoding="utf-8")


def _write_xlsx(frame: pd.DataFrame, path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Activities")
    sheet.append(list(COLUMNS))
    for record in frame.itertuples(index=False, name=None):
        sheet.append([_xlsx_cell(value) for value in record])
    book.save(path)


def _xlsx_cell(value: object) -> object:
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def _cached(path: Path, write: Callable[[Path], None]) -> Path:
    """`path`, written by `write(destination)` first if it is not there yet.

    The file is written under another name and renamed, so an interrupted run never leaves
    a half-written file to be reused.
    """
    if path.is_file():
        return path
    print(f"bench: making {path.relative_to(DATA_DIR.parent.parent)}", file=sys.stderr, flush=True)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"partial-{path.name}")
    write(partial)
    partial.replace(path)
    return path

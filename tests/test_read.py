"""The read stage: formats, encodings, delimiters, header rows, row numbers, broken files."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pyarrow as pa
import pytest
import python_calamine

import importer.read.workbook
from importer.errors import InputError
from importer.read import READ_ERROR_COLUMN, SourceOptions, SourceTable, open_table

# -- helpers -----------------------------------------------------------------------------------


def write(directory: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = directory / name
    path.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
    return path


def records(table: SourceTable) -> dict[int, dict[str, str]]:
    """Every record of the table by row number, without the read-error column."""
    found: dict[int, dict[str, str]] = {}
    for chunk in table.chunks():
        found.update(chunk.drop(columns=READ_ERROR_COLUMN).to_dict("index"))
    return found


def read_errors(table: SourceTable) -> dict[int, str]:
    return {
        row: error
        for chunk in table.chunks()
        for row, error in chunk[READ_ERROR_COLUMN].items()
        if error
    }


def error_for(path: Path, **options: object) -> str:
    """The InputError message from opening `path` and reading it through."""
    with pytest.raises(InputError) as raised:
        for _chunk in open_table(path, SourceOptions(**options)).chunks():  # type: ignore[arg-type]
            pass
    return str(raised.value)


# -- encodings ---------------------------------------------------------------------------------

TEXT = "id,name\n1,Zoë\n"


def test_utf8_file_is_detected(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", TEXT))
    assert table.encoding == "utf-8"
    assert records(table) == {2: {"id": "1", "name": "Zoë"}}


def test_utf8_byte_order_mark_is_stripped_from_the_first_header(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", TEXT, "utf-8-sig"))
    assert table.encoding == "utf-8-sig"
    assert table.columns == ["id", "name"]
    assert records(table) == {2: {"id": "1", "name": "Zoë"}}


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_byte_order_mark_is_detected(tmp_path: Path, codec: str) -> None:
    bom = "\ufeff".encode(codec)
    table = open_table(write(tmp_path, "a.csv", bom + "id\tname\n1\tZoë\n".encode(codec)))
    assert table.encoding == "utf-16"
    assert table.columns == ["id", "name"]
    assert records(table) == {2: {"id": "1", "name": "Zoë"}}


def test_bytes_that_are_not_utf8_fall_back_to_cp1252(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "id;note\n1;café’s €5\n", "cp1252"))
    assert table.encoding == "cp1252"
    assert records(table) == {2: {"id": "1", "note": "café’s €5"}}


def test_named_encoding_is_used_instead_of_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "id,price\n1,€5\n", "iso8859-15")  # € is 0xA4 here
    table = open_table(path, SourceOptions(encoding="ISO-8859-15"))
    assert table.encoding == "iso8859-15"
    assert records(table) == {2: {"id": "1", "price": "€5"}}


def test_unknown_encoding_name_is_an_input_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", TEXT)
    assert "unknown encoding 'klingon-8'" in error_for(path, encoding="klingon-8")


def test_named_encoding_that_does_not_fit_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "id,name\n1,café\n", "cp1252")
    assert "line 2 is not valid utf-8 (byte 0xE9" in error_for(path, encoding="utf-8")


def test_bytes_past_the_sample_that_are_not_utf8_are_an_input_error_naming_the_line(
    tmp_path: Path,
) -> None:
    body = "id,name\n" + "1,ascii only\n" * 100_000 + "2,café\n"  # about 1.3 MB
    path = write(tmp_path, "a.csv", body, "cp1252")
    table = open_table(path)
    assert table.encoding == "utf-8"
    with pytest.raises(InputError, match=r"line 100002 is not valid utf-8 \(byte 0xE9"):
        list(table.chunks())


def test_nul_byte_past_the_sample_is_an_input_error_naming_the_line(tmp_path: Path) -> None:
    body = b"id,name\n" + b"1,ascii only\n" * 100_000 + b"2,a\x00b\n"
    table = open_table(write(tmp_path, "a.csv", body))
    with pytest.raises(InputError, match="line 100002 holds a NUL byte"):
        list(table.chunks())


# -- delimiters --------------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    others = "".join(d for d in ",;\t|" if d != delimiter)  # in a cell, outnumbering it
    text = delimiter.join(["id", "note"]) + "\n" + delimiter.join(["1", f"a{others}b"]) + "\n"
    table = open_table(write(tmp_path, "a.csv", text))
    assert table.delimiter == delimiter
    assert records(table) == {2: {"id": "1", "note": f"a{others}b"}}


def test_delimiter_inside_quoted_header_cells_is_not_counted(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", '"Last, First";"City, State"\nDoe, J;Ames, IA\n'))
    assert table.delimiter == ";"
    assert table.columns == ["Last, First", "City, State"]


def test_named_delimiter_is_used_instead_of_sniffing(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "a,b;c,d\n1,2;3,4\n")
    table = open_table(path, SourceOptions(delimiter=";"))
    assert table.columns == ["a,b", "c,d"]
    assert records(table) == {2: {"a,b": "1,2", "c,d": "3,4"}}


def test_tab_alias_names_the_tab_delimiter(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.tsv", "a,b\tc\n1,2\t3\n"), SourceOptions(delimiter="tab"))
    assert table.delimiter == "\t"
    assert table.columns == ["a,b", "c"]


def test_file_with_one_column_is_read(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.txt", "email\nann@example.org\n"))
    assert table.columns == ["email"]
    assert records(table) == {2: {"email": "ann@example.org"}}


# -- cells as text -----------------------------------------------------------------------------


def test_ids_and_numbers_stay_as_written(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "id,amount,big\n00123,1.0,1e3\n"))
    assert records(table) == {2: {"id": "00123", "amount": "1.0", "big": "1e3"}}


def test_na_and_null_stay_text(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "a,b,c,d\nNA,null,N/A,NaN\n"))
    assert records(table) == {2: {"a": "NA", "b": "null", "c": "N/A", "d": "NaN"}}


def test_every_cell_is_a_python_str_and_blank_is_empty(tmp_path: Path) -> None:
    chunk = next(open_table(write(tmp_path, "a.csv", "a,b,c\n1,,3\n")).chunks())
    assert chunk.to_numpy().tolist() == [["1", "", "3", ""]]
    assert all(type(cell) is str for cell in chunk.to_numpy().ravel())
    assert list(chunk.columns) == ["a", "b", "c", READ_ERROR_COLUMN]


def test_cells_keep_their_spaces_but_header_names_are_stripped(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", " id , name \n 1 , Ann \n"))
    assert table.columns == ["id", "name"]
    assert records(table) == {2: {"id": " 1 ", "name": " Ann "}}


# -- row numbers -------------------------------------------------------------------------------


def test_blank_lines_are_skipped_but_counted_in_row_numbers(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "id,name\n1,a\n\n,\n2,b\n\n"))
    assert records(table) == {2: {"id": "1", "name": "a"}, 5: {"id": "2", "name": "b"}}


def test_quoted_cell_with_line_breaks_is_one_row(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", 'id,note\n1,"two\nlines"\n2,b\n'))
    assert records(table) == {2: {"id": "1", "note": "two\nlines"}, 3: {"id": "2", "note": "b"}}


def test_windows_line_endings_number_rows_alike(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "id,name\r\n1,a\r\n\r\n2,b\r\n"))
    assert records(table) == {2: {"id": "1", "name": "a"}, 4: {"id": "2", "name": "b"}}


def test_rows_above_the_header_row_are_skipped(tmp_path: Path) -> None:
    text = 'Activity export\n"run on\n2024-03-05"\n\nid,name\n1,a\n'
    table = open_table(write(tmp_path, "a.csv", text), SourceOptions(header_row=4))
    assert table.columns == ["id", "name"]
    assert records(table) == {5: {"id": "1", "name": "a"}}


def test_chunks_number_rows_across_chunk_boundaries(tmp_path: Path) -> None:
    text = "id\n" + "".join(f"{i}\n" for i in range(10))
    chunks = list(open_table(write(tmp_path, "a.csv", text), SourceOptions(chunk_rows=3)).chunks())
    assert [len(chunk) for chunk in chunks] == [3, 3, 3, 1]
    assert [row for chunk in chunks for row in chunk.index] == list(range(2, 12))
    assert [cell for chunk in chunks for cell in chunk["id"]] == [str(i) for i in range(10)]


# -- ragged rows -------------------------------------------------------------------------------


def test_row_with_more_fields_is_kept_and_marked(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "a,b\n1,2\n3,4,5,,6\n7,8\n"))
    assert records(table)[3] == {"a": "3", "b": "4"}
    assert read_errors(table) == {3: "row has 5 fields, the header has 2"}


def test_row_with_fewer_fields_gets_empty_cells(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "a,b,c\n1\n"))
    assert records(table) == {2: {"a": "1", "b": "", "c": ""}}
    assert read_errors(table) == {}


def test_trailing_empty_fields_are_not_a_problem(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "a,b\n1,2,,\n"))
    assert read_errors(table) == {}


def test_row_with_far_too_many_fields_is_an_input_error_naming_the_row(tmp_path: Path) -> None:
    # Rows as wide as any in the sample (the first MiB) plus four are kept and marked; a row
    # wider than that, further on, is no row of this table.
    text = "a,b\n" + "1,2\n" * 300_000 + ",".join("x" * 12) + "\n"
    message = error_for(write(tmp_path, "a.csv", text))
    assert "row 300002 has 12 fields, the header has 2" in message
    assert "is the delimiter ',' right?" in message


@pytest.mark.parametrize("chunk_rows", [2, 50_000])
def test_rows_far_wider_than_the_header_are_read_apart_in_their_places(
    tmp_path: Path, chunk_rows: int
) -> None:
    # Wider than twice the header and four: pandas skips them and the reader puts them back.
    text = (
        'a,b\n1,"x\ny"\n' + "2," + "," * 50 + "z\n" + "," * 50 + "\n3,c\n4," + "," * 30 + "\n5,e\n"
    )
    table = open_table(write(tmp_path, "a.csv", text), SourceOptions(chunk_rows=chunk_rows))
    chunks = list(table.chunks())
    assert all(0 < len(chunk) <= chunk_rows for chunk in chunks)
    assert records(table) == {
        2: {"a": "1", "b": "x\ny"},
        3: {"a": "2", "b": ""},
        5: {"a": "3", "b": "c"},
        6: {"a": "4", "b": ""},
        7: {"a": "5", "b": "e"},
    }
    assert read_errors(table) == {3: "row has 52 fields, the header has 2"}


def test_a_row_read_apart_keeps_its_place_when_arrow_hands_over_before_it(
    tmp_path: Path,
) -> None:
    text = "a,b\n" + "1,2\n" * 10 + "3,4,5\n" + "6," + "," * 40 + "w\n" + "7,8\n"
    table = open_table(write(tmp_path, "a.csv", text), SourceOptions(chunk_rows=4))
    assert list(records(table)) == list(range(2, 15))
    assert records(table)[13] == {"a": "6", "b": ""}
    assert read_errors(table) == {
        12: "row has 3 fields, the header has 2",
        13: "row has 42 fields, the header has 2",
    }


# -- broken files ------------------------------------------------------------------------------


def test_unclosed_quote_is_an_input_error_naming_the_row(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", 'id,note\n1,a\n\n2,"never closed\n3,c\n')
    assert error_for(path).endswith("a.csv: row 4 opens a quoted cell that is never closed")


def test_a_broken_body_is_found_by_chunks_not_by_open_table(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", 'id,note\n1,"never closed\n'))
    assert table.columns == ["id", "note"]
    with pytest.raises(InputError):
        next(table.chunks())


def test_binary_file_named_csv_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", bytes(range(256)) * 4)
    assert "a.csv: contains NUL bytes: it is not a text file" in error_for(path)


def test_workbook_named_csv_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    openpyxl.Workbook().save(path)
    assert "is a zip archive (an .xlsx or .ods workbook?)" in error_for(path)


def test_empty_file_is_an_input_error(tmp_path: Path) -> None:
    assert error_for(write(tmp_path, "a.csv", b"")).endswith("a.csv: the file is empty")


def test_header_only_file_has_columns_and_no_chunks(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "id,name\n"))
    assert table.columns == ["id", "name"]
    assert list(table.chunks()) == []


def test_repeated_header_names_are_an_input_error_naming_them(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "id,email,name,email\n1,a,b,c\n")
    assert "the header repeats column names: 'email' (columns 2, 4)" in error_for(path)


def test_blank_header_cell_is_named_for_its_column_number(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", ",id,,name\n0,1,2,3\n"))
    assert table.columns == ["column_1", "id", "column_3", "name"]


def test_blank_header_cells_after_the_last_name_are_dropped(tmp_path: Path) -> None:
    table = open_table(write(tmp_path, "a.csv", "id,name,,\n1,a,,\n2,b,,x\n"))
    assert table.columns == ["id", "name"]
    assert read_errors(table) == {3: "row has 4 fields, the header has 2"}


def test_blank_header_row_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "\nid,name\n")
    assert "row 1, the header row, is empty" in error_for(path)


def test_header_row_past_the_end_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "id\n1\n")
    assert "the file has 2 rows, so row 5 cannot be the header row" in error_for(path, header_row=5)


def test_reserved_column_name_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", f"id,{READ_ERROR_COLUMN}\n1,2\n")
    assert "reserved name" in error_for(path)


def test_unknown_extension_is_an_input_error_listing_formats(tmp_path: Path) -> None:
    message = error_for(write(tmp_path, "a.json", "{}"))
    assert "unknown file type '.json'" in message
    assert ".csv, .tsv, .txt, .xlsx, .xlsm, .xls, .ods" in message


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    assert error_for(tmp_path / "nope.csv").endswith("nope.csv: no such file")


# -- workbooks ---------------------------------------------------------------------------------


@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    """Sheet "Log": a title, a blank row, the header on row 3, records on rows 4 and 6."""
    book = openpyxl.Workbook()
    log = book.active
    assert log is not None
    log.title = "Log"
    log.append(["Activity log"])
    log.append([])
    log.append(["id", "when", "day", "amount", "done", "code", "name"])
    log.append([123, dt.datetime(2024, 3, 5, 14, 30), dt.date(2024, 3, 5), 12.5, True, "00123"])
    log.append([])
    log.append([4.0, dt.datetime(2024, 3, 6), None, 0.1, False, None, "Bo"])
    other = book.create_sheet("Other")
    other.append(["key"])
    other.append(["x"])
    path = tmp_path / "log.xlsx"
    book.save(path)
    return path


def test_workbook_header_row_below_a_title(workbook: Path) -> None:
    table = open_table(workbook, SourceOptions(header_row=3))
    assert table.format == "excel"
    assert table.sheet == "Log"
    assert table.columns == ["id", "when", "day", "amount", "done", "code", "name"]


def test_workbook_rows_are_numbered_as_excel_shows_them(workbook: Path) -> None:
    table = open_table(workbook, SourceOptions(header_row=3))
    assert list(records(table)) == [4, 6]


def test_workbook_cells_become_text_as_a_person_reads_them(workbook: Path) -> None:
    rows = records(open_table(workbook, SourceOptions(header_row=3)))
    assert rows[4] == {
        "id": "123",
        "when": "2024-03-05T14:30:00",
        "day": "2024-03-05",
        "amount": "12.5",
        "done": "TRUE",
        "code": "00123",
        "name": "",
    }
    assert rows[6] == {
        "id": "4",
        "when": "2024-03-06",
        "day": "",
        "amount": "0.1",
        "done": "FALSE",
        "code": "",
        "name": "Bo",
    }


def test_workbook_cells_are_python_str(workbook: Path) -> None:
    chunk = next(open_table(workbook, SourceOptions(header_row=3)).chunks())
    assert all(type(cell) is str for cell in chunk.to_numpy().ravel())
    assert chunk.index.tolist() == [4, 6]


def test_workbook_formula_gives_its_cached_value(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["id", "total"])
    sheet.append([1, "=1+1"])
    saved = tmp_path / "saved.xlsx"
    book.save(saved)
    path = tmp_path / "formula.xlsx"  # as Excel saves it: the formula and its last result
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(rb"(<f>1\+1</f>)<v\s*/>", rb"\1<v>2</v>", data)
            target.writestr(item, data)
    assert records(open_table(path)) == {2: {"id": "1", "total": "2"}}


@pytest.mark.parametrize("sheet", ["Other", 1])
def test_workbook_sheet_is_chosen_by_name_or_index(workbook: Path, sheet: str | int) -> None:
    table = open_table(workbook, SourceOptions(sheet=sheet))
    assert table.sheet == "Other"
    assert records(table) == {2: {"key": "x"}}


def test_workbook_first_sheet_is_the_default(workbook: Path) -> None:
    assert open_table(workbook).sheet == "Log"


def test_missing_sheet_is_an_input_error_listing_the_sheets(workbook: Path) -> None:
    message = error_for(workbook, sheet="Calls")
    assert "no sheet 'Calls'; the sheets are 0: 'Log', 1: 'Other'" in message


def test_workbook_value_beyond_the_header_is_marked(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["id", "name"])
    sheet.append([1, "a", None, "stray"])
    path = tmp_path / "a.xlsx"
    book.save(path)
    table = open_table(path)
    assert records(table) == {2: {"id": "1", "name": "a"}}
    assert read_errors(table) == {2: "row has a value in column D, which has no header"}


def test_workbook_chunks_number_rows_across_chunk_boundaries(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["id"])
    for i in range(10):
        sheet.append([i])
    path = tmp_path / "a.xlsx"
    book.save(path)
    chunks = list(open_table(path, SourceOptions(chunk_rows=3)).chunks())
    assert [len(chunk) for chunk in chunks] == [3, 3, 3, 1]
    assert [row for chunk in chunks for row in chunk.index] == list(range(2, 12))


def test_empty_sheet_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "a.xlsx"
    openpyxl.Workbook().save(path)
    assert "sheet 'Sheet' is empty" in error_for(path)


def test_workbook_is_read_by_openpyxl_when_calamine_cannot(
    workbook: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: Path, choice: str | int | None) -> None:
        raise python_calamine.CalamineError("cannot")

    monkeypatch.setattr(importer.read.workbook, "_calamine_sheet", refuse)
    table = open_table(workbook, SourceOptions(header_row=3))
    assert records(table) == records(open_table(workbook, SourceOptions(header_row=3)))
    assert list(records(table)) == [4, 6]


def test_ods_workbook_is_read(tmp_path: Path) -> None:
    path = write_ods(tmp_path / "a.ods", [["id", "when"], [123, "2024-03-05T14:30:00"]])
    assert records(open_table(path)) == {2: {"id": "123", "when": "2024-03-05T14:30:00"}}


def test_csv_named_xlsx_is_an_input_error(tmp_path: Path) -> None:
    message = error_for(write(tmp_path, "a.xlsx", "id,name\n1,a\n"))
    assert message.endswith("a.xlsx: is text, not a .xlsx workbook: if it is CSV, name it .csv")


def test_zip_that_is_not_a_workbook_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "a.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hello")
    assert "a.xlsx: cannot be read as a workbook" in error_for(path)


def test_encrypted_workbook_is_an_input_error(tmp_path: Path) -> None:
    # An encrypted .xlsx is an OLE container holding an "EncryptionInfo" stream.
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + "EncryptionInfo".encode("utf-16-le")
    message = error_for(write(tmp_path, "a.xlsx", ole + bytes(512)))
    assert "password-protected" in message


def write_ods(path: Path, rows: list[list[object]]) -> Path:
    """A minimal OpenDocument spreadsheet: numbers as floats, ISO strings as dates."""

    def cell(value: object) -> str:
        if isinstance(value, int | float):
            kind = f'office:value-type="float" office:value="{value}"'
        elif isinstance(value, str) and value[:4].isdigit():
            kind = f'office:value-type="date" office:date-value="{value}"'
        else:
            kind = 'office:value-type="string"'
        return f"<table:table-cell {kind}><text:p>{value}</text:p></table:table-cell>"

    body = "".join(
        "<table:table-row>" + "".join(cell(v) for v in row) + "</table:table-row>" for row in rows
    )
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-content'
        ' xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        ' xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"'
        ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        "<office:body><office:spreadsheet>"
        f'<table:table table:name="Sheet1">{body}</table:table>'
        "</office:spreadsheet></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest'
        ' xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"'
        ' manifest:version="1.2"><manifest:file-entry manifest:full-path="/"'
        ' manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("META-INF/manifest.xml", manifest)
        archive.writestr("content.xml", content)
    return path


def test_pandas_str_dtype_is_not_used_for_cells(tmp_path: Path) -> None:
    """pandas' own `str` dtype would give NaN for a missing cell: cells are object or arrow
    strings, every one a `str`."""
    chunk = next(open_table(write(tmp_path, "a.csv", TEXT)).chunks())
    arrow_text = pd.ArrowDtype(pa.string())
    assert all(dtype == np.dtype(object) or dtype == arrow_text for dtype in chunk.dtypes)
    assert all(isinstance(cell, str) for column in chunk for cell in chunk[column])


def test_date_time_cells_become_text_column_wise_exactly_as_cell_by_cell() -> None:
    import datetime as dt
    import random

    from importer.read.workbook import _cell_text, _date_times_as_text

    rng = random.Random(7)
    stamps = []
    for _ in range(2000):
        stamp = dt.datetime(rng.randint(1000, 9999), rng.randint(1, 12), rng.randint(1, 28))
        precision = rng.randint(0, 4)
        if precision >= 1:
            stamp = stamp.replace(hour=rng.randint(0, 23), minute=rng.randint(0, 59))
        if precision >= 2:
            stamp = stamp.replace(second=rng.randint(0, 59))
        if precision == 3:
            stamp = stamp.replace(microsecond=rng.randint(0, 999) * 1000)
        if precision == 4:
            stamp = stamp.replace(microsecond=rng.randint(0, 999_999))
        stamps.append(stamp)
    odd = [dt.datetime(1, 1, 1, 12), dt.datetime(2024, 1, 1, tzinfo=dt.UTC)]  # cell by cell
    for values in (["text", "", *stamps], [*stamps[:5], *odd]):
        cells = _date_times_as_text(pd.Series(values, dtype=object))
        assert cells.to_list() == [_cell_text(v) for v in values]

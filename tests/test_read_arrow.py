"""Delimited text read by arrow's reader gives exactly what pandas' reader gives: the same
cells, row numbers and read errors, chunk by chunk; where arrow meets something irregular,
pandas takes over from the first record not yet handed out, and says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import importer.read.arrow
import importer.read.delimited
from importer.errors import InputError
from importer.read import SourceOptions, open_table

REGULAR = "id,name,note\n" + "".join(f"{n},name {n},note {n}\n" for n in range(40))

FILES = {
    "regular": REGULAR,
    "regular, no final line break": REGULAR.rstrip("\n"),
    "quoted cells across lines": 'id,note\n1,"a\nb"\n2,"x ""quoted"" y"\n3,plain\n' * 5,
    "a blank line midway": REGULAR + "\n" + REGULAR.split("\n", 1)[1],
    "blank lines at the end": REGULAR + "\n\n",
    "a short row midway": REGULAR + "41,only two\n" + REGULAR.split("\n", 1)[1],
    "a row with a trailing delimiter": REGULAR + "41,a,b,\n42,c,d\n",
    "a row with an extra value": REGULAR + "41,a,b,extra\n42,c,d\n",
    "rows above the header": "exported by CRM\n\nid,name\n1,a\n2,b\n",
    "quoted everywhere": '"Id","Subject"\n"1","a ""b"""\n"2","c"\n' * 3,
    "a header cell across lines": '"id","note\n(free text)"\n1,a\n2,b\n',
    "a form feed in the header": 'id,"note\x0c"\n1,a\n2,b\n',
    "a cell longer than a block": REGULAR + '41,"' + "long\n" * 70_000 + '",end\n',
    "blank header cell at the end": "id,name,\n1,a,\n2,b,\n3,c,late\n",
    "whitespace-only line": REGULAR + "   \n42,c,d\n",
    "a byte-order mark": "\ufeffid,name\n1,Zoë\n2,Chloé\n",
    "one column, blank lines": "email\na@example.org\n\nb@example.org\n",
    "carriage returns only": REGULAR.replace("\n", "\r"),
    "semicolons": REGULAR.replace(",", ";"),
}

BROKEN = {
    "a quote never closed, last field": REGULAR + '41,a,"never closed\n42,b,c\n',
    "a quote never closed, middle field": REGULAR + '41,"never closed,b\n42,b,c\n',
    "a NUL byte midway": REGULAR + "41,a\x00b,c\n",
}


def chunks(path: Path, *, arrow: bool, chunk_rows: int, header_row: int = 1) -> list[pd.DataFrame]:
    """The file's chunks, read by arrow where it may (or by pandas alone), cells as objects."""
    with pytest.MonkeyPatch.context() as patch:
        if not arrow:
            patch.setattr(importer.read.arrow, "may_read", lambda *_: False)
        table = open_table(path, SourceOptions(chunk_rows=chunk_rows, header_row=header_row))
        return [chunk.astype(object) for chunk in table.chunks()]


@pytest.fixture(params=[1 << 20, 64], ids=["one block", "64-byte blocks"])
def block_size(request, monkeypatch) -> int:
    monkeypatch.setattr(importer.read.arrow, "_ARROW_BLOCK", request.param)
    return request.param


@pytest.mark.parametrize("chunk_rows", [7, 50_000])
@pytest.mark.parametrize("name", FILES)
def test_arrow_reads_what_pandas_reads(tmp_path, block_size, name, chunk_rows) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(FILES[name].encode("utf-8"))
    by_arrow = chunks(path, arrow=True, chunk_rows=chunk_rows)
    by_pandas = chunks(path, arrow=False, chunk_rows=chunk_rows)
    assert len(by_arrow) == len(by_pandas) > 0
    for mine, theirs in zip(by_arrow, by_pandas, strict=True):
        pd.testing.assert_frame_equal(mine, theirs)


@pytest.mark.parametrize(
    "text",
    [
        "exported by CRM\n\nid,name\n1,a\n2,b\n",
        'Report "Q1"\n,\n"Id","Subject"\n"1","a"\n\n"2","c"\n',
        '"title\nacross lines"\nid,name\n1,a\n',
    ],
)
def test_a_header_below_other_rows_is_found_alike(tmp_path, block_size, text) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(text.encode("utf-8"))
    by_arrow = chunks(path, arrow=True, chunk_rows=7, header_row=3)
    by_pandas = chunks(path, arrow=False, chunk_rows=7, header_row=3)
    assert len(by_arrow) == len(by_pandas)
    for mine, theirs in zip(by_arrow, by_pandas, strict=True):
        pd.testing.assert_frame_equal(mine, theirs)


@pytest.mark.parametrize("name", BROKEN)
def test_what_pandas_refuses_is_refused_alike(tmp_path, block_size, name) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(BROKEN[name].encode("utf-8"))
    messages = []
    for arrow in (True, False):
        with pytest.raises(InputError) as raised:
            chunks(path, arrow=arrow, chunk_rows=7)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]


def test_a_regular_utf8_file_is_read_by_arrow(tmp_path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(REGULAR, encoding="utf-8")
    chunk = next(open_table(path).chunks())
    assert isinstance(chunk["name"].dtype, pd.ArrowDtype)


def test_other_encodings_are_read_by_pandas(tmp_path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes("id,name\n1,Zoë\n".encode("cp1252"))
    chunk = next(open_table(path).chunks())
    assert chunk["name"].dtype == object and chunk["name"].tolist() == ["Zoë"]


@pytest.mark.parametrize(
    ("name", "pandas_from"),
    [
        ("regular", None),
        ("quoted everywhere", None),
        ("a blank line midway", None),
        ("a short row midway", 35),
    ],
)
def test_pandas_takes_over_only_from_the_first_chunk_not_handed_out(
    tmp_path, monkeypatch, name, pandas_from
) -> None:
    monkeypatch.setattr(importer.read.arrow, "_ARROW_BLOCK", 64)
    starts: list[int] = []
    pandas_records = importer.read.delimited._pandas_records

    def spy(plan, start):
        starts.append(start)
        return pandas_records(plan, start)

    monkeypatch.setattr(importer.read.delimited, "_pandas_records", spy)
    path = tmp_path / "in.csv"
    path.write_bytes(FILES[name].encode("utf-8"))
    rows = sum(len(chunk) for chunk in open_table(path, SourceOptions(chunk_rows=7)).chunks())
    assert starts == ([] if pandas_from is None else [pandas_from])
    records = FILES[name].splitlines()[1:]
    assert rows == len([record for record in records if record])

"""Finding the header row of a sheet, as a person would."""

import datetime as dt

from importer.layout import header_row_of


def test_title_rows_above_the_header_are_passed_over():
    rows = [
        ["Activities with Contacts — FY24", "", ""],
        ["Generated", dt.datetime(2024, 7, 1), ""],
        ["", "", ""],
        ["Contact", "Type", "Date"],
        ["10001", "Call", dt.datetime(2024, 1, 2)],
        ["10002", "Email", dt.datetime(2024, 1, 3)],
    ]
    assert header_row_of(rows) == 4


def test_a_row_of_numbers_or_repeated_names_is_not_a_header():
    rows = [[1.0, 2.0, 3.0], ["A", "A", "B"], ["Contact", "Type", "Date"], ["1", "2", "3"]]
    assert header_row_of(rows) == 3


def test_a_narrow_row_above_a_wide_table_is_a_title_not_the_header():
    rows = [["Report", "FY24"], ["A", "B", "C", "D", "E"], ["1", "2", "3", "4", "5"]]
    assert header_row_of(rows) == 2


def test_a_sheet_of_notes_has_no_header():
    assert header_row_of([["Read me"], ["Exported from HubSpot"], ["Do not edit"]]) is None

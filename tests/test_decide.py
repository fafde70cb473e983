"""Deciding rows for sending: a few thousand at a time, whatever the reader's chunk size."""

from __future__ import annotations

import dataclasses

import pytest

import importer.decide
import importer.pipeline
from importer.cli import main
from importer.decide import decide_rows, decide_rows_of
from importer.mapper import Mapper
from importer.mapping import load_mapping
from importer.read import SourceOptions, open_table
from tests.conftest import MAPPINGS, QUICK_RATE, SAMPLES, rows_of

DONOR_CSV = SAMPLES / "donor-crm-activities.csv"
DONOR_MAPPING = MAPPINGS / "donor-crm-activities.yaml"


def whole_chunk():
    table = open_table(DONOR_CSV, SourceOptions(chunk_rows=1000))
    return table, Mapper(load_mapping(DONOR_MAPPING))


def test_rows_decided_in_parts_are_the_rows_decided_at_once():
    table, mapper = whole_chunk()
    (chunk,) = list(table.chunks())
    at_once = decide_rows(mapper.map_columns(chunk))
    parts = list(decide_rows_of(table.chunks(), mapper, at_once=37))
    assert [len(part) for part in parts] == [37] * 8 + [4]
    flat = [outcome for part in parts for outcome in part]
    assert [dataclasses.asdict(o) for o in flat] == [dataclasses.asdict(o) for o in at_once]
    assert {o.status for o in flat} == {"valid", "invalid", "skipped"}


def test_parts_never_span_two_of_the_readers_chunks():
    table = open_table(DONOR_CSV, SourceOptions(chunk_rows=100))
    _, mapper = whole_chunk()
    sizes = [len(part) for part in decide_rows_of(table.chunks(), mapper, at_once=60)]
    assert sizes == [60, 40, 60, 40, 60, 40]


def test_a_sending_run_decides_at_most_rows_at_once_rows_at_a_time(sandbox, tmp_path, monkeypatch):
    monkeypatch.setattr(importer.decide, "ROWS_AT_ONCE", 50)
    sizes: list[int] = []
    original = importer.decide.decide_rows

    def counting(chunk):
        outcomes = original(chunk)
        sizes.append(len(outcomes))
        return outcomes

    monkeypatch.setattr(importer.decide, "decide_rows", counting)
    results = tmp_path / "r.csv"
    argv = ["run", str(DONOR_CSV), "-m", str(DONOR_MAPPING), "--base-url", sandbox.base_url]
    assert main([*argv, "--no-ledger", "--rate", QUICK_RATE, "-q", "--results", str(results)]) == 1
    assert sizes == [50] * 6
    lines = rows_of(results)
    assert [int(line["row"]) for line in lines] == list(range(2, 302))
    assert sum(line["status"] == "created" for line in lines) == 287


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_sending_run_reads_shorter_chunks_than_a_dry_run(sandbox, tmp_path, monkeypatch, dry_run):
    monkeypatch.setattr(importer.pipeline, "SENDING_CHUNK_ROWS", 40)
    chunks: list[int] = []

    def reading(path, options):
        table = open_table(path, options)
        chunks.extend(len(frame) for frame in open_table(path, options).chunks())
        return table

    monkeypatch.setattr(importer.pipeline, "open_table", reading)
    argv = ["run", str(DONOR_CSV), "-m", str(DONOR_MAPPING), "--base-url", sandbox.base_url]
    argv += ["--no-ledger", "--rate", QUICK_RATE, "-q", "--results", str(tmp_path / "r.csv")]
    assert main([*argv, "--dry-run"] if dry_run else argv) == 1
    assert sum(chunks) == 300
    assert max(chunks) == (300 if dry_run else 40)

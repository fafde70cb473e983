"""The library's face (issue 16): an injected session, every row's line after a refused key,
the summary written at every end."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses

from importer import ConfigError, RunOptions, SenderSettings, load_mapping, run_import_async
from importer.cli import main
from importer.records import KEY_REFUSED
from tests.conftest import MAPPINGS, ROOT, SAMPLES, rows_of

BASE_URL = "https://api.example.org/v1"
DONOR_CSV = SAMPLES / "donor-crm-activities.csv"
DONOR_MAPPING = MAPPINGS / "donor-crm-activities.yaml"


async def test_a_key_revoked_midway_still_gives_every_row_its_line(tmp_path):
    posted = 0

    def answer(url, **kwargs) -> CallbackResult:
        nonlocal posted
        posted += 1
        if posted > 38:
            return CallbackResult(status=401, payload={"message": "Unauthenticated."})
        return CallbackResult(status=200, payload={"id": str(posted), "type": "note"})

    summary_path = tmp_path / "summary.json"
    async with aiohttp.ClientSession() as session:
        with aioresponses() as api:
            api.get(re.compile(r".*/contacts\?.*"), payload={"data": []}, repeat=True)
            api.post(re.compile(r".*/activities$"), callback=answer, repeat=True)
            options = RunOptions(
                input_path=DONOR_CSV,
                mapping=load_mapping(DONOR_MAPPING),
                results_path=tmp_path / "r.csv",
                summary_json=summary_path,
                sender=SenderSettings(base_url=BASE_URL, rate=1000.0, concurrency=1),
                api_key="k",
                session=session,
                ledger_path=tmp_path / "ledger.sqlite",
            )
            try:
                await run_import_async(options)
            except Exception as error:  # the refused key ends the run
                assert "refused the key" in str(error)
            else:
                raise AssertionError("a revoked key must stop the run")
        assert not session.closed  # a session given is left to its owner
    rows = rows_of(tmp_path / "r.csv")
    assert len(rows) == 300  # every input row, not just those decided before the 401
    assert [int(r["row"]) for r in rows] == sorted(int(r["row"]) for r in rows)
    assert sum(r["status"] == "created" for r in rows) == 38
    refused = [r for r in rows if r["error"] == KEY_REFUSED]
    assert len(refused) == sum(r["status"] == "failed" for r in rows) > 200
    summary = json.loads(summary_path.read_text())
    assert summary["exit_code"] == 2 and "refused the key" in summary["error"]
    assert summary["rows"] == 300


def test_a_run_that_cannot_start_replaces_yesterdays_summary(tmp_path, capsys):
    summary_path = tmp_path / "summary.json"
    summary_path.write_text('{"exit_code": 0, "rows": 300}')
    bad_mapping = tmp_path / "m.yaml"
    bad_mapping.write_text("contact: Id\nactivity: {type: Nope}\nunknown_key: 1\n")
    code = main(
        [
            "run",
            str(DONOR_CSV),
            "-m",
            str(bad_mapping),
            "--dry-run",
            "--results",
            str(tmp_path / "r.csv"),
            "--summary-json",
            str(summary_path),
        ]
    )
    assert code == 2
    summary = json.loads(summary_path.read_text())
    assert summary["exit_code"] == 2 and summary["error"]
    assert summary["rows"] == 0


def test_a_run_that_fails_on_its_input_writes_its_summary_too(tmp_path):
    summary_path = tmp_path / "summary.json"
    summary_path.write_text('{"exit_code": 0}')
    missing = tmp_path / "nowhere.csv"
    code = main(
        [
            "run",
            str(missing),
            "-m",
            str(DONOR_MAPPING),
            "--dry-run",
            "--results",
            str(tmp_path / "r.csv"),
            "--summary-json",
            str(summary_path),
        ]
    )
    assert code == 2
    assert json.loads(summary_path.read_text())["exit_code"] == 2


def test_the_sync_entry_refuses_a_running_loop_without_leaving_a_results_file(tmp_path):
    import asyncio

    from importer import run_import

    options = RunOptions(
        input_path=DONOR_CSV,
        mapping=load_mapping(DONOR_MAPPING),
        results_path=tmp_path / "r.csv",
        dry_run=True,
    )

    async def inside() -> None:
        try:
            run_import(options)
        except ConfigError as error:
            assert "await run_import_async" in str(error)
        else:
            raise AssertionError("run_import inside a loop must refuse")

    asyncio.run(inside())
    assert not (tmp_path / "r.csv").exists()


def test_every_public_name_is_the_one_its_module_defines():
    import importer

    homes = importer._HOMES
    assert sorted(homes) == sorted(name for name in importer.__all__ if name != "__version__")
    for name, home in homes.items():
        assert getattr(importer, name) is getattr(importlib.import_module(home), name)
        assert name in dir(importer)
    with pytest.raises(AttributeError, match="no_such_name"):
        importer.no_such_name  # noqa: B018


def test_one_module_is_imported_without_the_whole_package():
    """A process that needs the ledger (a lock holder, a script) loads neither pandas nor
    aiohttp: the package's public names wait until asked for."""
    script = (
        "import sys\n"
        "import importer.ledger\n"
        "from importer import LedgerError\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'aiohttp') if m in sys.modules))\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert shown == "[]\n"

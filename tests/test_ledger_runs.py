"""Never twice, never lost: re-runs, grown files, duplicates, locks and kill -9 (issue 4)."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from importer.cli import main
from importer.ledger import EntryState, Ledger
from importer.sandbox import Faults, SandboxSettings, sandbox_in_thread
from importer.send import MAY_EXIST
from tests.conftest import MAPPINGS, QUICK_RATE, ROOT, SAMPLES, rows_of, run_cli

DONOR_CSV = SAMPLES / "donor-crm-activities.csv"
DONOR_MAPPING = MAPPINGS / "donor-crm-activities.yaml"


def first_lines(tmp_path: Path, count: int, name: str = "part.csv") -> Path:
    """The sample's header and first `count` records (records, not physical lines)."""
    with open(DONOR_CSV, newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))[: count + 1]
    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(records)
    return path


def import_command(sandbox, tmp_path: Path, rate: str, *extra: str) -> list[str]:
    """The sample import as a separate process (to be killed or interrupted)."""
    return [
        sys.executable,
        "-m",
        "importer",
        "run",
        str(DONOR_CSV),
        "-m",
        str(DONOR_MAPPING),
        "--base-url",
        sandbox.base_url,
        "--rate",
        rate,
        "--ledger",
        str(tmp_path / "ledger.sqlite"),
        "-q",
        *extra,
    ]


def statuses(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows_of(path):
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def test_a_second_run_of_the_same_file_sends_nothing(sandbox, tmp_path):
    run_cli(sandbox, tmp_path, DONOR_CSV, DONOR_MAPPING, results="first.csv")
    assert sandbox.store.count_activities() == 287
    posts_before = sandbox.stats.count(method="POST")
    run_cli(sandbox, tmp_path, DONOR_CSV, DONOR_MAPPING, results="second.csv")
    assert sandbox.stats.count(method="POST") - posts_before == 2  # only the 403 and 404 rows
    assert sandbox.store.count_activities() == 287
    second = rows_of(tmp_path / "second.csv")
    skipped = [r for r in second if r["error"].startswith("already imported")]
    assert len(skipped) == 287 and all(r["activity_id"] for r in skipped)


def test_a_grown_file_sends_only_the_new_rows(sandbox, tmp_path):
    run_cli(sandbox, tmp_path, first_lines(tmp_path, 100), DONOR_MAPPING, results="day1.csv")
    created_day1 = sandbox.store.count_activities()
    run_cli(sandbox, tmp_path, first_lines(tmp_path, 150), DONOR_MAPPING, results="day2.csv")
    day2 = rows_of(tmp_path / "day2.csv")
    new = [r for r in day2 if r["status"] == "created"]
    assert new and all(int(r["row"]) > 101 for r in new)
    assert sandbox.store.count_activities() == created_day1 + len(new)


def test_identical_rows_in_one_file_are_one_activity(sandbox, tmp_path):
    lines = DONOR_CSV.read_text(encoding="utf-8").splitlines(keepends=True)
    doubled = tmp_path / "doubled.csv"
    doubled.write_text(lines[0] + lines[1] + lines[1], encoding="utf-8")
    run_cli(sandbox, tmp_path, doubled, DONOR_MAPPING, results="r.csv")
    rows = rows_of(tmp_path / "r.csv")
    assert [r["status"] for r in rows] == ["created", "skipped"]
    assert rows[1]["error"] == "duplicate of row 2: same contact and activity"
    assert sandbox.store.count_activities() == 1


def test_allow_duplicates_sends_each_copy_once_even_on_a_rerun(sandbox, tmp_path):
    lines = DONOR_CSV.read_text(encoding="utf-8").splitlines(keepends=True)
    doubled = tmp_path / "doubled.csv"
    doubled.write_text(lines[0] + lines[1] + lines[1], encoding="utf-8")
    run_cli(sandbox, tmp_path, doubled, DONOR_MAPPING, "--allow-duplicates", results="r1.csv")
    run_cli(sandbox, tmp_path, doubled, DONOR_MAPPING, "--allow-duplicates", results="r2.csv")
    assert sandbox.store.count_activities() == 2
    assert statuses(tmp_path / "r2.csv") == {"skipped": 2}


def test_a_second_run_on_a_ledger_in_use_stops_with_a_clear_message(sandbox, tmp_path, capsys):
    with Ledger.open(tmp_path / "ledger.sqlite"):
        code = run_cli(sandbox, tmp_path, DONOR_CSV, DONOR_MAPPING, results="r.csv")
    err = capsys.readouterr().err
    assert code == 2 and "another givebutter-import run is using the ledger" in err
    assert sandbox.stats.count(method="POST") == 0


def test_no_ledger_sends_again(sandbox, tmp_path):
    part = first_lines(tmp_path, 10)
    for name in ("a.csv", "b.csv"):
        main(
            [
                "run",
                str(part),
                "-m",
                str(DONOR_MAPPING),
                "--base-url",
                sandbox.base_url,
                "--no-ledger",
                "--rate",
                QUICK_RATE,
                "--results",
                str(tmp_path / name),
                "-q",
            ]
        )
    assert sandbox.store.count_activities() == 2 * statuses(tmp_path / "a.csv")["created"]


@pytest.mark.parametrize("kill_after", [0.9])  # more kill points: tests/test_delivery.py
def test_kill_9_mid_run_then_the_same_command_creates_each_activity_exactly_once(
    sandbox, tmp_path, kill_after
):
    command = import_command(sandbox, tmp_path, "150/s", "--force")
    env = {**os.environ, "GIVEBUTTER_API_KEY": sandbox.api_key}
    victim = subprocess.Popen(
        [*command, "--results", str(tmp_path / "killed.csv")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while sandbox.stats.count(method="POST") < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(kill_after)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 0 < sandbox.store.count_activities() < 287  # it really died mid-run
    # The same command, in-process (the victim alone needs a process of its own to kill).
    code = main([*command[3:], "--results", str(tmp_path / "resumed.csv")])
    assert code == 1  # 1: the sample's invalid rows
    assert sandbox.store.count_activities() == 287
    activities = [
        (a.contact_id, a.type, a.subject, a.note, a.occurred_at)
        for contact_id in sandbox.store.activity_counts()
        for a in sandbox.store.list_activities(contact_id, limit=1000)[0]
    ]
    assert len(activities) == len(set(activities)) == 287


def test_retry_sends_again_only_the_rows_that_failed(tmp_path, monkeypatch):
    part = first_lines(tmp_path, 20)
    with sandbox_in_thread(SandboxSettings(limits=())) as healthy:
        monkeypatch.setenv("GIVEBUTTER_API_KEY", healthy.api_key)
        first = tmp_path / "first.csv"
        main(
            [
                "run",
                str(part),
                "-m",
                str(DONOR_MAPPING),
                "--base-url",
                healthy.base_url,
                "--rate",
                QUICK_RATE,
                "--no-ledger",
                "--results",
                str(first),
                "-q",
            ]
        )
        lines = rows_of(first)
        # Pretend rows 2-4 failed (as after an outage) and remove their activities.
        for line in lines[:3]:
            healthy.store.delete_activity(int(line["contact_id"]), line["activity_id"])
        edited = tmp_path / "edited.csv"
        with open(edited, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(lines[0]))
            writer.writeheader()
            for n, line in enumerate(lines):
                if n < 3:
                    line = {**line, "status": "failed", "activity_id": "", "http_status": "500"}
                writer.writerow(line)
        before = healthy.store.count_activities()
        code = main(
            [
                "retry",
                str(edited),
                str(part),
                "-m",
                str(DONOR_MAPPING),
                "--base-url",
                healthy.base_url,
                "--rate",
                QUICK_RATE,
                "--no-ledger",
                "--results",
                str(tmp_path / "retry.csv"),
                "-q",
            ]
        )
        retried = rows_of(tmp_path / "retry.csv")
        assert code == 0 and [r["row"] for r in retried] == ["2", "3", "4"]
        assert {r["status"] for r in retried} == {"created"}
        assert healthy.store.count_activities() == before + 3


def test_undo_deletes_what_a_run_created_and_forgets_it_in_the_ledger(sandbox, tmp_path):
    part = first_lines(tmp_path, 12)
    run_cli(sandbox, tmp_path, part, DONOR_MAPPING, results="r.csv")
    created = sandbox.store.count_activities()
    assert created > 5
    assert main(["undo", str(tmp_path / "r.csv"), "--dry-run"]) == 0
    assert sandbox.store.count_activities() == created
    code = main(
        [
            "undo",
            str(tmp_path / "r.csv"),
            "--yes",
            "--base-url",
            sandbox.base_url,
            "--rate",
            QUICK_RATE,
            "--ledger",
            str(tmp_path / "ledger.sqlite"),
        ]
    )
    assert code == 0 and sandbox.store.count_activities() == 0
    # Forgotten: a new run creates them again.
    run_cli(sandbox, tmp_path, part, DONOR_MAPPING, results="again.csv")
    assert sandbox.store.count_activities() == created


def test_undo_without_yes_off_a_terminal_deletes_nothing(sandbox, tmp_path, capsys):
    run_cli(sandbox, tmp_path, first_lines(tmp_path, 5), DONOR_MAPPING, results="r.csv")
    created = sandbox.store.count_activities()
    code = main(["undo", str(tmp_path / "r.csv"), "--base-url", sandbox.base_url])
    assert code == 2 and "--yes" in capsys.readouterr().err
    assert sandbox.store.count_activities() == created


def test_ctrl_c_stops_sending_finishes_the_report_and_exits_130(sandbox, tmp_path):
    command = import_command(sandbox, tmp_path, "40/s", "--results", str(tmp_path / "r.csv"))
    env = {**os.environ, "GIVEBUTTER_API_KEY": sandbox.api_key}
    victim = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while sandbox.stats.count(method="POST") < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGINT)
    _, err = victim.communicate(timeout=60)
    rows = rows_of(tmp_path / "r.csv")
    assert victim.returncode == 130, err
    assert "Traceback" not in err
    assert [int(r["row"]) for r in rows] == list(range(2, 302))
    created = [r for r in rows if r["status"] == "created"]
    # One ctrl-c lets the requests in flight finish: every row knows what became of it.
    assert 0 < len(created) < 287 and len(created) == sandbox.store.count_activities()
    assert not [r for r in rows if r["error"].endswith(MAY_EXIST)]
    assert any(r["error"] == "not sent: the run was interrupted" for r in rows)
    assert "letting the" in err and "requests in flight finish" in err


def test_a_second_ctrl_c_abandons_the_requests_in_flight(tmp_path):
    """With every activity write taking 6 s, the second ctrl-c ends the run at once; the rows
    whose requests were cut off say the activity may exist, and the ledger keeps them
    `sending`, for the next run to look for."""
    settings = SandboxSettings(limits=(), faults=Faults(write_latency=6.0))
    with sandbox_in_thread(settings) as slow:
        command = import_command(slow, tmp_path, "100/s", "--results", str(tmp_path / "r.csv"))
        env = {**os.environ, "GIVEBUTTER_API_KEY": slow.api_key}
        victim = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while slow.stats.count() < 1 and time.monotonic() < deadline:  # the key check
            time.sleep(0.01)
        while len(slow.stats.admitted_times) < 1 + 8 and time.monotonic() < deadline:
            time.sleep(0.01)  # the first requests (8 at once, the default) are out, unanswered
        victim.send_signal(signal.SIGINT)
        time.sleep(0.2)
        victim.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = victim.communicate(timeout=60)
        took = time.monotonic() - started
    assert victim.returncode == 130, err
    assert took < 4.0  # not the 5 s or so the answers still need
    rows = rows_of(tmp_path / "r.csv")
    assert [int(r["row"]) for r in rows] == list(range(2, 302))
    in_doubt = [r for r in rows if r["error"].endswith(MAY_EXIST)]
    assert in_doubt and all(r["status"] == "failed" for r in in_doubt)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        assert ledger.stats()[EntryState.SENDING] == len(in_doubt)


def test_after_ctrl_c_only_rows_really_sent_wait_to_be_looked_for(sandbox, tmp_path):
    """Rows marked `sending` but never posted are told `failed` in the ledger, so the next
    run sends them straight away (and without looking for them first)."""
    concurrency = 4
    command = import_command(
        sandbox,
        tmp_path,
        "40/s",
        "--concurrency",
        str(concurrency),
        "--results",
        str(tmp_path / "r.csv"),
    )
    env = {**os.environ, "GIVEBUTTER_API_KEY": sandbox.api_key}
    victim = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while sandbox.stats.count(method="POST") < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGINT)
    _, err = victim.communicate(timeout=60)
    assert victim.returncode == 130, err
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        counts = ledger.stats()
    # One ctrl-c lets the requests in flight finish: none is left `sending`.
    assert counts[EntryState.CREATED] == sandbox.store.count_activities() > 0
    assert counts[EntryState.SENDING] == 0
    assert counts[EntryState.FAILED] > 0  # at least the 403/404 rows or the unsent batch

    resumed = run_cli(sandbox, tmp_path, DONOR_CSV, DONOR_MAPPING, results="resumed.csv")
    assert resumed == 1  # the sample's invalid rows
    assert sandbox.store.count_activities() == 287

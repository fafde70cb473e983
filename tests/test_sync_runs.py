"""Nightly sync end to end (issue 12): a file imported, re-exported with rows edited, removed
and added, run again through the CLI against the sandbox, then taken back with `undo`."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from importer.cli import main
from tests.conftest import QUICK_RATE, ROOT, rows_of, run_cli

MAPPING = """
key: Task Id
contact: Contact
activity:
  type: {column: Kind, map: {Call: phone_call, Email: email, Note: note}}
  subject: Subject
  note: Description
"""
HEADER = ["Task Id", "Contact", "Kind", "Subject", "Description"]
KINDS = ["Call", "Email", "Note"]


def contact_of(n: int) -> int:
    """A live seeded contact (every 50th is archived)."""
    return 10001 + (n % 45)


def export(n_keys: int) -> dict[str, list[str]]:
    """Records by key, as a CRM would export them tonight."""
    return {
        f"00T{n:05d}": [
            f"00T{n:05d}",
            str(contact_of(n)),
            KINDS[n % 3],
            f"Task {n}",
            f"first version of {n}",
        ]
        for n in range(n_keys)
    }


def write(path: Path, records: dict[str, list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([HEADER, *records.values()])
    return path


def counts(results: Path) -> dict[str, int]:
    seen: dict[str, int] = {}
    for line in rows_of(results):
        seen[line["status"]] = seen.get(line["status"], 0) + 1
    return seen


def server_content(sandbox) -> dict[str, tuple[int, str | None, str | None]]:
    """What the sandbox holds, by activity id (read from its store, as the API never says)."""
    return {a.id: (a.contact_id, a.subject, a.note) for a in sandbox.store.all_activities()}


def tonight(records: dict[str, list[str]], seed: int = 7) -> tuple[dict, set, set, set]:
    """The same export a day later: 10% edited, 5% removed, 5% added."""
    rng = random.Random(seed)
    keys = sorted(records)
    chosen = rng.sample(keys, len(keys) // 5)
    edited, removed = (
        set(chosen[: len(keys) // 10]),
        set(chosen[len(keys) // 10 :][: len(keys) // 20]),
    )
    later = {k: list(v) for k, v in records.items() if k not in removed}
    for key in edited:
        later[key][4] = later[key][4].replace("first", "corrected")
    added = set()
    for n in range(len(keys), len(keys) + len(keys) // 20):
        key = f"00T{n:05d}"
        later[key] = [key, str(contact_of(n)), "Note", f"Task {n}", f"new {n}"]
        added.add(key)
    return later, edited, removed, added


def test_a_re_export_is_synced_created_updated_unchanged_and_mirrored(sandbox, tmp_path):
    first = export(200)
    code = run_cli(sandbox, tmp_path, write(tmp_path / "d1.csv", first), MAPPING, results="r1.csv")
    assert code == 0 and counts(tmp_path / "r1.csv") == {"created": 200}
    later, edited, removed, added = tonight(first)
    day2 = write(tmp_path / "d2.csv", later)

    assert run_cli(sandbox, tmp_path, day2, MAPPING, "--dry-run", results="dry.csv") == 0
    would = counts(tmp_path / "dry.csv")
    assert would == {"would create": 10, "would update": 20, "unchanged": 170}
    requests_before = sandbox.stats.count(method="POST") + sandbox.stats.count(method="PUT")

    assert run_cli(sandbox, tmp_path, day2, MAPPING, results="r2.csv") == 0
    done = counts(tmp_path / "r2.csv")
    assert done == {"created": 10, "updated": 20, "unchanged": 170}
    assert sandbox.stats.count(method="POST") + sandbox.stats.count(method="PUT") == (
        requests_before + 30  # exactly the rows that changed
    )
    lines = {line["key"]: line for line in rows_of(tmp_path / "r2.csv")}
    assert {k for k, v in lines.items() if v["status"] == "updated"} == edited
    assert {k for k, v in lines.items() if v["status"] == "created"} == added
    assert all(lines[k]["warning"] == "changed: note" for k in edited)
    held = server_content(sandbox)
    assert len(held) == 210  # nothing deleted without --delete-missing
    for key, line in lines.items():  # one activity a key, holding tonight's content
        assert held[line["activity_id"]] == (int(later[key][1]), later[key][3], later[key][4])

    assert run_cli(sandbox, tmp_path, day2, MAPPING, "--delete-missing", results="r3.csv") == 0
    assert counts(tmp_path / "r3.csv") == {"unchanged": 200, "deleted": 10}
    deleted = [line for line in rows_of(tmp_path / "r3.csv") if line["status"] == "deleted"]
    assert {line["key"] for line in deleted} == removed
    assert all(line["row"] == "" and line["activity_id"] for line in deleted)
    assert len(server_content(sandbox)) == 200


def test_a_half_empty_export_does_not_wipe_history(sandbox, tmp_path, capsys):
    first = export(100)
    run_cli(sandbox, tmp_path, write(tmp_path / "d1.csv", first), MAPPING, results="r1.csv")
    half = dict(list(first.items())[:50])
    posts = sandbox.stats.count()
    day2 = write(tmp_path / "d2.csv", half)
    code = run_cli(sandbox, tmp_path, day2, MAPPING, "--delete-missing", results="refused.csv")
    assert code == 2
    err = capsys.readouterr().err
    assert "50 of the source's 100 known keys are not in the input" in err
    assert not (tmp_path / "refused.csv").exists()  # not a header alone: it never started
    assert sandbox.stats.count() == posts + 1  # the key check, nothing more
    assert sandbox.store.count_activities() == 100
    code = run_cli(
        sandbox, tmp_path, tmp_path / "d2.csv", MAPPING, "--delete-missing", "--max-delete", "60"
    )
    assert code == 0 and sandbox.store.count_activities() == 50


def test_undo_puts_the_server_back_as_it_was_before_a_sync_run(sandbox, tmp_path):
    first = export(60)
    run_cli(sandbox, tmp_path, write(tmp_path / "d1.csv", first), MAPPING, results="r1.csv")
    before = server_content(sandbox)
    later, edited, _removed, added = tonight(first, seed=3)
    moved_key = sorted(set(later) - edited - added)[0]
    later[moved_key][1] = "10099"  # this record now belongs to another contact
    day2 = write(tmp_path / "d2.csv", later)
    assert (
        run_cli(
            sandbox,
            tmp_path,
            day2,
            MAPPING,
            "--delete-missing",
            "--max-delete",
            "5%",
            results="r2.csv",
        )
        == 0
    )
    assert counts(tmp_path / "r2.csv") == {
        "unchanged": 50,
        "updated": 6,
        "moved": 1,
        "created": 3,
        "deleted": 3,
    }
    assert server_content(sandbox) != before
    code = main(
        [
            "undo",
            str(tmp_path / "r2.csv"),
            "--yes",
            "--base-url",
            sandbox.base_url,
            "--rate",
            QUICK_RATE,
            "--ledger",
            str(tmp_path / "ledger.sqlite"),
        ]
    )
    assert code == 0
    after = sorted(server_content(sandbox).values())
    assert after == sorted(before.values())  # the same content (recreated ones have new ids)
    # The ledger was put back too: the first export is unchanged again, and nothing is sent.
    assert run_cli(sandbox, tmp_path, tmp_path / "d1.csv", MAPPING, results="r3.csv") == 0
    assert counts(tmp_path / "r3.csv") == {"unchanged": 60}


def test_kill_9_during_an_update_run_then_a_rerun_leaves_one_activity_per_key(
    tmp_path, monkeypatch
):
    from importer.sandbox import Faults, SandboxSettings, sandbox_in_thread

    first = export(150)
    with sandbox_in_thread(SandboxSettings(limits=(), faults=Faults(latency=0.05))) as sandbox:
        monkeypatch.setenv("GIVEBUTTER_API_KEY", sandbox.api_key)
        env = {**os.environ}
        run_cli(sandbox, tmp_path, write(tmp_path / "d1.csv", first), MAPPING, results="r1.csv")
        later = {k: [*v[:4], v[4].replace("first", "second")] for k, v in first.items()}
        day2 = write(tmp_path / "d2.csv", later)
        (tmp_path / "m.yaml").write_text(MAPPING, encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "importer",
            "run",
            str(day2),
            "-m",
            str(tmp_path / "m.yaml"),
            "--base-url",
            sandbox.base_url,
            "--rate",
            "60/s",
            "--concurrency",
            "4",
            "--ledger",
            str(tmp_path / "ledger.sqlite"),
            "--results",
            str(tmp_path / "r2.csv"),
            "-q",
        ]
        victim = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while sandbox.stats.count(method="PUT") < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert 0 < sandbox.stats.count(method="PUT") < 150  # killed midway
        assert run_cli(sandbox, tmp_path, day2, MAPPING, results="r3.csv") == 0
        assert set(counts(tmp_path / "r3.csv")) <= {"updated", "unchanged"}
        held = server_content(sandbox)
        assert len(held) == 150  # one activity a key: no update became a creation
        assert sorted(note for _, _, note in held.values()) == sorted(v[4] for v in later.values())

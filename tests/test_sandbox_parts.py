"""The sandbox's parts on their own (rate windows, stats, seed, store, flags) and the ways
to run it (in the loop, in a thread, as a command, on a file that outlives it)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime

import aiohttp
import pytest

from importer.errors import ConfigError
from importer.payload import ActivityPayload
from importer.sandbox import (
    DEFAULT_LIMITS,
    SHARED_EMAIL,
    SHARED_EMAIL_CONTACT_IDS,
    SHARED_EXTERNAL_ID,
    SHARED_EXTERNAL_ID_CONTACT_IDS,
    Faults,
    RateWindow,
    SandboxSettings,
    SandboxStore,
    SlidingWindows,
    StoreClosedError,
    add_sandbox_arguments,
    is_archived_seed,
    loopback_host,
    max_in_window,
    parse_window,
    running_sandbox,
    sandbox_in_thread,
    sandbox_settings_from_args,
    seed_store,
    seeded_contacts,
    serve_forever,
)
from tests.conftest import ROOT

NOTE = ActivityPayload.model_validate({"type": "note", "subject": "Site visit"})
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# -- rate windows --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("8/1s", RateWindow(8, 1.0)),
        ("480/60s", RateWindow(480, 60.0)),
        ("500/min", RateWindow(500, 60.0)),
        ("3000/h", RateWindow(3000, 3600.0)),
        ("50000/day", RateWindow(50000, 86400.0)),
        (" 5 / 0.5s ", RateWindow(5, 0.5)),
    ],
)
def test_a_window_is_written_n_per_duration(text, window):
    assert parse_window(text) == window


@pytest.mark.parametrize("text", ["8", "8/", "8/1 fortnight", "0/1s", "x/1s", "8/0s"])
def test_a_window_that_is_not_n_per_duration_is_refused(text):
    with pytest.raises(ValueError):
        parse_window(text)


def test_a_window_admits_its_limit_then_refuses():
    windows = SlidingWindows([RateWindow(2, 1.0)])
    assert [windows.arrive(t).admitted for t in (0.0, 0.1, 0.2)] == [True, True, False]


def test_a_refused_request_learns_when_the_next_would_be_admitted():
    windows = SlidingWindows([RateWindow(2, 1.0)])
    windows.arrive(0.0)
    windows.arrive(0.1)
    refused = windows.arrive(0.2)
    # Counted arrivals are 0.0, 0.1, 0.2: a slot is free once 0.1 has left the window.
    assert refused.retry_after == pytest.approx(0.9)
    assert windows.arrive(0.2 + refused.retry_after).admitted


def test_a_refused_request_counts_against_the_window():
    windows = SlidingWindows([RateWindow(1, 1.0)])
    windows.arrive(0.0)
    windows.arrive(0.9)  # refused, but counted
    assert not windows.arrive(1.5).admitted


def test_a_refused_request_need_not_count():
    windows = SlidingWindows([RateWindow(1, 1.0)], count_refused=False)
    windows.arrive(0.0)
    windows.arrive(0.9)
    assert windows.arrive(1.5).admitted


def test_every_window_must_have_room():
    windows = SlidingWindows([RateWindow(3, 1.0), RateWindow(4, 10.0)])
    verdicts = [windows.arrive(t).admitted for t in (0.0, 0.1, 0.2, 1.5, 2.6)]
    assert verdicts == [True, True, True, True, False]


def test_the_headers_describe_the_tightest_window():
    windows = SlidingWindows([RateWindow(5, 1.0), RateWindow(2, 60.0)])
    admission = windows.arrive(0.0)
    assert (admission.limit, admission.remaining) == (2, 1)
    assert admission.reset_after == pytest.approx(60.0)


def test_no_windows_admit_everything():
    windows = SlidingWindows([])
    assert all(windows.arrive(0.0).admitted for _ in range(1000))


# -- stats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "seconds", "most"),
    [
        ([], 1.0, 0),
        ([0.0], 1.0, 1),
        ([0.0, 0.5, 0.99, 1.0, 1.6], 1.0, 3),
        ([0.0, 1.0, 2.0], 1.0, 1),
        ([0.0, 0.0, 0.0], 0.1, 3),
    ],
)
def test_max_in_window_counts_the_busiest_half_open_interval(times, seconds, most):
    assert max_in_window(times, seconds) == most


# -- seeded contacts -----------------------------------------------------------------------


def test_1000_contacts_are_seeded_with_ids_from_10001():
    contacts = list(seeded_contacts())
    assert [c.id for c in contacts] == list(range(10001, 11001))


def test_the_seed_is_the_same_every_time():
    assert list(seeded_contacts(100)) == list(seeded_contacts(100))


def test_primary_emails_are_unique_and_carry_the_id():
    contacts = list(seeded_contacts())
    emails = [c.primary_email for c in contacts]
    assert len(set(emails)) == len(emails)
    assert emails[0] == "maria.garcia.10001@example.org"
    assert all(e.endswith(f".{c.id}@example.org") for e, c in zip(emails, contacts, strict=True))


def test_external_ids_count_up_and_some_contacts_have_more():
    contacts = list(seeded_contacts())
    assert contacts[0].external_id == "CRM-000001"
    assert contacts[999].external_id == "CRM-001000"
    assert any(c.external_ids for c in contacts)
    assert any(len(c.emails) > 1 for c in contacts)


def test_every_50th_contact_is_archived():
    archived = [c.id for c in seeded_contacts() if c.archived_at is not None]
    assert archived == list(range(10050, 11001, 50))
    assert all(is_archived_seed(contact_id) for contact_id in archived)


def test_two_contacts_share_an_email_and_two_an_external_id():
    contacts = list(seeded_contacts())
    sharing_email = [c.id for c in contacts if SHARED_EMAIL in {e.value for e in c.emails}]
    sharing_id = [c.id for c in contacts if c.external_id == SHARED_EXTERNAL_ID]
    assert tuple(sharing_email) == SHARED_EMAIL_CONTACT_IDS
    assert tuple(sharing_id) == SHARED_EXTERNAL_ID_CONTACT_IDS
    assert not any(is_archived_seed(i) for i in sharing_email + sharing_id)


# -- the store -----------------------------------------------------------------------------


def test_the_store_counts_activities_in_all_and_per_contact():
    with SandboxStore() as store:
        seed_store(store, 5)
        for contact in (10001, 10001, 10003):
            store.add_activity(contact, NOTE, now=NOW)
        assert store.count_activities() == 3
        assert store.count_activities(10001) == 2
        assert store.activity_counts() == {10001: 2, 10003: 1}


def test_the_store_says_whether_a_contact_is_archived_or_missing():
    with SandboxStore() as store:
        seed_store(store, 50)
        assert store.contact_archived(10001) is False
        assert store.contact_archived(10050) is True  # every 50th is archived
        assert store.contact_archived(10051) is None
        assert store.contact_archived(0) is None


def test_activity_ids_are_never_reused_after_a_delete():
    with SandboxStore() as store:
        seed_store(store, 1)
        first = store.add_activity(10001, NOTE, now=NOW)
        assert store.delete_activity(10001, first.id)
        assert int(store.add_activity(10001, NOTE, now=NOW).id) > int(first.id)


@pytest.mark.parametrize("count", [31, 1_000])  # without and with the two ambiguities
def test_seeding_in_bulk_stores_exactly_the_seeded_contacts(count):
    with SandboxStore() as store:
        assert seed_store(store, count) == count
        stored = store.list_contacts(limit=count)[0]
        assert stored == list(seeded_contacts(count))
        work_email = stored[3].emails[1].value  # the email filter sees every address
        assert store.list_contacts(email=work_email.upper())[0] == [stored[3]]


def test_seeding_leaves_a_store_with_contacts_alone():
    with SandboxStore() as store:
        assert seed_store(store, 10) == 10
        assert seed_store(store, 50) == 0
        assert store.count_contacts() == 10


def test_a_closed_store_says_so():
    store = SandboxStore()
    store.close()
    with pytest.raises(StoreClosedError):
        store.count_activities()


def test_a_file_store_uses_wal(tmp_path):
    with SandboxStore(tmp_path / "sandbox.sqlite") as store:
        seed_store(store, 1)
    with sqlite3.connect(tmp_path / "sandbox.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_a_sandbox_on_a_file_keeps_its_activities_across_a_restart(tmp_path):
    settings = SandboxSettings(db_path=tmp_path / "sandbox.sqlite", limits=())
    async with aiohttp.ClientSession() as http:
        async with running_sandbox(settings) as sandbox:
            headers = {"Authorization": f"Bearer {sandbox.api_key}"}
            url = f"{sandbox.base_url}/contacts/10001/activities"
            async with http.post(url, json={"type": "note"}, headers=headers) as response:
                first = await response.json()
        async with running_sandbox(settings) as sandbox:
            url = f"{sandbox.base_url}/contacts/10001/activities"
            async with http.get(url, headers=headers) as response:
                listed = await response.json()
            async with http.post(url, json={"type": "sms"}, headers=headers) as response:
                second = await response.json()
            assert sandbox.store.count_contacts() == 1000
    assert [a["id"] for a in listed["data"]] == [first["id"]]
    assert int(second["id"]) > int(first["id"])


async def test_a_store_passed_in_is_left_open():
    with SandboxStore() as store:
        async with running_sandbox(SandboxSettings(contacts=3), store=store):
            pass
        assert store.count_contacts() == 3


# -- running it ----------------------------------------------------------------------------


async def test_the_sandbox_listens_on_loopback_only():
    with pytest.raises(ConfigError, match="loopback"):
        async with running_sandbox(host="0.0.0.0"):
            pass


def test_localhost_means_127_0_0_1():
    assert loopback_host("localhost") == "127.0.0.1"
    with pytest.raises(ConfigError):
        loopback_host("example.org")


def test_a_sandbox_in_a_thread_answers_synchronous_callers():
    with sandbox_in_thread(SandboxSettings(contacts=10)) as sandbox:
        request = urllib.request.Request(
            f"{sandbox.base_url}/contacts/10001/activities",
            data=json.dumps({"type": "email"}).encode(),
            headers={
                "Authorization": f"Bearer {sandbox.api_key}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert sandbox.store.count_activities() == 1
        assert sandbox.stats.count(status=200) == 1
    assert sandbox.store.closed


def test_a_sandbox_in_a_thread_raises_its_start_error_in_the_caller():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError), sandbox_in_thread(port=port):
            pass


def test_serve_forever_refuses_a_host_that_is_not_loopback():
    with pytest.raises(ConfigError):
        serve_forever(SandboxSettings(), host="0.0.0.0", port=0)


def test_serve_forever_serves_until_sigterm_and_exits_cleanly():
    script = (
        "from importer.sandbox import SandboxSettings, serve_forever\n"
        "serve_forever(SandboxSettings(contacts=5), port=0,"
        " on_ready=lambda url: print(url, flush=True))\n"
        "print('stopped', flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-W", "error", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    ) as process:
        try:
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
            stats_url = base_url.removesuffix("/v1") + "/_sandbox/stats"
            with urllib.request.urlopen(stats_url, timeout=10) as response:
                assert json.load(response)["activities"] == 0
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert out.strip() == "stopped"
    assert err == ""


# -- the command's flags -------------------------------------------------------------------


def parse(*argv: str) -> SandboxSettings:
    parser = argparse.ArgumentParser()
    add_sandbox_arguments(parser)
    return sandbox_settings_from_args(parser.parse_args(argv))


def test_no_flags_give_the_default_settings():
    assert parse() == SandboxSettings()
    assert parse().limits == DEFAULT_LIMITS


def test_each_flag_sets_its_field(tmp_path):
    settings = parse(
        "--db", str(tmp_path / "s.sqlite"), "--contacts", "50",
        "--limit", "8/1s", "--limit", "480/60s", "--rate-limit-headers", "--no-count-refused",
        "--error-rate", "0.1", "--store-then-fail-rate", "0.05", "--drop-rate", "0.02",
        "--latency", "0.01", "--slow-rate", "0.01", "--slow-seconds", "45", "--seed", "7",
        "--no-put", "--write-latency", "0.5",
    )  # fmt: skip
    assert settings == SandboxSettings(
        db_path=tmp_path / "s.sqlite",
        contacts=50,
        limits=(RateWindow(8, 1.0), RateWindow(480, 60.0)),
        rate_limit_headers=True,
        count_refused=False,
        put_allowed=False,
        faults=Faults(
            error_rate=0.1,
            store_then_fail_rate=0.05,
            drop_rate=0.02,
            latency=0.01,
            write_latency=0.5,
            slow_rate=0.01,
            slow_seconds=45.0,
            seed=7,
        ),
    )


def test_limit_none_turns_the_rate_limit_off():
    assert parse("--limit", "none").limits == ()


@pytest.mark.parametrize(
    "argv", [["--error-rate", "1.5"], ["--limit", "lots"], ["--latency", "-1"], ["--port", "x"]]
)
def test_a_bad_flag_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse(*argv)
    assert stopped.value.code == 2

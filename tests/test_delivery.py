"""The exactly-once engine, in-process: a scripted sender and a real ledger (issue 16).

The scripted sender keeps a little server of its own (activities by id), so every test can
count what "the server" holds after a delivery, a crash, an interruption or a re-run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest

from importer import delivery
from importer.delivery import DeliverySettings, Interruption, RowFeed, _Delivery, deliver
from importer.errors import AuthError
from importer.feed import OrderedOutcomes
from importer.ledger import EntryState, Ledger
from importer.payload import ActivityPayload
from importer.records import (
    INTERRUPTED_IN_FLIGHT,
    KEY_REFUSED,
    NOT_SENT_INTERRUPTED,
    Outcome,
    SendResult,
    Status,
)
from importer.send import MAY_EXIST, SendJob
from tests.scripted import ScriptedSender, SlowLooks

BASE_URL = "http://127.0.0.1:9/v1"
SETTINGS = DeliverySettings(base_url=BASE_URL, input_name="export.csv")

Answer = Callable[[ScriptedSender, SendJob], Awaitable[SendResult]]


def rows(count: int, *, first: int = 2, same: bool = False, dated: bool = True) -> list[Outcome]:
    """`count` valid rows, each its own note unless `same`; each a minute apart unless
    `same` or not `dated` (then only the note, which the API does not echo, tells them apart)."""
    made = []
    for n in range(count):
        fields = {"type": "note", "note": "same" if same else f"note {n}"}
        if dated and not same:
            fields["occurred_at"] = f"2025-01-01T{10 + n // 60:02d}:{n % 60:02d}:00Z"
        payload = ActivityPayload.model_validate(fields)
        made.append(
            Outcome(
                row=first + n,
                status=Status.VALID,
                contact="10001",
                contact_id=10001,
                found_by="id",
                payload=payload,
            )
        )
    return made


def in_chunks(outcomes: list[Outcome], size: int = 10) -> list[list[Outcome]]:
    return [outcomes[i : i + size] for i in range(0, len(outcomes), size)]


class Reported(list):
    """The report callback: every outcome, in the order it was handed on."""

    def __call__(self, outcomes: list[Outcome]) -> None:
        self.extend(outcomes)

    def statuses(self) -> list[str]:
        return [o.status.value for o in self]


async def run(
    sender: ScriptedSender,
    outcomes: list[Outcome],
    ledger: Ledger | None,
    *,
    settings: DeliverySettings = SETTINGS,
    interruption: Interruption | None = None,
) -> tuple[Reported, bool]:
    reported = Reported()
    interrupted = await deliver(
        RowFeed(in_chunks(outcomes)),
        sender,
        ledger,
        settings,
        reported,
        interruption=interruption,
    )
    return reported, interrupted


async def test_every_row_is_reported_once_in_input_order(ledger):
    sender = ScriptedSender()
    reported, interrupted = await run(sender, rows(95), ledger)
    assert not interrupted
    assert [o.row for o in reported] == list(range(2, 97))
    assert set(reported.statuses()) == {"created"}
    assert len(sender.server) == 95
    assert ledger.stats()[EntryState.CREATED] == 95


async def test_rows_decided_before_sending_pass_through_in_their_place(ledger):
    outcomes = rows(6)
    outcomes[2].status, outcomes[2].error = Status.INVALID, "type is blank"
    outcomes[4].status, outcomes[4].payload = Status.SKIPPED, None
    sender = ScriptedSender()
    reported, _ = await run(sender, outcomes, ledger)
    assert reported.statuses() == ["created", "created", "invalid", "created", "skipped", "created"]
    assert len(sender.server) == 4


async def test_a_second_delivery_of_the_same_rows_sends_nothing(ledger):
    sender = ScriptedSender()
    await run(sender, rows(30), ledger)
    again, _ = await run(sender, rows(30), ledger)
    assert set(again.statuses()) == {"skipped"}
    assert again[0].error.startswith("already imported: activity ")
    assert again[0].activity_id is not None
    assert len(sender.server) == 30 and len(sender.posts) == 30


async def test_an_identical_row_later_in_the_input_is_skipped_as_a_duplicate(ledger):
    sender = ScriptedSender()
    reported, _ = await run(sender, rows(3, same=True), ledger)
    assert reported.statuses() == ["created", "skipped", "skipped"]
    assert reported[1].error == "duplicate of row 2: same contact and activity"
    assert len(sender.server) == 1


async def test_allow_duplicates_sends_each_copy_once_and_a_rerun_none(ledger):
    settings = DeliverySettings(base_url=BASE_URL, input_name="x.csv", allow_duplicates=True)
    sender = ScriptedSender()
    reported, _ = await run(sender, rows(3, same=True), ledger, settings=settings)
    assert reported.statuses() == ["created"] * 3
    again, _ = await run(sender, rows(3, same=True), ledger, settings=settings)
    assert again.statuses() == ["skipped"] * 3
    assert len(sender.server) == 3


async def test_without_a_ledger_rows_are_still_reported_in_order(tmp_path):
    sender = ScriptedSender(concurrency=8)
    reported, _ = await run(sender, rows(50), None)
    assert [o.row for o in reported] == list(range(2, 52))
    assert len(sender.server) == 50


async def store_then_fail(sender: ScriptedSender, job: SendJob) -> SendResult:
    """The server stores the activity, then the answer is lost (a 5xx after storing)."""
    sender.store(job)
    return SendResult(Status.FAILED, http_status=500, error="500" + MAY_EXIST, ambiguous=True)


async def test_an_ambiguous_failure_stays_sending_and_the_next_run_finds_it(ledger):
    first = ScriptedSender(store_then_fail)
    reported, _ = await run(first, rows(5), ledger)
    assert set(reported.statuses()) == {"failed"}
    assert ledger.stats()[EntryState.SENDING] == 5
    second = ScriptedSender()
    second.server = first.server  # the same server, answering well now
    again, _ = await run(second, rows(5), ledger)
    assert set(again.statuses()) == {"created"}
    assert all("found on the server" in o.warnings[0] for o in again)
    assert second.posts == [] and len(second.lookups) == 5
    assert second.copies() == [1] * 5


async def test_a_row_left_sending_that_never_landed_is_sent_after_looking(ledger):
    async def lost(sender: ScriptedSender, job: SendJob) -> SendResult:
        return SendResult(Status.FAILED, error="no answer" + MAY_EXIST, ambiguous=True)

    await run(ScriptedSender(lost), rows(4), ledger)
    second = ScriptedSender()
    again, _ = await run(second, rows(4), ledger)
    assert set(again.statuses()) == {"created"}
    assert len(second.lookups) == 4 and len(second.posts) == 4
    assert ledger.stats()[EntryState.CREATED] == 4


def slow(gate: asyncio.Event) -> Answer:
    """Rows wait at the server until `gate` opens, then are created."""

    async def answer(sender: ScriptedSender, job: SendJob) -> SendResult:
        await gate.wait()
        return await sender.create(job)

    return answer


async def test_drain_lets_the_requests_in_flight_finish_and_sends_no_more(ledger):
    gate, interruption = asyncio.Event(), Interruption()
    sender = ScriptedSender(slow(gate), concurrency=3)
    task = asyncio.create_task(run(sender, rows(40), ledger, interruption=interruption))
    while len(sender.posts) < 3:
        await asyncio.sleep(0.01)
    interruption.drain()
    gate.set()
    reported, interrupted = await task
    assert interrupted
    assert [o.row for o in reported] == list(range(2, 42))
    assert reported.statuses() == ["created"] * 3 + ["failed"] * 37
    assert {o.error for o in reported[3:]} == {NOT_SENT_INTERRUPTED}
    assert len(sender.server) == 3
    # Rows marked but never posted are not left in doubt: the next run sends them at once.
    assert ledger.stats()[EntryState.SENDING] == 0
    second = ScriptedSender()
    second.server = sender.server
    again, _ = await run(second, rows(40), ledger)
    assert again.statuses() == ["skipped"] * 3 + ["created"] * 37
    assert second.lookups == [] and second.copies() == [1] * 40


async def test_abandon_leaves_the_requests_in_flight_in_doubt_for_the_next_run(ledger):
    gate, interruption = asyncio.Event(), Interruption()

    async def lands_then_hangs(sender: ScriptedSender, job: SendJob) -> SendResult:
        sender.store(job)  # stored on the server; the answer never comes
        await gate.wait()
        raise AssertionError("never answered")

    sender = ScriptedSender(lands_then_hangs, concurrency=2)
    task = asyncio.create_task(run(sender, rows(10), ledger, interruption=interruption))
    while len(sender.posts) < 2:
        await asyncio.sleep(0.01)
    interruption.drain()
    interruption.abandon()
    reported, interrupted = await task
    assert interrupted
    assert [o.error for o in reported[:2]] == [INTERRUPTED_IN_FLIGHT + MAY_EXIST] * 2
    assert {o.error for o in reported[2:]} == {NOT_SENT_INTERRUPTED}
    assert ledger.stats()[EntryState.SENDING] == 2
    second = ScriptedSender()
    second.server = sender.server
    again, _ = await run(second, rows(10), ledger)
    assert set(again.statuses()) == {"created"}
    assert len(second.lookups) == 2 and len(second.posts) == 8
    assert second.copies() == [1] * 10


async def test_a_refused_key_midway_still_gives_every_row_its_line(ledger):
    async def refuse_after_five(sender: ScriptedSender, job: SendJob) -> SendResult:
        if len(sender.server) >= 5:
            raise AuthError("the API refused the key")
        return await sender.create(job)

    sender = ScriptedSender(refuse_after_five, concurrency=1)
    reported = Reported()
    with pytest.raises(AuthError):
        await deliver(RowFeed(in_chunks(rows(100))), sender, ledger, SETTINGS, reported)
    assert [o.row for o in reported] == list(range(2, 102))
    assert reported.statuses() == ["created"] * 5 + ["failed"] * 95
    assert {o.error for o in reported[5:]} == {KEY_REFUSED}


async def test_a_cancelled_caller_still_gets_every_row_its_line(ledger):
    gate = asyncio.Event()
    sender = ScriptedSender(slow(gate), concurrency=2)
    reported = Reported()
    task = asyncio.create_task(
        deliver(RowFeed(in_chunks(rows(25))), sender, ledger, SETTINGS, reported)
    )
    while len(sender.posts) < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [o.row for o in reported] == list(range(2, 27))
    assert all(o.status is Status.FAILED for o in reported)
    assert ledger.stats()[EntryState.SENDING] == 2  # the two in flight: in doubt


async def test_an_interruption_before_the_start_sends_nothing(ledger):
    interruption = Interruption()
    interruption.drain()
    sender = ScriptedSender()
    reported, interrupted = await run(sender, rows(12), ledger, interruption=interruption)
    assert interrupted and sender.posts == []
    assert reported.statuses() == ["failed"] * 12


# -- three answers: found, absent, could not tell (issue 14) -------------------------------


async def test_a_look_that_cannot_be_read_leaves_the_row_in_doubt_and_sends_nothing(ledger):
    first = ScriptedSender(store_then_fail)
    await run(first, rows(4), ledger)
    blind = ScriptedSender()
    blind.server, blind.reads_fail = first.server, True
    again, _ = await run(blind, rows(4), ledger)
    assert set(again.statuses()) == {"failed"} and all(o.in_doubt for o in again)
    assert again[0].error.startswith("in doubt: could not check whether an earlier run created")
    assert "503 Service Unavailable" in again[0].error
    assert blind.posts == [] and ledger.stats()[EntryState.SENDING] == 4
    seeing = ScriptedSender()
    seeing.server = first.server
    settled, _ = await run(seeing, rows(4), ledger)
    assert set(settled.statuses()) == {"created"} and seeing.posts == []
    assert seeing.copies() == [1] * 4


@pytest.mark.parametrize("echo", [False, True], ids=["documented", "echoed"])
async def test_rows_in_doubt_only_the_note_tells_apart(ledger, echo):
    first = ScriptedSender(store_then_fail)
    await run(first, rows(3, dated=False), ledger)
    second = ScriptedSender(echo=echo)
    second.server = first.server
    again, _ = await run(second, rows(3, dated=False), ledger)
    if echo:  # the answer carries the note: each row finds its own
        assert set(again.statuses()) == {"created"}
    else:  # three alike activities, three rows in doubt that differ only in the note
        assert set(again.statuses()) == {"failed"} and all(o.in_doubt for o in again)
        assert ledger.stats()[EntryState.SENDING] == 3
    assert second.posts == [] and second.copies() == [1] * 3


async def test_a_blank_row_in_doubt_is_not_taken_for_another_rows_activity(ledger):
    when = "2025-01-01T10:00:00Z"
    called = ActivityPayload(type="note", note="Gala call", occurred_at=when)
    blank = ActivityPayload(type="note", occurred_at=when)
    both = [
        Outcome(row=n + 2, status=Status.VALID, contact="10001", contact_id=10001, payload=p)
        for n, p in enumerate((called, blank))
    ]

    async def second_is_lost(sender: ScriptedSender, job: SendJob) -> SendResult:
        if job.row == 3:  # no answer, nothing stored
            return SendResult(Status.FAILED, error="no answer" + MAY_EXIST, ambiguous=True)
        return await sender.create(job)

    first = ScriptedSender(second_is_lost)
    await run(first, both, ledger)
    [kept] = first.server
    second = ScriptedSender()
    second.server = first.server
    fresh = [Outcome(o.row, Status.VALID, o.contact, 10001, payload=o.payload) for o in both]
    again, _ = await run(second, fresh, ledger)
    assert [o.status.value for o in again] == ["skipped", "created"]
    assert again[1].activity_id != kept and second.posts == [3]
    assert kept in second.claims_seen[0].ids  # the ledger said whose it is


async def test_identical_rows_in_doubt_each_take_one_activity_once(ledger):
    settings = DeliverySettings(base_url=BASE_URL, input_name="x.csv", allow_duplicates=True)
    first = ScriptedSender(store_then_fail)
    await run(first, rows(3, same=True), ledger, settings=settings)
    second = ScriptedSender()
    second.server = first.server
    again, _ = await run(second, rows(3, same=True), ledger, settings=settings)
    assert set(again.statuses()) == {"created"} and second.posts == []
    assert len({o.activity_id for o in again}) == 3


def test_seen_keys_tell_content_keys_and_copies_apart():
    from importer.seen_keys import SeenKeys

    seen = SeenKeys(hex_digests=True)
    a, b = "ab" * 32, "cd" * 16 + "ab" * 16  # digests kept by their first 128 bits
    seen.add(a, 2)
    seen.add(f"{a}#1", 3)
    assert seen.first_row(a) == 2 and seen.first_row(f"{a}#1") == 3
    assert b not in seen and seen.first_row(f"{a}#2") is None


async def test_rows_decided_at_once_behind_a_slow_row_do_not_pile_up(ledger, monkeypatch):
    import importer.delivery

    monkeypatch.setattr(importer.delivery, "HELD_AT_MOST", 50)
    sender = ScriptedSender()
    await run(sender, rows(300, first=3), ledger)  # already imported: decided at once below
    gate = asyncio.Event()
    again = ScriptedSender(slow(gate))
    again.server = sender.server
    read = []

    def chunks():
        for chunk in in_chunks([*rows(1, dated=False), *rows(300, first=3)]):
            read.extend(chunk)
            yield chunk

    reported = Reported()
    task = asyncio.create_task(deliver(RowFeed(chunks()), again, ledger, SETTINGS, reported))
    while len(again.posts) < 1:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # time enough to read the whole input, were it not held back
    assert reported == [] and 50 <= len(read) <= 50 + 10  # one chunk past the bound, no more
    gate.set()
    assert not await task
    assert [o.row for o in reported] == list(range(2, 303))
    assert reported.statuses() == ["created"] + ["skipped"] * 300


def test_seen_keys_keep_every_first_row_across_many_flushes():
    import hashlib

    from importer.seen_keys import SeenKeys

    seen = SeenKeys(hex_digests=True)
    # The first two agree on their first 64 bits, not on their first 128.
    keys = ["0" * 64, "0" * 16 + "1" + "0" * 47]
    keys += [hashlib.sha256(str(n).encode()).hexdigest() for n in range(10_000)]
    keys += [f"00T{n:09d}" for n in range(3_000)]
    for start in range(0, len(keys), 500):
        group = keys[start : start + 500]
        seen.look_ahead(group)
        for row, key in enumerate(group, start):
            assert seen.first_row(key) is None
            seen.add(key, row)
    assert len(seen) == len(keys)
    seen.look_ahead(keys[::7])
    assert all(seen.first_row(key) == row for row, key in enumerate(keys))  # ahead or not
    assert seen.setdefault(keys[5], 99_999) == 5 and seen.setdefault("new", 7) == 7
    assert "new" in seen and "other" not in seen


async def test_rows_in_doubt_are_looked_for_several_contacts_at_once_one_contact_in_order(
    ledger,
):
    def spread(outcomes: list[Outcome]) -> list[Outcome]:
        for n, outcome in enumerate(outcomes):
            outcome.contact_id = 10001 + n % 4
            outcome.contact = str(outcome.contact_id)
        return outcomes

    first = ScriptedSender(store_then_fail)
    await run(first, spread(rows(12)), ledger)
    assert ledger.stats()[EntryState.SENDING] == 12

    second = SlowLooks()
    second.server = first.server
    again, _ = await run(second, spread(rows(12)), ledger)
    assert [o.row for o in again] == list(range(2, 14))
    assert set(again.statuses()) == {"created"} and second.posts == []
    assert second.copies() == [1] * 12
    assert second.most_at_once == 4
    for contact in range(4):  # each contact's rows looked for in input order
        mine = [row for row in second.order if (row - 2) % 4 == contact]
        assert mine == sorted(mine) and len(mine) == 3


async def test_a_look_while_results_are_written_still_claims_their_ids(ledger, monkeypatch):
    """The sender keeps no ids while the delivery gives it claims: an id whose result is
    being written when a look reads the ledger (the read first, the write queued behind it
    on the ledger's thread) must still be among the look's claims."""
    run_ = _Delivery(SETTINGS, OrderedOutcomes(Reported()), ledger, None)
    reading = threading.Event()
    real_claims = delivery.ledger_claims

    def slow_claims(*args):
        reading.wait(5)
        return real_claims(*args)

    monkeypatch.setattr(delivery, "ledger_claims", slow_claims)
    monkeypatch.setattr(run_, "_write_results", lambda results: None)
    look = asyncio.create_task(run_.claims(10001))
    await asyncio.sleep(0.01)  # the read holds the ledger's thread
    run_.results.append(("k1", SendResult(status=Status.CREATED, activity_id="A1"), None))
    run_.awaiting_commit.append((2, rows(1)[0]))
    commit = asyncio.create_task(run_.commit())
    await asyncio.sleep(0.01)  # the commit took the result from `results`: it is writing
    assert run_.results == [] and run_.writing
    reading.set()
    assert "A1" in (await look).ids
    await commit
    assert run_.writing == []
    run_.finish()

"""The ledger's batched writes: many rows to a statement, either SQLite, any one thread."""

import threading

import pytest

from importer import ledger as ledger_module
from importer.ledger import EntryState, Ledger, NewEntry, activity_key, canonical_json, key_of_json
from importer.payload import ActivityPayload

BASE = "https://api.givebutter.com/v1"


def entries(count: int, prefix: str = "k") -> list[NewEntry]:
    return [NewEntry(f"{prefix}{n:05}", 1000 + n, n + 2, "in.csv", "{}") for n in range(count)]


def test_a_batch_longer_than_one_statement_is_marked_whole(ledger: Ledger) -> None:
    batch = entries(3 * ledger_module._ROWS_PER_STATEMENT + 7)
    ledger.mark_sending(batch)
    assert ledger.stats()[EntryState.SENDING] == len(batch)


def test_one_created_key_in_a_long_batch_refuses_all_of_it(ledger: Ledger) -> None:
    ledger.mark_sending(entries(1, prefix="old"))
    ledger.record_created("old00000", "act-1", 1)
    ledger.commit()
    batch = [*entries(2 * ledger_module._ROWS_PER_STATEMENT), *entries(1, prefix="old")]
    with pytest.raises(ValueError, match="old00000"):
        ledger.mark_sending(batch)
    assert ledger.stats() == {EntryState.SENDING: 0, EntryState.CREATED: 1, EntryState.FAILED: 0}


@pytest.mark.parametrize("update_from", [True, False])
def test_results_are_written_alike_with_or_without_update_from(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, update_from: bool
) -> None:
    monkeypatch.setattr(ledger_module, "_UPDATE_FROM", update_from)
    batch = entries(ledger_module._ROWS_PER_STATEMENT + 3)
    ledger.mark_sending(batch)
    for n, entry in enumerate(batch):
        if n % 2:
            ledger.record_failed(entry.key, "422 Unprocessable Content", 1, 422)
        else:
            ledger.record_created(entry.key, f"act-{n}", 2)
    assert len(ledger.commit()) == len(batch)
    found = ledger.lookup(e.key for e in batch)
    assert found[batch[0].key].state is EntryState.CREATED
    assert (found[batch[0].key].activity_id, found[batch[0].key].attempts) == ("act-0", 2)
    assert found[batch[1].key].state is EntryState.FAILED
    assert (found[batch[1].key].error, found[batch[1].key].http_status) == (
        "422 Unprocessable Content",
        422,
    )


@pytest.mark.parametrize("update_from", [True, False])
def test_a_result_for_a_key_never_marked_is_refused_either_way(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, update_from: bool
) -> None:
    monkeypatch.setattr(ledger_module, "_UPDATE_FROM", update_from)
    ledger.mark_sending(entries(2))
    ledger.record_created("k00000", "act-1", 1)
    ledger.record_created("never", "act-2", 1)
    with pytest.raises(ValueError, match="never"):
        ledger.commit()
    assert ledger.pending_results == 2
    assert ledger.stats()[EntryState.CREATED] == 0
    ledger.forget("never")  # so that closing commits the rest


def test_is_empty_until_the_first_entry(ledger: Ledger) -> None:
    assert ledger.is_empty()
    ledger.mark_sending(entries(1))
    assert not ledger.is_empty()


def test_calls_may_come_from_another_thread_one_at_a_time(ledger: Ledger) -> None:
    errors: list[BaseException] = []

    def mark() -> None:
        try:
            ledger.mark_sending(entries(3))
        except BaseException as error:  # handed back to the test
            errors.append(error)

    thread = threading.Thread(target=mark)
    thread.start()
    thread.join()
    assert errors == [] and ledger.stats()[EntryState.SENDING] == 3


def test_key_of_json_is_activity_key_of_the_same_payload() -> None:
    payload = ActivityPayload.model_validate({"type": "note", "subject": "Gala", "note": "é"})
    assert key_of_json(BASE + "/", 42, canonical_json(payload)) == activity_key(BASE, 42, payload)

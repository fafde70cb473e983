"""Exactly once, for any sequence of faults (hypothesis).

The invariant, checked on the server itself after every run: no row has more than one
activity, and every row reported created has exactly one, the one whose id was reported.

Two drivers: the engine in-process (the scripted sender of `test_delivery` and a real
ledger; the fate of every POST and every look drawn by hypothesis, over three runs), and
the real sender against the sandbox in a thread (fault rates and the seed drawn).
"""

from __future__ import annotations

import asyncio
import csv
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.delivery import DeliverySettings
from importer.errors import ImporterError
from importer.ledger import Ledger
from importer.mapping import load_mapping
from importer.payload import ActivityPayload
from importer.pipeline import RunOptions, run_import
from importer.records import Outcome, SendResult, Status
from importer.retry import RetryPolicy
from importer.sandbox import Faults, SandboxSettings, sandbox_in_thread
from importer.send import MAY_EXIST, SenderSettings, SendJob
from tests.conftest import rows_of
from tests.test_delivery import BASE_URL, ScriptedSender, run

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow],
)

# What may befall one POST: created and answered; stored, answer lost (a 5xx after storing,
# a dropped connection); not stored, answer lost; refused for good.
FATES = ("created", "stored_lost", "lost", "refused")

row_fields = st.fixed_dictionaries(
    {
        # Few values, so that rows often look alike in the documented fields.
        "contact": st.sampled_from([10001, 10001, 10002]),
        "type": st.sampled_from(["note", "note", "email"]),
        "subject": st.sampled_from(["", "Gala", "Thanks"]),
        "occurred_at": st.sampled_from([None, "2024-03-01T10:00:00Z"]),
    }
)


def outcomes(fields: list[dict]) -> list[Outcome]:
    made = []
    for n, row in enumerate(fields):
        body = {"type": row["type"]}
        if row["subject"]:
            body["subject"] = row["subject"]
        if row["occurred_at"]:
            body["occurred_at"] = row["occurred_at"]
        made.append(
            Outcome(
                row=n + 2,
                status=Status.VALID,
                contact=str(row["contact"]),
                contact_id=row["contact"],
                payload=ActivityPayload.model_validate(body),
            )
        )
    return made


def scripted(fates: Iterator[str]) -> ScriptedSender:
    async def answer(sender: ScriptedSender, job: SendJob) -> SendResult:
        fate = next(fates, "created")
        if fate == "created":
            return await sender.create(job)
        if fate == "refused":
            return SendResult(Status.FAILED, http_status=422, error="422: refused")
        if fate == "stored_lost":
            sender.store(job)
        return SendResult(Status.FAILED, error="no answer" + MAY_EXIST, ambiguous=True)

    return ScriptedSender(answer, concurrency=3)


def check(server: dict, reported: list[Outcome], copies: Counter) -> None:
    """≤ 1 activity per row (per copy, for identical rows kept apart), = 1 for each created
    row, and the reported id is that activity."""
    stored = Counter((contact, repr(sorted(body.items()))) for contact, body, _ in server.values())
    for identity, count in stored.items():
        assert count <= copies[identity], f"{count} activities for {identity}"
    ids = []
    for outcome in reported:
        if outcome.activity_id and outcome.status in (Status.CREATED, Status.SKIPPED):
            contact, body, _ = server[outcome.activity_id]
            assert outcome.payload is not None
            assert (contact, body) == (outcome.contact_id, outcome.payload.to_body())
            if outcome.status is Status.CREATED:
                ids.append(outcome.activity_id)
    assert len(ids) == len(set(ids))


def identity_of(outcome: Outcome) -> tuple[int, str]:
    assert outcome.payload is not None and outcome.contact_id is not None
    return outcome.contact_id, repr(sorted(outcome.payload.to_body().items()))


@PROPERTY
@given(
    rows=st.lists(row_fields, min_size=1, max_size=10),
    allow_duplicates=st.booleans(),
    echo=st.booleans(),
    runs=st.lists(
        st.tuples(st.lists(st.sampled_from(FATES), max_size=20), st.booleans()),
        min_size=1,
        max_size=3,
    ),
)
def test_any_faults_through_the_engine_keep_every_row_at_most_once(
    rows, allow_duplicates, echo, runs
):
    delivery = DeliverySettings(
        base_url=BASE_URL, input_name="x.csv", allow_duplicates=allow_duplicates
    )
    made = outcomes(rows)
    copies = Counter(identity_of(o) for o in made)
    if not allow_duplicates:
        copies = Counter(dict.fromkeys(copies, 1))
    server: dict = {}

    async def go(ledger: Ledger) -> None:
        # Each run meets its drawn faults; a last, calm run must still keep the invariant.
        for fates, reads_fail in [*runs, ([], False)]:
            sender = scripted(iter(fates))
            sender.server, sender.echo, sender.reads_fail = server, echo, reads_fail
            reported, _ = await run(sender, outcomes(rows), ledger, settings=delivery)
            assert len(reported) == len(rows)
            check(server, reported, copies)

    with tempfile.TemporaryDirectory() as folder, Ledger.open(Path(folder) / "l.sqlite") as ledger:
        asyncio.run(go(ledger))


# -- the real sender, against the sandbox --------------------------------------------------

MAPPING = "contact: Contact\nactivity:\n  type: Type\n  subject: Subject\n  occurred_at: Date\n"
QUICK = RetryPolicy(base_delay=0.002, max_delay=0.01)
share = st.sampled_from([0.0, 0.1, 0.3, 0.6])


@settings(
    max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    rows=st.lists(row_fields, min_size=1, max_size=8),
    error=share,
    store_then_fail=share,
    drop=share,
    read_error=share,
    echo=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_any_faults_at_the_sandbox_keep_every_row_at_most_once(
    rows, error, store_then_fail, drop, read_error, echo, seed
):
    faults = Faults(
        error_rate=error,
        store_then_fail_rate=store_then_fail,
        drop_rate=drop,
        read_error_rate=read_error,
        seed=seed,
    )
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        data = folder / "in.csv"
        with open(data, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["Contact", "Type", "Subject", "Date"])
            for row in rows:
                writer.writerow([row["contact"], row["type"], row["subject"], row["occurred_at"]])
        (folder / "m.yaml").write_text(MAPPING, encoding="utf-8")
        box_settings = SandboxSettings(limits=(), contacts=5, echo_fields=echo, faults=faults)
        with sandbox_in_thread(box_settings) as box:
            for attempt in range(2):
                options = RunOptions(
                    input_path=data,
                    mapping=load_mapping(folder / "m.yaml"),
                    results_path=folder / f"r{attempt}.csv",
                    sender=SenderSettings(
                        base_url=box.base_url, rate=1000.0, max_attempts=4, retry=QUICK
                    ),
                    api_key=box.api_key,
                    ledger_path=folder / "ledger.sqlite",
                )
                try:
                    run_import(options)
                except ImporterError:  # the key check never got an answer: nothing sent
                    lines = []
                else:
                    lines = rows_of(folder / f"r{attempt}.csv")
                    assert len(lines) == len(rows)
                stored = {
                    a.id: (a.contact_id, a.type, a.subject or "", a.occurred_at)
                    for contact in box.store.activity_counts()
                    for a in box.store.list_activities(contact, limit=1000)[0]
                }
                per_row = Counter(stored.values())
                assert all(count == 1 for count in per_row.values()), per_row
                for line in lines:
                    if line["status"] == "created":
                        contact, kind, subject, _ = stored[line["activity_id"]]
                        assert (str(contact), kind, subject) == (
                            line["contact_id"],
                            line["type"],
                            line["subject"],
                        )

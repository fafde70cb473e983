"""The map stage's last step: what becomes of each mapped row before anything is sent.

A mapped row is `skipped` (a skip rule), `invalid` (its reasons) or `valid` (to send).
Two shapes of the same decision:

- `decide_columns(chunk)`: column by column, no object per row: what a dry run writes.
- `decide_rows(chunk)`: one `Outcome` per row, each valid row with its checked payload:
  what sending needs.

A row whose contact is a Givebutter id gets it here (`found_by` "id"); other contact keys
are left to the resolve stage.

`decide_rows_of(frames, mapper)` maps and decides the read stage's chunks for sending
`ROWS_AT_ONCE` rows at a time: an `Outcome` with its payload is about 1 KB of Python
objects, and making them for a whole 50,000-row chunk at once was most of a sending run's
peak memory (about 100 MB, twice that while a chunk was being decided).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.mapper import Mapper
from importer.payload import validate_payload
from importer.records import MappedChunk, Outcome, OutcomeBlock, Status
from importer.resolve import given_contact_id

ROWS_AT_ONCE = 5_000  # rows given an Outcome at a time (mapping is as fast from ~2,000 up)


def decide_columns(chunk: MappedChunk) -> OutcomeBlock:
    """A mapped chunk's outcomes before sending, column by column: SKIPPED, INVALID, or
    VALID (to send). Only valid rows show their payload's fields."""
    n = len(chunk)
    statuses, errors = [Status.VALID] * n, [""] * n
    decided = np.asarray(chunk.skipped, dtype=object) != ""
    for pos in np.flatnonzero(decided).tolist():
        statuses[pos], errors[pos] = Status.SKIPPED, chunk.skipped[pos]
    for pos, reasons in chunk.errors.items():
        statuses[pos], errors[pos] = Status.INVALID, "; ".join(reasons)
    decided[list(chunk.errors)] = True
    valid = pa.array(~decided)
    values = {name: pc.if_else(valid, column, "") for name, column in chunk.values.items()}
    keys = pc.if_else(valid, chunk.contacts, "")
    distinct = pc.unique(keys)
    ids = [given_contact_id(key) for key in distinct.to_pylist()]
    contact_ids = pa.array(ids, pa.int64()).take(pc.index_in(keys, value_set=distinct))
    return OutcomeBlock(
        rows=[*chunk.rows],  # a list of int | None (a line may be for no input row)
        statuses=statuses,
        contacts=chunk.contacts,
        contact_ids=contact_ids,
        found_by=pc.if_else(pc.is_valid(contact_ids), "id", ""),
        errors=errors,
        warnings=dict(chunk.warnings),
        values=values,
        keys=chunk.keys,
    )


def decide_rows(chunk: MappedChunk) -> list[Outcome]:
    """`decide_columns`, row by row, with a payload for each valid row: what sending needs."""
    block = decide_columns(chunk)
    contacts = chunk.contacts.to_pylist()
    keys = chunk.keys.to_pylist() if chunk.keys is not None else [""] * len(chunk)
    contact_ids = pa.array(block.contact_ids).to_pylist()  # an arrow array already: no copy
    valid = [i for i, status in enumerate(block.statuses) if status is Status.VALID]
    bodies = dict(zip(valid, chunk.bodies(valid), strict=True))
    new_contacts = chunk.new_contact_list()
    outcomes = []
    for i, status in enumerate(block.statuses):
        outcome = Outcome(
            row=chunk.rows[i],
            status=status,
            contact=contacts[i],
            key=keys[i],
            error=block.errors[i],
            warnings=list(block.warnings.get(i, ())),
            new_contact=new_contacts[i],
        )
        if status is Status.VALID:
            outcome.payload, reasons = validate_payload(bodies[i])
            if reasons:  # the fields passed one by one: only a rule across fields gets here
                outcome.status, outcome.error = Status.INVALID, "; ".join(reasons)
            elif contact_ids[i] is not None:
                outcome.contact_id, outcome.found_by = contact_ids[i], "id"
        outcomes.append(outcome)
    return outcomes


def decide_rows_of(
    frames: Iterable[pd.DataFrame], mapper: Mapper, at_once: int | None = None
) -> Iterator[list[Outcome]]:
    """The rows of the read stage's chunks, mapped and decided (`decide_rows`) `at_once`
    (default `ROWS_AT_ONCE`) rows at a time, so that only so many rows are Python objects
    at once however long the chunks are."""
    at_once = at_once or ROWS_AT_ONCE
    for frame in frames:
        for start in range(0, len(frame), at_once):
            yield decide_rows(mapper.map_columns(frame.iloc[start : start + at_once]))

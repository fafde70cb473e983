"""What a sync run decides before its first request: which keys left the source, and
whether deleting them is sane.

`keys_to_delete` reads the input's key column once (nothing else is mapped), compares it
with the keys the ledger holds for this account and source, and gives the records to delete
at the end of the run. The guard: more than `max_delete` of them (a number, or a share of
the source's known keys) stops the run before anything is sent, since a truncated or empty
export must not wipe years of history.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from importer.errors import ConfigError
from importer.feed import number_or_share
from importer.key_records import KeyRecord, KeyRecords
from importer.mapper import Mapper

DEFAULT_MAX_DELETE_SHARE = 0.10


@dataclass(frozen=True, slots=True)
class DeleteLimit:
    """At most `count` deletions, or at most `share` (0–1) of the source's known keys."""

    count: int | None = None
    share: float | None = DEFAULT_MAX_DELETE_SHARE

    def allows(self, deletions: int, known: int) -> bool:
        if self.count is not None:
            return deletions <= self.count
        return deletions <= math.floor((self.share or 0.0) * known)

    @classmethod
    def parse(cls, text: str) -> DeleteLimit:
        """`N` deletions, or `P%` of the source's known keys; ValueError if neither."""
        count, share = number_or_share(text)
        return cls(count=count, share=share)

    def describe(self, known: int) -> str:
        if self.count is not None:
            return f"{self.count:,}"
        return f"{(self.share or 0.0) * 100:g}% of the {known:,} known keys"


def keys_to_delete(
    chunks: Iterable[pd.DataFrame],
    mapper: Mapper,
    records: KeyRecords,
    limit: DeleteLimit,
) -> tuple[KeyRecord, ...]:
    """The records of keys absent from the input; `ConfigError` if more than `limit`."""
    present: set[str] = set()
    for chunk in chunks:
        present.update(mapper.source_keys(chunk))
    missing = tuple(record for record in records.live() if record.key not in present)
    known = records.count_live()
    if missing and not limit.allows(len(missing), known):
        raise ConfigError(
            f"{len(missing):,} of the source's {known:,} known keys are not in the input: "
            f"more deletions than allowed ({limit.describe(known)}); nothing was sent. "
            "If the input is complete, raise the limit on deletions",
            setting="max_delete",
        )
    return missing

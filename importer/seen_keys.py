"""The keys a run has met, each with the first row that had it, in flat memory.

A run keeps one entry for every row it reads (to tell a row that repeats an earlier one), so
the entries are kept small and in few, big allocations: 16 bytes of digest and 8 of row
number each, in sorted numpy arrays, instead of a dict of Python objects (about 165 bytes a
row, most of them small objects that also kept the allocator's arenas from being given back).

Each key is kept as a 128-bit digest: a content key (a SHA-256 hex digest of our own) as its
first 128 bits, with `hex_digests`; any other key (a source record's id, `allow_duplicates`'
`digest#n`) as its BLAKE2b-128. Two different keys would have to agree on 128 bits to be
taken for each other.

New entries go to a small dict; every `_FLUSH_AT` of them become a sorted run, and runs are
merged as a binary counter carries, so a lookup searches a dict and at most about
log2(entries / _FLUSH_AT) arrays. Searching the arrays one key at a time costs microseconds;
`look_ahead(keys)` searches them for many keys in one go, after which a lookup of one of
those keys is a dict lookup.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

_FLUSH_AT = 4096
_HALVES = np.dtype(">u8")  # a digest read as two big-endian 64-bit halves

Run = tuple[np.ndarray, np.ndarray, np.ndarray]  # first halves (sorted), second halves, rows


class SeenKeys:
    """Keys met so far in a run, each with the first row that had it."""

    def __init__(self, *, hex_digests: bool = False) -> None:
        self._hex_digests = hex_digests
        self._recent: dict[bytes, int] = {}
        self._runs: list[Run] = []
        self._looked: dict[bytes, int | None] = {}  # what `look_ahead` found in the runs

    def look_ahead(self, keys: Iterable[str]) -> None:
        """Search the runs for `keys` at once: their lookups that follow are dict lookups."""
        digests = list(dict.fromkeys(map(self._digest, keys)))
        self._looked = dict.fromkeys(digests)
        if not digests or not self._runs:
            return
        halves = np.frombuffer(b"".join(digests), dtype=_HALVES).reshape(-1, 2)
        high, low = halves[:, 0].astype(np.uint64), halves[:, 1].astype(np.uint64)
        for run_high, run_low, rows in self._runs:
            at = np.minimum(np.searchsorted(run_high, high), len(run_high) - 1)
            hits = np.flatnonzero((run_high[at] == high) & (run_low[at] == low))
            for i in hits.tolist():
                self._looked[digests[i]] = int(rows[at[i]])
            # Two keys whose first halves agree: the search found the leftmost; look on.
            for i in np.flatnonzero((run_high[at] == high) & (run_low[at] != low)).tolist():
                self._looked[digests[i]] = _scan(self._runs, digests[i])

    def first_row(self, key: str) -> int | None:
        return self._first_row(self._digest(key))

    def add(self, key: str, row: int) -> None:
        """Remember `key`, not met before, at `row`."""
        self._add(self._digest(key), row)

    def setdefault(self, key: str, row: int) -> int:
        """The first row that had `key`: `row` if none did (and it is remembered)."""
        digest = self._digest(key)
        first = self._first_row(digest)
        if first is None:
            self._add(digest, row)
            return row
        return first

    def __contains__(self, key: str) -> bool:
        return self.first_row(key) is not None

    def __len__(self) -> int:
        return len(self._recent) + sum(len(rows) for _, _, rows in self._runs)

    def _first_row(self, digest: bytes) -> int | None:
        row = self._recent.get(digest)
        if row is not None:
            return row
        if digest in self._looked:
            return self._looked[digest]
        return _scan(self._runs, digest)

    def _add(self, digest: bytes, row: int) -> None:
        self._recent[digest] = row
        if len(self._recent) >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        halves = np.frombuffer(b"".join(self._recent), dtype=_HALVES).reshape(-1, 2)
        rows = np.fromiter(self._recent.values(), dtype=np.int64, count=len(self._recent))
        for digest in self._recent.keys() & self._looked.keys():
            self._looked[digest] = self._recent[digest]  # looked ahead, added since: in a run now
        self._recent = {}
        self._runs.append(_sorted(halves[:, 0].astype(np.uint64), halves[:, 1], rows))
        while len(self._runs) > 1 and len(self._runs[-1][2]) >= len(self._runs[-2][2]):
            newer, older = self._runs.pop(), self._runs.pop()
            merged = (np.concatenate([old, new]) for old, new in zip(older, newer, strict=True))
            self._runs.append(_sorted(*merged))

    def _digest(self, key: str) -> bytes:
        if self._hex_digests and len(key) == 64:
            try:
                return bytes.fromhex(key[:32])
            except ValueError:
                pass
        return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


def _sorted(high: np.ndarray, low: np.ndarray, rows: np.ndarray) -> Run:
    order = np.argsort(high, kind="stable")
    return high[order], low[order].astype(np.uint64), rows[order]


def _scan(runs: list[Run], digest: bytes) -> int | None:
    """The row of `digest` in the runs, searched one key at a time."""
    high, low = (int(half) for half in np.frombuffer(digest, dtype=_HALVES))
    for run_high, run_low, rows in runs:
        at = int(np.searchsorted(run_high, high))
        while at < len(run_high) and run_high[at] == high:
            if run_low[at] == low:
                return int(rows[at])
            at += 1
    return None

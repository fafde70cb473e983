"""What a delivery needs to know of the run besides its rows."""

from __future__ import annotations

from dataclasses import dataclass

from importer.feed import FailureLimit
from importer.key_records import KeyRecord
from importer.send import DEFAULT_CONCURRENCY


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliverySettings:
    """What delivery needs to know of the run besides its rows."""

    base_url: str
    """The API's address: part of every ledger key, so that two servers never mix."""

    input_name: str = ""
    """What the ledger says a row came from (the input file's name)."""

    allow_duplicates: bool = False
    """Identical rows in one input are separate activities (the n-th copy is its own key)."""

    source: str = ""
    """The name of the stream of files whose rows have source keys (`key:`): a key is known
    per account and per source."""

    run_id: str = ""
    """This run's id, kept with each record it changes."""

    recreate_deleted: bool = False
    """A keyed row whose activity was deleted in Givebutter is created again (else refused)."""

    deletions: tuple[KeyRecord, ...] = ()
    """Records whose keys left the source, to delete once the input's rows are sent."""

    max_failures: FailureLimit | None = None
    """Take no more rows once this many have failed."""

    looks_at_once: int = DEFAULT_CONCURRENCY
    """Contacts whose rows an earlier run left in doubt are looked for on the server this
    many at a time: the sender's concurrency, so that a resume fills what it may have in
    flight rather than waiting a round trip per row."""

    dry_run: bool = False
    """Decide every row as a run would, with the ledger's knowledge, and report what would
    be done (`would create`, ...): no request, no ledger write."""

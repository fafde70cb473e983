"""What delivery needs of a sender, and the dry run's stand-in for one.

`importer.send.Sender` is the sender of a real run; tests script their own
(`tests/scripted.py`). A dry run that reads the ledger goes through delivery too, with
`DrySender`, which answers each job with what would be done and asks the server nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Protocol, TypeAlias

from importer.records import Change, SendResult, Status
from importer.recover import Claims, Search, Sought
from importer.send import ClaimsSource, SendJob

OnResult: TypeAlias = Callable[[SendJob, SendResult], None]
Claimer: TypeAlias = ClaimsSource | None


class ActivitySender(Protocol):
    """What delivery needs of a sender (`importer.send.Sender` is one)."""

    async def send_all(
        self, jobs: AsyncIterable[SendJob], on_result: OnResult, *, claims: Claimer = None
    ) -> None: ...

    async def search_activity(self, sought: Sought, known: Claims | None = None) -> Search: ...


WOULD = {
    Change.CREATE: Status.WOULD_CREATE,
    Change.UPDATE: Status.WOULD_UPDATE,
    Change.MOVE: Status.WOULD_MOVE,
    Change.DELETE: Status.WOULD_DELETE,
}


class DrySender:
    """A dry run's stand-in for the sender: each job is answered with what would be done;
    nothing is looked for on the server (a dry run never asks it)."""

    async def search_activity(self, sought: Sought, known: Claims | None = None) -> Search:
        raise AssertionError("a dry run never looks on the server")

    async def send_all(
        self, jobs: AsyncIterable[SendJob], on_result: OnResult, *, claims: Claimer = None
    ) -> None:
        async for job in jobs:
            on_result(job, SendResult(WOULD[job.change]))

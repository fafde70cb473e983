"""A sender with the real one's contract and a little server of its own, for in-process
tests of the delivery engine: every test can count what "the server" holds."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, Awaitable, Callable

from importer.errors import AuthError
from importer.payload import ActivityPayload
from importer.records import INTERRUPTED_IN_FLIGHT, KEY_REFUSED, Change, SendResult, Status
from importer.send import MAY_EXIST, SendJob
from importer.sync import GONE

Answer = Callable[["ScriptedSender", SendJob], Awaitable[SendResult]]
_IDS = itertools.count(1)


class ScriptedSender:
    """A sender with the real one's contract (`send_all`, `find_activity`) and a server of
    its own. `answer` decides each POST; the default stores the activity and says so."""

    def __init__(self, answer: Answer | None = None, *, concurrency: int = 4) -> None:
        self.answer = answer or ScriptedSender.create
        self.concurrency = concurrency
        self.server: dict[str, tuple[int, dict]] = {}  # activity id -> (contact, body)
        self.posts: list[int] = []  # rows, in the order their POSTs went out
        self.lookups: list[int] = []  # contacts looked through by find_activity
        self.changes: list[tuple[Change, int]] = []  # (change, row) of updates, moves, deletions
        self.refuse_updates = False  # answer every PUT 405

    def store(self, job: SendJob) -> str:
        activity_id = str(next(_IDS))  # shared by every scripted server: never reused
        self.server[activity_id] = (job.contact_id, job.payload.to_body())
        return activity_id

    async def create(self, job: SendJob) -> SendResult:
        return SendResult(status=Status.CREATED, http_status=200, activity_id=self.store(job))

    async def send_all(
        self, jobs: AsyncIterable[SendJob], on_result: Callable[[SendJob, SendResult], None]
    ) -> None:
        source, lock = aiter(jobs), asyncio.Lock()

        async def work() -> None:
            while True:
                async with lock:
                    job = await anext(source, None)
                if job is None:
                    return
                if job.change is not Change.CREATE:
                    on_result(job, self.change(job))
                    continue
                self.posts.append(job.row)
                try:
                    result = await self.answer(self, job)
                except asyncio.CancelledError:
                    error = INTERRUPTED_IN_FLIGHT + MAY_EXIST
                    on_result(job, SendResult(Status.FAILED, error=error, ambiguous=True))
                    raise
                except AuthError:
                    on_result(job, SendResult(Status.FAILED, error=KEY_REFUSED))
                    raise
                on_result(job, result)

        workers = [asyncio.create_task(work()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def find_activity(self, contact_id: int, payload: ActivityPayload) -> str | None:
        self.lookups.append(contact_id)
        body = payload.to_body()
        found = [i for i, (c, b) in self.server.items() if c == contact_id and b == body]
        return found[0] if found else None

    def copies(self) -> list[int]:
        """How many activities the server holds for each distinct (contact, body)."""
        seen: dict[str, int] = {}
        for contact, body in self.server.values():
            key = f"{contact} {sorted(body.items())}"
            seen[key] = seen.get(key, 0) + 1
        return sorted(seen.values())

    def change(self, job: SendJob) -> SendResult:
        """An update, a move or a deletion, made on the server as the API would."""
        self.changes.append((job.change, job.row))
        if job.change is Change.UPDATE:
            if job.activity_id not in self.server or self.refuse_updates:
                status = 405 if self.refuse_updates else 404
                said = (
                    "the API does not take updates of activities: 405 Method Not Allowed"
                    if status == 405
                    else GONE.format(activity=job.activity_id)
                )
                return SendResult(
                    Status.FAILED,
                    http_status=status,
                    error=said,
                    gone=status == 404,
                    unsupported=status == 405,
                )
            self.server[job.activity_id] = (job.contact_id, job.payload.to_body())
            return SendResult(Status.UPDATED, http_status=200, activity_id=job.activity_id)
        self.server.pop(job.activity_id or "", None)  # a 404 counts as deleted
        if job.change is Change.DELETE:
            return SendResult(Status.DELETED, http_status=204)
        new_id = job.found_id or self.store(job)
        return SendResult(Status.MOVED, http_status=200, activity_id=new_id)

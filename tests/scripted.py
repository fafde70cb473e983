"""A sender with the real one's contract and a little server of its own, for in-process
tests of the delivery engine: every test can count what "the server" holds."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, Awaitable, Callable
from datetime import UTC, datetime

from importer.errors import AuthError
from importer.records import INTERRUPTED_IN_FLIGHT, KEY_REFUSED, Change, SendResult, Status
from importer.recover import Claims, LookupFailed, Search, Sought, search
from importer.send import MAY_EXIST, ClaimsSource, SendJob
from importer.sync import GONE

Answer = Callable[["ScriptedSender", SendJob], Awaitable[SendResult]]
_IDS = itertools.count(1)


class ScriptedSender:
    """A sender with the real one's contract (`send_all`, `search_activity`) and a server of
    its own. `answer` decides each POST; the default stores the activity and says so. Its
    list of a contact's activities has the documented fields only, unless `echo` (then the
    subject and note too); `reads_fail` makes every page of it fail."""

    def __init__(
        self, answer: Answer | None = None, *, concurrency: int = 4, echo: bool = False
    ) -> None:
        self.answer = answer or ScriptedSender.create
        self.concurrency = concurrency
        self.echo = echo
        self.reads_fail = False
        # activity id -> (contact, body, created_at)
        self.server: dict[str, tuple[int, dict, datetime]] = {}
        self.posts: list[int] = []  # rows, in the order their POSTs went out
        self.lookups: list[int] = []  # contacts looked through by search_activity
        self.claims_seen: list[Claims] = []  # what the engine said each look must respect
        self.changes: list[tuple[Change, int]] = []  # (change, row) of updates, moves, deletions
        self.refuse_updates = False  # answer every PUT 405

    def store(self, job: SendJob) -> str:
        activity_id = str(next(_IDS))  # shared by every scripted server: never reused
        self.server[activity_id] = (job.contact_id, job.payload.to_body(), datetime.now(UTC))
        return activity_id

    def listed(self, contact_id: int) -> list[dict]:
        """The contact's activities, as the list endpoint answers them."""
        listed = []
        for activity_id, (contact, body, created) in self.server.items():
            if contact != contact_id:
                continue
            stamp = created.isoformat()
            shown = {"id": activity_id, "type": body["type"], "data": "{}", "created_at": stamp}
            shown["occurred_at"] = body.get("occurred_at") or stamp
            if self.echo:
                shown.update(subject=body.get("subject"), note=body.get("note"))
            listed.append(shown)
        return listed

    async def create(self, job: SendJob) -> SendResult:
        return SendResult(status=Status.CREATED, http_status=200, activity_id=self.store(job))

    async def send_all(
        self,
        jobs: AsyncIterable[SendJob],
        on_result: Callable[[SendJob, SendResult], None],
        *,
        claims: ClaimsSource | None = None,
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

    async def search_activity(self, sought: Sought, known: Claims | None = None) -> Search:
        self.lookups.append(sought.contact_id)
        self.claims_seen.append(known or Claims())

        async def get_json(path: str, params: dict[str, str]) -> dict:
            if self.reads_fail:
                raise LookupFailed("the API answered 503 Service Unavailable")
            kind = params["type"]
            data = [a for a in self.listed(sought.contact_id) if a["type"] == kind]
            return {"data": data, "links": {"next": None}}

        return await search(get_json, sought, known)

    def copies(self) -> list[int]:
        """How many activities the server holds for each distinct (contact, body)."""
        seen: dict[str, int] = {}
        for contact, body, _ in self.server.values():
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
            created = self.server[job.activity_id][2]
            self.server[job.activity_id] = (job.contact_id, job.payload.to_body(), created)
            return SendResult(Status.UPDATED, http_status=200, activity_id=job.activity_id)
        self.server.pop(job.activity_id or "", None)  # a 404 counts as deleted
        if job.change is Change.DELETE:
            return SendResult(Status.DELETED, http_status=204)
        new_id = job.found_id or self.store(job)
        return SendResult(Status.MOVED, http_status=200, activity_id=new_id)


class SlowLooks(ScriptedSender):
    """A scripted sender whose looks take 20 ms each: it records how many contacts were
    looked through at once, and fails a test that looks through one contact twice at once."""

    def __init__(self, *, echo: bool = False) -> None:
        super().__init__(echo=echo)
        self.looking: list[int] = []  # contacts being looked through now
        self.most_at_once = 0
        self.order: list[int] = []  # rows, in the order their looks began

    async def search_activity(self, sought: Sought, known: Claims | None = None) -> Search:
        assert sought.contact_id not in self.looking  # one contact: one look at a time
        self.looking.append(sought.contact_id)
        self.most_at_once = max(self.most_at_once, len(self.looking))
        self.order.append(sought.row)
        await asyncio.sleep(0.02)
        try:
            return await super().search_activity(sought, known)
        finally:
            self.looking.remove(sought.contact_id)

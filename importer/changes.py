"""Changing an activity that exists: the requests behind `updated`, `moved` and `deleted`.

- update: `PUT /v1/contacts/{contact}/activities/{activity}` with the same body as a POST.
  The API reference documents the endpoint but not its body; we assume the POST's body (all
  of the row's fields). After a try whose effect is unknown (a timeout, a 5xx), a
  `GET …/{activity}` is asked first: if it shows every field sent, the update landed and is
  not made again; if it cannot tell (the reference promises no `subject` or `note` in the
  answer), the PUT is made again, which is safe: a PUT is idempotent. A 404 means someone
  deleted the activity in Givebutter (`gone`); a 405, 501 or 422 means the API does not
  take updates in this form (`unsupported`): neither is retried.
- delete: `DELETE …/{activity}`; a 404 counts as deleted (it is gone either way). After a
  try whose effect is unknown, a GET is asked first: a 404 there means it landed.
- move: the old activity is deleted first, then the new one created (or, if it was found
  on the server already, only the deletion is made). Deleting first means a run stopped
  between the two leaves no duplicate: the next run, seeing the move still pending, deletes
  again (a 404, fine) and looks for the new activity before creating it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from importer.answers import ApiResponse, failure_reason
from importer.records import Change, SendResult, Status
from importer.recover import shows
from importer.send import RequestFailed, Sender, SendJob
from importer.sync import GONE

UNSUPPORTED_STATUSES = frozenset({405, 422, 501})


async def perform_change(sender: Sender, job: SendJob) -> SendResult:
    """Make the change `job` asks for (anything but a creation)."""
    if job.change is Change.UPDATE:
        return await _update(sender, job)
    if job.change is Change.DELETE:
        return await _delete(sender, job, Status.DELETED)
    if job.change is Change.MOVE:
        deleted = await _delete(sender, job, Status.MOVED)
        if deleted.status is not Status.MOVED or job.found_id is not None:
            return _with_id(deleted, job.found_id) if job.found_id else deleted
        created = await sender.create_activity(job.contact_id, job.payload)
        if created.status is Status.CREATED:
            return _with_status(created, Status.MOVED)
        return created
    raise ValueError(f"not a change of an existing activity: {job.change}")


async def _update(sender: Sender, job: SendJob) -> SendResult:
    path = f"/contacts/{int(job.contact_id)}/activities/{job.activity_id}"
    body = job.body if job.body is not None else job.payload.to_body()

    def landed(shown: ApiResponse) -> bool:
        activity = shown.json_body
        # The reference does not say whether one activity comes bare or as {"data": {...}}.
        if isinstance(activity, dict) and "type" not in activity:
            activity = activity.get("data")
        return isinstance(activity, dict) and shows(activity, job.payload)

    try:
        answer = await sender.request("PUT", path, json=body, recheck=_look(sender, path, landed))
    except RequestFailed as failure:
        return _no_answer(failure)
    if answer.ok:
        return SendResult(
            Status.UPDATED,
            http_status=answer.status,
            activity_id=job.activity_id,
            attempts=answer.attempts,
        )
    if answer.status == 404:
        return SendResult(
            Status.FAILED,
            http_status=404,
            attempts=answer.attempts,
            error=GONE.format(activity=job.activity_id),
            gone=True,
        )
    if answer.status in UNSUPPORTED_STATUSES:
        return SendResult(
            Status.FAILED,
            http_status=answer.status,
            attempts=answer.attempts,
            error=f"the API does not take updates of activities: {failure_reason(answer)}",
            unsupported=True,
        )
    return _refused(answer)


async def _delete(sender: Sender, job: SendJob, done: Status) -> SendResult:
    contact = job.old_contact_id if job.old_contact_id is not None else job.contact_id
    path = f"/contacts/{int(contact)}/activities/{job.activity_id}"
    try:
        answer = await sender.request("DELETE", path, recheck=_look(sender, path, None))
    except RequestFailed as failure:
        return _no_answer(failure)
    if answer.ok or answer.status == 404:  # gone either way
        return SendResult(done, http_status=answer.status, attempts=answer.attempts)
    return _refused(answer)


def _look(
    sender: Sender, path: str, landed: Callable[[ApiResponse], bool] | None
) -> Callable[[], Awaitable[ApiResponse | None]]:
    """A check before a change is tried again: `GET path`. A 404 stands for the change's
    answer (the activity is gone: a deletion landed, an update finds it `gone`); so does a
    2xx that `landed` accepts. Anything else, a failed look included, tries again."""

    async def look() -> ApiResponse | None:
        try:
            shown = await sender.request("GET", path)
        except RequestFailed:
            return None
        if shown.status == 404 or (shown.ok and landed is not None and landed(shown)):
            return shown
        return None

    return look


def _no_answer(failure: RequestFailed) -> SendResult:
    return SendResult(
        Status.FAILED,
        http_status=failure.http_status,
        attempts=failure.attempts,
        error=failure.reason,
        ambiguous=failure.ambiguous,
    )


def _refused(answer: ApiResponse) -> SendResult:
    return SendResult(
        Status.FAILED,
        http_status=answer.status,
        attempts=answer.attempts,
        error=failure_reason(answer),
        ambiguous=answer.ambiguous,
    )


def _with_status(result: SendResult, status: Status) -> SendResult:
    return SendResult(
        status,
        http_status=result.http_status,
        activity_id=result.activity_id,
        attempts=result.attempts,
        ambiguous=result.ambiguous,
    )


def _with_id(result: SendResult, activity_id: str) -> SendResult:
    return SendResult(
        result.status,
        http_status=result.http_status,
        activity_id=activity_id,
        attempts=result.attempts,
    )

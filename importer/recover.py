"""Finding an activity whose creation is in doubt, before sending it again.

The API has no idempotency key: a POST that timed out, lost its connection or got a 5xx
may or may not have created the activity. `find_activity` reads the contact's activities
of the same type (`GET /v1/contacts/{contact}/activities?type=…`, every page) and looks for
one with the same `subject`, `note` and `occurred_at` (compared as instants). It promises
no more than that match: two activities equal in all three are taken to be the same one,
which is also how the ledger sees them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from importer.payload import ActivityPayload

PER_PAGE = 100

# (path, params) -> the parsed JSON body of a 2xx answer, or None for any other answer.
GetJson = Callable[[str, dict[str, str]], Awaitable[Any]]


async def find_activity(get_json: GetJson, contact_id: int, payload: ActivityPayload) -> str | None:
    """The id of an existing activity equal to `payload` for this contact, or None."""
    page = 1
    while True:
        params = {"type": payload.type.value, "per_page": str(PER_PAGE), "page": str(page)}
        body = await get_json(f"/contacts/{int(contact_id)}/activities", params)
        if not isinstance(body, dict):
            return None
        for activity in body.get("data") or []:
            if isinstance(activity, dict) and matches(activity, payload):
                return str(activity.get("id"))
        links = body.get("links") or {}
        if not links.get("next"):
            return None
        page += 1


def matches(activity: dict[str, Any], payload: ActivityPayload) -> bool:
    """Whether a stored activity is the one this payload would have created."""
    if activity.get("type") != payload.type.value:
        return False
    if (activity.get("subject") or None) != (payload.subject or None):
        return False
    if (activity.get("note") or None) != (payload.note or None):
        return False
    if payload.occurred_at is None:
        return True
    return _instant(activity.get("occurred_at")) == payload.occurred_at


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None

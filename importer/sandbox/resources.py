"""The JSON the sandbox answers with: resources, pages and Laravel-style errors.

Shapes follow the reference pages (see /work/shared/givebutter-api.md):

- an activity is a bare `ContactActivityResource` with exactly the documented fields: `id`
  (string), `type`, `source` ("api"), `data` (a string whose content the reference does not
  describe: here `"{}"`), `resource` and `resource_type` (null: an imported activity belongs
  to no transaction), `occurred_at`, `created_at`, `updated_at` (ISO 8601, UTC, microseconds
  and a `Z`, as Laravel writes dates), `created_by` (the user who owns the key). No
  `subject`, `note` or `timezone`: a client must not rely on them. With `echo=True`
  (`--echo-fields`) they are echoed back, and `data` is a JSON string of them: the lenient
  shape, never promised;
- a contact carries `id` (an integer, as in the path), `type`, names, `external_id`,
  `external_ids` (objects `{id, label, external_id}`, as the reference documents them, not
  strings), `emails`/`phones` (`[{type, value}]`), `primary_email`, `primary_phone`,
  `archived_at` and timestamps;
- a page is `{"data", "links": {first, last, prev, next}, "meta": {current_page, from,
  last_page, path, per_page, to, total}}`, links absolute and keeping the query's other
  parameters (filters, `per_page`), `prev`/`next` null at the ends;
- a validation error is `{"message": "<first error> (and N more errors)", "errors":
  {field: [messages]}}`, the messages worded as Laravel words them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from yarl import URL

from importer.sandbox.store import Activity, Contact, ContactPoint

SANDBOX_USER = {
    "id": "1",
    "first_name": "Sandbox",
    "last_name": "User",
    "email": "sandbox.user@example.org",
}
EXTERNAL_ID_LABEL = "Imported"  # the label of every `external_ids[]` entry


def iso(moment: datetime) -> str:
    """A date as Laravel writes it: `2023-11-07T05:31:56.000000Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def activity_json(activity: Activity, *, echo: bool = False) -> dict[str, Any]:
    """A `ContactActivityResource` as documented; `echo` adds the sent fields (see the
    module docstring)."""
    resource: dict[str, Any] = {
        "id": activity.id,
        "type": activity.type,
        "source": "api",
        "data": "{}",
        "resource": None,
        "resource_type": None,
        "occurred_at": iso(activity.occurred_at),
        "created_at": iso(activity.created_at),
        "updated_at": iso(activity.updated_at),
        "created_by": dict(SANDBOX_USER),
    }
    if echo:
        sent = {"subject": activity.subject, "note": activity.note, "timezone": activity.timezone}
        resource.update(sent, data=json.dumps(sent, ensure_ascii=False))
    return resource


def contact_json(contact: Contact) -> dict[str, Any]:
    """A contact resource, with the fields the importer can use to find a contact."""
    return {
        "id": contact.id,
        "type": "individual",
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "external_id": contact.external_id,
        "external_ids": [
            {"id": contact.id * 100 + number, "label": EXTERNAL_ID_LABEL, "external_id": value}
            for number, value in enumerate(contact.external_ids, start=1)
        ],
        "emails": [{"type": e.type, "value": e.value} for e in contact.emails],
        "phones": [{"type": p.type, "value": p.value} for p in contact.phones],
        "primary_email": contact.primary_email,
        "primary_phone": contact.primary_phone,
        "archived_at": iso(contact.archived_at) if contact.archived_at else None,
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
    }


def page_json(
    items: Sequence[dict[str, Any]], *, total: int, page: int, per_page: int, url: URL
) -> dict[str, Any]:
    """One page of a list, with links built on `url` (the absolute request URL)."""
    last_page = max(1, math.ceil(total / per_page))
    first_index = (page - 1) * per_page + 1

    def link(number: int) -> str:
        return str(url.update_query(page=str(number)))

    return {
        "data": list(items),
        "links": {
            "first": link(1),
            "last": link(last_page),
            "prev": link(page - 1) if page > 1 else None,
            "next": link(page + 1) if page < last_page else None,
        },
        "meta": {
            "current_page": page,
            "from": first_index if items else None,
            "last_page": last_page,
            "path": str(url.with_query(None)),
            "per_page": per_page,
            "to": first_index + len(items) - 1 if items else None,
            "total": total,
        },
    }


def error_json(errors: dict[str, list[str]]) -> dict[str, Any]:
    """A 422 body: the first message, a count of the others, and all of them by field."""
    messages = [message for field in errors.values() for message in field]
    message = messages[0] if messages else "The given data was invalid."
    others = len(messages) - 1
    if others > 0:
        message += f" (and {others} more error{'s' if others > 1 else ''})"
    return {"message": message, "errors": errors}


def validation_errors(error: ValidationError) -> dict[str, list[str]]:
    """The payload model's errors, worded as Laravel's validator words them, by field."""
    errors: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        errors.setdefault(field, []).append(_laravel_message(field, item))
    return errors


def _laravel_message(field: str, item: Any) -> str:
    attribute = field.replace("_", " ")
    kind = item["type"]
    if kind == "missing" or (kind == "enum" and item.get("input") in (None, "")):
        return f"The {attribute} field is required."
    if kind == "enum":
        return f"The selected {attribute} is invalid."
    if kind == "string_too_long":
        limit = (item.get("ctx") or {}).get("max_length")
        return f"The {attribute} field must not be greater than {limit} characters."
    if kind == "string_type":
        return f"The {attribute} field must be a string."
    if kind == "timezone_aware":
        return f"The {attribute} field must be a date with a UTC offset or timezone."
    if kind.startswith("datetime"):
        return f"The {attribute} field must be a valid date."
    return f"The {attribute} field is invalid."


def new_contact(body: dict[str, Any]) -> Contact | dict[str, list[str]]:
    """The contact a `POST /v1/contacts` body asks for (id 0: the store gives it one), or
    its validation errors by field, worded as Laravel's."""
    errors: dict[str, list[str]] = {}

    def text(name: str) -> str:
        value = body.get(name)
        if value is None:
            return ""
        attribute = name.replace("_", " ")
        if not isinstance(value, str):
            errors.setdefault(name, []).append(f"The {attribute} field must be a string.")
            return ""
        if len(value) > 255:
            message = f"The {attribute} field must not be greater than 255 characters."
            errors.setdefault(name, []).append(message)
        return value.strip()

    def points(single: str, many: str) -> list[str]:
        listed = body.get(many)
        values = [body.get(single)] if body.get(single) is not None else []
        if isinstance(listed, list):
            values += [v.get("value") if isinstance(v, dict) else v for v in listed]
        elif listed is not None:
            errors.setdefault(many, []).append(f"The {many} field must be an array.")
        found = [v.strip() for v in values if isinstance(v, str) and v.strip()]
        if len(found) != len(values):
            errors.setdefault(many, []).append(f"Each of the {many} must be a non-empty string.")
        return found

    first, last = text("first_name"), text("last_name")
    external_id = text("external_id") or None
    emails = points("email", "emails")
    for email in emails:
        local, at, domain = email.rpartition("@")
        if not (local and at and "." in domain) or any(ch.isspace() for ch in email):
            errors.setdefault("email", []).append("The email field must be a valid email address.")
    phones = points("phone", "phones")
    if not (first or last or emails or phones):
        errors.setdefault("first_name", []).append("The first name field is required.")
    if errors:
        return errors
    now = datetime.now(UTC)
    return Contact(
        id=0,
        first_name=first,
        last_name=last,
        emails=tuple(ContactPoint("personal", e) for e in dict.fromkeys(emails)),
        phones=tuple(ContactPoint("cell", p) for p in dict.fromkeys(phones)),
        external_id=external_id,
        created_at=now,
        updated_at=now,
    )

"""The API contract of `POST /v1/contacts/{contact}/activities`, in one place.

`ActivityPayload` mirrors the endpoint's reference page exactly: `type` is one of the seven
documented activity types, `subject` and `timezone` are at most 255 characters, `note` has
no limit, `occurred_at` is an ISO 8601 date-time. Nothing else in the program restates these
rules: the mapper, the sandbox and the reports all ask this model.

`to_body()` gives the JSON object that is posted: fields the mapping never set are left
out rather than sent as null.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

SUBJECT_MAX_LENGTH = 255
TIMEZONE_MAX_LENGTH = 255


class ActivityType(StrEnum):
    EMAIL = "email"
    MEETING = "meeting"
    NOTE = "note"
    PHONE_CALL = "phone_call"
    SMS = "sms"
    COMPLETED_TASK = "completed_task"
    VOLUNTEER_ACTIVITY = "volunteer_activity"


# The `{contact}` path parameter is an integer: the Givebutter contact id.
CONTACT_ID_PATTERN = re.compile(r"[1-9][0-9]{0,17}")

ACTIVITY_TYPES: tuple[str, ...] = tuple(t.value for t in ActivityType)


class ActivityPayload(BaseModel):
    """The JSON body of one create-activity request."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    type: ActivityType
    note: str | None = None
    subject: Annotated[str | None, Field(max_length=SUBJECT_MAX_LENGTH)] = None
    occurred_at: AwareDatetime | None = None
    timezone: Annotated[str | None, Field(max_length=TIMEZONE_MAX_LENGTH)] = None

    def to_body(self) -> dict[str, Any]:
        """The request body: set fields only, dates as ISO 8601 strings."""
        return self.model_dump(mode="json", exclude_unset=True)


FIELD_NAMES: tuple[str, ...] = tuple(ActivityPayload.model_fields)

_PLAIN_REASONS = {
    "enum": "is not one of " + ", ".join(ACTIVITY_TYPES),
    "string_too_long": "is longer than {max_length} characters",
    "timezone_aware": "has no UTC offset or timezone",
    "datetime_parsing": "is not an ISO 8601 date-time",
    "datetime_from_date_parsing": "is not an ISO 8601 date-time",
    "datetime_type": "is not a date-time",
    "string_type": "is not text",
    "missing": "is required",
    "extra_forbidden": "is not a field of an activity",
}


def describe_errors(error: ValidationError) -> list[str]:
    """Turn a validation error into plain-words reasons, one per field problem."""
    return [
        _describe(".".join(str(part) for part in item["loc"]) or "activity", item)
        for item in error.errors(include_url=False)
    ]


def _describe(field: str, item: ErrorDetails) -> str:
    template = _PLAIN_REASONS.get(item["type"])
    if template is None:
        return f"{field}: {item['msg']}"
    shown = (
        f" ({_preview(item.get('input'))})"
        if item["type"] in {"enum", "datetime_parsing", "datetime_from_date_parsing"}
        else ""
    )
    return f"{field}{shown} " + template.format(**(item.get("ctx") or {}))


def validate_payload(fields: dict[str, Any]) -> tuple[ActivityPayload | None, list[str]]:
    """Validate one payload; give the model or the reasons it is invalid."""
    try:
        return ActivityPayload.model_validate(fields), []
    except ValidationError as error:
        return None, describe_errors(error)


def refused_values(name: str, values: Collection[Any]) -> dict[Any, str]:
    """Validate distinct values of one field as `ActivityPayload` would, in one call; give
    each value the model refuses with the reason. (A chunk's values repeat a great deal:
    validating each once, and all in one call, is what makes a dry run fast.)"""
    distinct = list(values)
    try:
        _field_adapter(name).validate_python(distinct)
        return {}
    except ValidationError as error:
        refused = {}
        for item in error.errors(include_url=False):
            position, *inner = item["loc"]
            refused[distinct[int(position)]] = _describe(".".join(map(str, (name, *inner))), item)
        return refused


@functools.cache
def _field_adapter(name: str) -> TypeAdapter[list[Any]]:
    """A validator of a list of one field's values, built from the model's own field."""
    info = ActivityPayload.model_fields[name]
    annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    return TypeAdapter(list[annotation])  # type: ignore[valid-type]


def _preview(value: Any, limit: int = 40) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= limit else text[: limit - 3] + "...'"

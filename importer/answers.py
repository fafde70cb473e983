"""What an answer of the API means: its parsed body, its message in plain words, and what
it says about one POST of an activity (`send_result`).

A 2xx with an activity `id` is a creation. A 2xx whose body is not JSON (a maintenance page
served with 200) or carries no `id` is *in doubt*, not a creation with a blank id: the
activity may exist, and nothing here can name it, so the row stays `sending` in the ledger
and the next run looks for it (see `importer.recover`).
"""

from __future__ import annotations

import http
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from importer.records import SendResult, Status

MAY_EXIST = " (the activity may have been created anyway)"
_MESSAGE_LIMIT = 300


def in_doubt(why: str) -> str:
    """The reason given to a row whose creation is in doubt and that is not sent again."""
    # No "; " inside: the summary splits a reason on it.
    return f"in doubt: {why}, so not sent again (the next run looks for it)"


@dataclass(slots=True)
class ApiResponse:
    """The final answer to one request (after any retries)."""

    status: int
    # The parsed JSON body (None if the body was not JSON) and the body as text: the data
    # as sent, unscrubbed (see `importer.send`), so never shown by a repr.
    json_body: Any = field(repr=False)
    headers: Mapping[str, str]
    attempts: int = 1
    text: str = field(default="", repr=False)
    ambiguous: bool = False  # an earlier try may have had an effect (see `importer.send`)
    scrub: Callable[[str], str] = field(default=str, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300

    def message(self) -> str:
        """The API's own explanation in plain words ('' if it gave none), fit to show: field
        errors as `field: reason; field: reason`, else its `message`; the key scrubbed."""
        return self.scrub(field_errors(self.json_body) or api_message(self.json_body, self.text))


def send_result(answer: ApiResponse, scrub: Callable[[str], str]) -> SendResult:
    """What one POST of an activity came to, from its final answer."""
    if answer.ok:
        activity_id = activity_id_of(answer.json_body)
        if activity_id is None:
            what = "no JSON" if answer.json_body is None else "JSON without an activity id"
            return SendResult(
                status=Status.FAILED,
                http_status=answer.status,
                attempts=answer.attempts,
                error=in_doubt(f"the API answered {status_words(answer.status)} with {what}"),
                ambiguous=True,
            )
        return SendResult(
            status=Status.CREATED,
            http_status=answer.status,
            activity_id=activity_id,
            attempts=answer.attempts,
            ambiguous=answer.ambiguous,
        )
    return SendResult(
        status=Status.FAILED,
        http_status=answer.status,
        attempts=answer.attempts,
        error=scrub(failure_reason(answer) + (MAY_EXIST if answer.ambiguous else "")),
        ambiguous=answer.ambiguous,
    )


def failure_reason(answer: ApiResponse) -> str:
    if 300 <= answer.status < 400:
        where = answer.headers.get("Location", "elsewhere")
        reason = f"{status_words(answer.status)}: redirect to {where} not followed"
        return reason + " (is the base URL right?)"
    if answer.status == 422 and (fields := field_errors(answer.json_body)):
        return after_attempts(fields, answer.attempts)
    said = api_message(answer.json_body, answer.text)
    words = status_words(answer.status) + (f": {said}" if said else "")
    return after_attempts(words, answer.attempts)


def activity_id_of(body: Any) -> str | None:
    if isinstance(body, dict) and "id" not in body and isinstance(body.get("data"), dict):
        body = body["data"]  # tolerate a wrapped resource, though the API sends it bare
    value = body.get("id") if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def field_errors(body: Any) -> str:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, dict):
        return ""
    parts = []
    for name, reasons in errors.items():
        for reason in reasons if isinstance(reasons, list) else [reasons]:
            parts.append(f"{name}: {reason}")
    return clip("; ".join(parts))


def api_message(body: Any, text: str) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        for said in (
            body.get("message"),
            error.get("message") if isinstance(error, dict) else error,
        ):
            if isinstance(said, str) and said.strip():
                return clip(said)
        return ""
    if body is None and text.strip() and not text.lstrip().startswith("<"):
        return clip(text)  # a plain-text body; an HTML error page says nothing useful
    return ""


def clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MESSAGE_LIMIT else flat[: _MESSAGE_LIMIT - 3] + "..."


def status_words(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def parse_json(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


def after_attempts(reason: str, attempts: int) -> str:
    return f"{reason} (after {attempts} attempts)" if attempts > 1 else reason


def describe_error(error: BaseException, timeout: float) -> tuple[str, bool, bool]:
    """A request that got no answer, in plain words: (reason, worth another try, whether
    it may have had an effect on the server)."""
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return f"could not connect within {timeout:g} s", True, False
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s", True, True
    if isinstance(error, aiohttp.ClientSSLError):
        return f"the TLS connection was refused: {error}", False, False
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"could not connect: {error}", True, False
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering", True, True
    if isinstance(error, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return f"the connection failed: {error}", True, True
    return f"the request failed: {type(error).__name__}: {error}", False, True

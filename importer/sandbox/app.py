"""The sandbox's routes: a stand-in for the part of the Givebutter API the importer uses.

    POST   /v1/contacts/{contact}/activities             create (200, a bare resource)
    GET    /v1/contacts/{contact}/activities             list (paginated; ?type=)
    GET    /v1/contacts/{contact}/activities/{activity}  one activity
    PUT    /v1/contacts/{contact}/activities/{activity}  update (200, the bare resource)
    DELETE /v1/contacts/{contact}/activities/{activity}  204
    GET    /v1/contacts                                  list (paginated; ?email=)
    POST   /v1/contacts                                  create (201), or the same person (200)
    GET    /v1/contacts/{contact}                        one contact
    GET    /_sandbox/stats                               what the sandbox saw (no key needed)

Every request to a `/v1` route passes one middleware, in this order: it is counted by the
rate limit (429 + `Retry-After` when a window is full), waits the configured latency, has its
key checked (401), may be dropped or answered 500 (see `faults`), is handled, may be answered
late, and is recorded in the stats. Handlers check what Laravel checks, in Laravel's order:
the contact exists (404), is not archived (403), then the body (422).

The body is validated by `importer.payload.ActivityPayload`, the one statement of the API
contract; its errors are reworded as Laravel's. As Laravel does, fields the endpoint does not
know are ignored, and an empty body is an empty object (so "The type field is required.").
A body that is not a JSON object is a 422 on `body`.

Archived contacts are listed and can be read (with `archived_at` set); everything under
their `/activities` answers 403.

`POST /v1/contacts` takes `first_name`, `last_name`, `email`/`emails[]`, `phone`/`phones[]`,
`external_id` and `force_create`, and de-duplicates as Givebutter documents it: the same
first + last name with one of the same emails or phones gives back the existing contact
(200) instead of a new one (201). Both answers are the bare contact resource.

PUT of an activity takes the body POST takes, checked the same way (the reference documents
the route, not its body: this is the sandbox's guess), and replaces the activity's type,
subject, note and timezone (a field left out becomes null) and its `occurred_at` (kept when
left out); an activity that does not exist, was deleted or is another contact's is 404.
With `SandboxSettings(put_allowed=False)` (`--no-put`) the route does not exist: 405.
Store-then-fail strikes every write of an activity: a POST is stored, a PUT applied, a
DELETE done, and then the answer is 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from importer.payload import ACTIVITY_TYPES, CONTACT_ID_PATTERN, FIELD_NAMES, ActivityPayload
from importer.sandbox.faults import FaultDice, RequestFaults
from importer.sandbox.resources import (
    activity_json,
    contact_json,
    error_json,
    new_contact,
    page_json,
    validation_errors,
)
from importer.sandbox.settings import SandboxSettings
from importer.sandbox.stats import DROPPED, SandboxStats
from importer.sandbox.store import Contact, SandboxStore
from importer.sandbox.windows import Admission, SlidingWindows

ACTIVITIES_ROUTE = "/v1/contacts/{contact}/activities"
ACTIVITY_ROUTE = "/v1/contacts/{contact}/activities/{activity}"
CONTACTS_ROUTE = "/v1/contacts"
CONTACT_ROUTE = "/v1/contacts/{contact}"
STATS_PATH = "/_sandbox/stats"
NO_ROUTE = "(no route)"  # how stats name requests to /v1 paths that match no route
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SandboxState:
    """Everything the handlers share: settings, store, stats, limiter, dice, and whether the
    sandbox is closing. Built inside the running event loop."""

    def __init__(self, settings: SandboxSettings, store: SandboxStore) -> None:
        self.settings = settings
        self.store = store
        self.stats = SandboxStats()
        self.limiter = SlidingWindows(settings.limits, count_refused=settings.count_refused)
        self.dice = FaultDice(settings.faults)
        self.closing = asyncio.Event()

    def arrive(self) -> Admission:
        """Count one request arriving now; note its time if it is admitted."""
        now = asyncio.get_running_loop().time()
        admission = self.limiter.arrive(now)
        if admission.admitted:
            self.stats.admit(now)
        return admission

    async def pause(self, seconds: float) -> bool:
        """Wait `seconds` without blocking; False if the sandbox began closing meanwhile."""
        if seconds > 0 and not self.closing.is_set():
            try:
                await asyncio.wait_for(self.closing.wait(), seconds)
            except TimeoutError:
                return True
        return not self.closing.is_set()


STATE = web.AppKey("sandbox_state", SandboxState)
_FAULTS = "sandbox.faults"  # the RequestFaults of a request, for the handlers that write
_DROPPED = "sandbox.dropped"  # set on a request whose connection was closed unanswered


def build_app(state: SandboxState) -> web.Application:
    """The aiohttp application answering as the sandbox described by `state`."""
    app = web.Application(middlewares=[_api_middleware])
    app[STATE] = state
    app.router.add_post(ACTIVITIES_ROUTE, create_activity)
    app.router.add_get(ACTIVITIES_ROUTE, list_activities)
    app.router.add_get(ACTIVITY_ROUTE, get_activity)
    if state.settings.put_allowed:
        app.router.add_put(ACTIVITY_ROUTE, update_activity)
    app.router.add_delete(ACTIVITY_ROUTE, delete_activity)
    app.router.add_get(CONTACTS_ROUTE, list_contacts)
    app.router.add_post(CONTACTS_ROUTE, create_contact)
    app.router.add_get(CONTACT_ROUTE, get_contact)
    app.router.add_get(STATS_PATH, show_stats)
    return app


# -- the middleware: rate limit, latency, key, faults, stats -------------------------------


_WRITES = frozenset({"POST", "PUT", "DELETE"})


@web.middleware
async def _api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    state = request.app[STATE]
    route = _route_template(request)
    if route is None:
        response: web.StreamResponse = _no_route(request)
    else:
        admission = state.arrive()
        try:
            response = await _answer(request, handler, state, admission, route)
        except ConnectionResetError:  # the client went away before its body came
            request[_DROPPED] = True
            response = _message(400, "Bad Request")  # written to no one, and quietly
        if state.settings.rate_limit_headers:
            _add_rate_headers(response, admission)
    status = DROPPED if request.get(_DROPPED) else response.status
    state.stats.answer(request.method, route or NO_ROUTE, status)
    return response


async def _answer(
    request: web.Request,
    handler: Handler,
    state: SandboxState,
    admission: Admission,
    route: str,
) -> web.StreamResponse:
    faults = state.settings.faults
    latency = faults.latency
    if request.method in _WRITES and route in (ACTIVITIES_ROUTE, ACTIVITY_ROUTE):
        latency += faults.write_latency
    if not await state.pause(latency):
        return _message(503, "Service Unavailable")
    if not admission.admitted:
        retry_after = max(1, math.ceil(admission.retry_after))
        return _message(429, "Too Many Attempts.", headers={"Retry-After": str(retry_after)})
    if not _authorized(request, state.settings.api_key):
        return _message(401, "Unauthenticated.")
    fate = state.dice.roll()
    if fate.drop:
        return _drop(request, state)
    if fate.error:
        state.stats.inflict("error")
        return _message(500, "Server Error")
    targeted = _targeted_fault(request.method, route, state)
    if targeted is not None:
        return targeted
    request[_FAULTS] = fate
    response = await handler(request)
    if fate.slow:
        state.stats.inflict("slow")
        await state.pause(faults.slow_seconds)
    return response


def _targeted_fault(method: str, route: str, state: SandboxState) -> web.Response | None:
    """A failure aimed at activity creations or activity list pages, if one befalls it."""
    if route != ACTIVITIES_ROUTE:
        return None
    if method == "POST" and state.dice.roll_post():
        state.stats.inflict("post_error")
        return _message(500, "Server Error")
    status = state.dice.roll_read() if method == "GET" else None
    if status == 429:
        state.stats.inflict("read_throttle")
        return _message(429, "Too Many Attempts.", headers={"Retry-After": "1"})
    if status == 500:
        state.stats.inflict("read_error")
        return _message(500, "Server Error")
    return None


def _drop(request: web.Request, state: SandboxState) -> web.Response:
    """Close the connection unanswered. The response given back is never sent: aiohttp finds
    the transport closing and drops it quietly."""
    state.stats.inflict("drop")
    request[_DROPPED] = True
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


def _route_template(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    if getattr(request.match_info, "http_exception", None) is not None or resource is None:
        return None
    return resource.canonical


def _no_route(request: web.Request) -> web.Response:
    error = getattr(request.match_info, "http_exception", None)
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        return _message(
            405,
            f"The {request.method} method is not supported for route {request.path.lstrip('/')}. "
            f"Supported methods: {allowed}.",
        )
    return _message(404, f"The route {request.path.lstrip('/')} could not be found.")


def _authorized(request: web.Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    )


def _add_rate_headers(response: web.StreamResponse, admission: Admission) -> None:
    if admission.limit is None or admission.remaining is None:
        return
    response.headers["X-RateLimit-Limit"] = str(admission.limit)
    response.headers["X-RateLimit-Remaining"] = str(admission.remaining)
    reset = time.time() + (admission.reset_after or 0.0)
    response.headers["X-RateLimit-Reset"] = str(math.ceil(reset))


# -- activities ----------------------------------------------------------------------------


async def create_activity(request: web.Request) -> web.Response:
    """POST: 404, 403, 422, or the stored activity (and maybe a 500 after storing it)."""
    state = request.app[STATE]
    contact_id = _live_contact_id(request, state)
    if isinstance(contact_id, web.Response):
        return contact_id
    payload = await _payload(request)
    if isinstance(payload, web.Response):
        return payload
    activity = state.store.add_activity(contact_id, payload, now=datetime.now(UTC))
    echoed = activity_json(activity, echo=state.settings.echo_fields)
    return _written(request, state) or web.json_response(echoed)


async def list_activities(request: web.Request) -> web.Response:
    """GET: one page of a contact's activities, in creation order; `type` filters."""
    state = request.app[STATE]
    contact_id = _live_contact_id(request, state)
    if isinstance(contact_id, web.Response):
        return contact_id
    paging = _paging(request)
    if isinstance(paging, web.Response):
        return paging
    page, per_page = paging
    kind = request.query.get("type") or None
    if kind is not None and kind not in ACTIVITY_TYPES:
        return _invalid({"type": ["The selected type is invalid."]})
    activities, total = state.store.list_activities(
        contact_id, type=kind, offset=(page - 1) * per_page, limit=per_page
    )
    echo = state.settings.echo_fields
    items = [activity_json(activity, echo=echo) for activity in activities]
    return web.json_response(
        page_json(items, total=total, page=page, per_page=per_page, url=request.url)
    )


async def get_activity(request: web.Request) -> web.Response:
    """GET: one activity of the contact, or 404."""
    state = request.app[STATE]
    contact_id = _live_contact_id(request, state)
    if isinstance(contact_id, web.Response):
        return contact_id
    activity = state.store.get_activity(contact_id, request.match_info["activity"])
    if activity is None:
        return _message(404, "Activity not found.")
    return web.json_response(activity_json(activity, echo=state.settings.echo_fields))


async def update_activity(request: web.Request) -> web.Response:
    """PUT: 404, 403, 404 (activity), 422, or the updated activity (and maybe a 500 after
    updating it)."""
    state = request.app[STATE]
    contact_id = _live_contact_id(request, state)
    if isinstance(contact_id, web.Response):
        return contact_id
    activity_id = request.match_info["activity"]
    if state.store.get_activity(contact_id, activity_id) is None:
        return _message(404, "Activity not found.")
    payload = await _payload(request)
    if isinstance(payload, web.Response):
        return payload
    activity = state.store.update_activity(contact_id, activity_id, payload, datetime.now(UTC))
    if activity is None:  # deleted between the two steps
        return _message(404, "Activity not found.")
    echoed = activity_json(activity, echo=state.settings.echo_fields)
    return _written(request, state) or web.json_response(echoed)


async def delete_activity(request: web.Request) -> web.Response:
    """DELETE: 204 once gone (and maybe a 500 after deleting it), or 404."""
    state = request.app[STATE]
    contact_id = _live_contact_id(request, state)
    if isinstance(contact_id, web.Response):
        return contact_id
    if not state.store.delete_activity(contact_id, request.match_info["activity"]):
        return _message(404, "Activity not found.")
    return _written(request, state) or web.Response(status=204)


# -- contacts ------------------------------------------------------------------------------


async def list_contacts(request: web.Request) -> web.Response:
    """GET: one page of contacts in id order; `email` matches any address, ignoring case."""
    state = request.app[STATE]
    paging = _paging(request)
    if isinstance(paging, web.Response):
        return paging
    page, per_page = paging
    contacts, total = state.store.list_contacts(
        email=request.query.get("email") or None, offset=(page - 1) * per_page, limit=per_page
    )
    items = [contact_json(contact) for contact in contacts]
    return web.json_response(
        page_json(items, total=total, page=page, per_page=per_page, url=request.url)
    )


async def create_contact(request: web.Request) -> web.Response:
    """POST: 422, or the new contact (201), or the existing one it de-duplicates to (200)."""
    state = request.app[STATE]
    body = await _json_object(request)
    if body is None:
        return _invalid({"body": ["The request body must be a JSON object."]})
    new = new_contact(body)
    if isinstance(new, dict):
        return _invalid(new)
    contact, created = state.store.create_contact(new, force=body.get("force_create") is True)
    return web.json_response(contact_json(contact), status=201 if created else 200)


async def get_contact(request: web.Request) -> web.Response:
    """GET: one contact (archived ones too), or 404."""
    contact = _contact(request, request.app[STATE])
    if isinstance(contact, web.Response):
        return contact
    return web.json_response(contact_json(contact))


# -- the sandbox's own route ---------------------------------------------------------------


async def show_stats(request: web.Request) -> web.Response:
    """GET /_sandbox/stats[?times=1]: the stats as JSON, with the busiest interval of each
    rate window and the number of stored activities."""
    state = request.app[STATE]
    with_times = request.query.get("times", "").lower() in {"1", "true", "yes"}
    body: dict[str, Any] = state.stats.to_json(with_times=with_times)
    body["windows"] = [
        {
            "limit": w.limit,
            "seconds": w.seconds,
            "max_admitted": state.stats.max_admitted_in(w.seconds),
        }
        for w in state.limiter.windows
    ]
    body["activities"] = state.store.count_activities()
    return web.json_response(body)


# -- helpers -------------------------------------------------------------------------------


def _contact_id(request: web.Request) -> int:
    """The contact id in the request's path; 0 (no contact has it) if it is not an id."""
    text = request.match_info["contact"]
    return int(text) if CONTACT_ID_PATTERN.fullmatch(text) else 0


def _contact_not_found() -> web.Response:
    return _message(404, "Contact not found.")


def _contact(request: web.Request, state: SandboxState) -> Contact | web.Response:
    contact = state.store.get_contact(_contact_id(request))
    return _contact_not_found() if contact is None else contact


def _live_contact_id(request: web.Request, state: SandboxState) -> int | web.Response:
    """The id of the request's contact, or the 404 (no such contact) or 403 (archived)."""
    contact_id = _contact_id(request)
    archived = state.store.contact_archived(contact_id)
    if archived is None:
        return _contact_not_found()
    if archived:
        return _message(403, "This action is unauthorized.")
    return contact_id


def _paging(request: web.Request) -> tuple[int, int] | web.Response:
    """`page` (from 1; anything else reads as 1, as Laravel does) and `per_page` (1-100)."""
    page_text = request.query.get("page", "1")
    page = int(page_text) if page_text.isdecimal() and int(page_text) > 0 else 1
    per_page_text = request.query.get("per_page", str(DEFAULT_PER_PAGE))
    if not per_page_text.isdecimal():
        return _invalid({"per_page": ["The per page field must be an integer."]})
    per_page = int(per_page_text)
    if per_page < 1:
        return _invalid({"per_page": ["The per page field must be at least 1."]})
    if per_page > MAX_PER_PAGE:
        message = f"The per page field must not be greater than {MAX_PER_PAGE}."
        return _invalid({"per_page": [message]})
    return page, per_page


async def _payload(request: web.Request) -> ActivityPayload | web.Response:
    """The request's body as a valid payload, or the 422 saying why it is not one."""
    body = await _json_object(request)
    if body is None:
        return _invalid({"body": ["The request body must be a JSON object."]})
    fields = {name: value for name, value in body.items() if name in FIELD_NAMES}
    try:
        return ActivityPayload.model_validate(fields)
    except ValidationError as error:
        return _invalid(validation_errors(error))


def _written(request: web.Request, state: SandboxState) -> web.Response | None:
    """After a write: the 500 that store-then-fail gives this request, if it does."""
    fate: RequestFaults = request.get(_FAULTS, RequestFaults())
    if not fate.store_then_fail:
        return None
    state.stats.inflict("store_then_fail")
    return _message(500, "Server Error")


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _invalid(errors: dict[str, list[str]]) -> web.Response:
    return web.json_response(error_json(errors), status=422)


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)

"""The send stage: every request to the API goes through one `Sender`.

A `Sender` is given an `aiohttp.ClientSession` (it never builds one), the API key and
`SenderSettings`. Each attempt of each request first waits for its turn at the run's
`RateLimit`, then goes out with `Authorization: Bearer <key>`; redirects are never followed,
so the key goes nowhere but the configured base URL.

What an answer means:

- 2xx: done. For a POST of an activity, the returned `id` is kept (as a string).
- 401: `AuthError` at once: the key is wrong or revoked, and nothing more can be sent.
- 429: every worker pauses for max(Retry-After, backoff), then this request is tried
  again; 429s that are more than rare slow the whole run down (see `importer.ratelimit`).
- 408, 500, 502, 503, 504, a timeout, a dropped or refused connection: tried again after
  an exponential backoff with full jitter (max with Retry-After when it is given), up to
  `max_attempts` tries in all (429s count too).
- Anything else (other 4xx, 3xx): final, with the API's own message in plain words.

No idempotency key: a POST unanswered (timeout, dropped connection) or answered 5xx may
have landed. Before posting again the sender looks (`importer.recover`): found, created with
that id; absent, posted again; could not tell, not posted: FAILED, `ambiguous`, "in doubt",
as a 2xx without an id is (`importer.answers`). The next run looks for such a row.

The key never appears in an exception message, a reason, a repr or a log: aiohttp's own
errors (which carry request headers) are turned into plain reasons here and never escape.
The key is scrubbed from what is shown or written (reasons, `ApiResponse.message()`), never
from the data: an answer's `json_body` and `text` are what the API sent, so that a short
key cannot change an external id or a date inside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from importer import __version__, recover
from importer.answers import (
    MAY_EXIST,
    ApiResponse,
    after_attempts,
    describe_error,
    in_doubt,
    parse_json,
    send_result,
    status_words,
)
from importer.base_url import ApiKey, check_base_url, shown_url
from importer.claims import RunClaims
from importer.errors import AuthError, ConfigError, ImporterError
from importer.payload import ActivityPayload
from importer.ratelimit import DEFAULT_RATE_PER_SECOND, NoticeCallback, RateLimit
from importer.records import INTERRUPTED_IN_FLIGHT, KEY_REFUSED, Change, SendResult, Status
from importer.retry import RetryPolicy, is_retryable_status, parse_retry_after

DEFAULT_BASE_URL = "https://api.givebutter.com/v1"
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT = 30.0


# Answers after which an earlier POST may have been carried out after all.
_UNKNOWN_EFFECT_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True, kw_only=True, slots=True)
class SenderSettings:
    """How the sender talks to the API."""

    base_url: str = DEFAULT_BASE_URL
    """Where the API is; https, or plain http only to a loopback host (the sandbox)."""

    rate: float = DEFAULT_RATE_PER_SECOND
    """Requests per second, spaced evenly (default 480/min, under the documented 500/min)."""

    concurrency: int = DEFAULT_CONCURRENCY
    """Requests in flight at once. The rate is the real limit; workers only hide latency.
    At 8 requests/s and ~200 ms per answer about 2 are in flight, so 8 leaves room for
    answers up to ~1 s without falling behind the rate."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Tries per request in all; overrides `retry.max_attempts`."""

    timeout: float = DEFAULT_TIMEOUT
    """Seconds to wait for one answer (connecting, sending and reading) before retrying."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """The backoff between tries (its `max_attempts` is replaced by the one above)."""

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigError("the rate must be a positive number of requests per second")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if not self.timeout > 0:
            raise ConfigError("the timeout must be a positive number of seconds")

    def replace(self, **changes: Any) -> SenderSettings:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy in force: `retry` with this `max_attempts`."""
        return dataclasses.replace(self.retry, max_attempts=self.max_attempts)


@dataclass(frozen=True, slots=True)
class SendJob:
    """One activity to create: the spreadsheet row it came from, the contact, the body."""

    row: int
    contact_id: int
    payload: ActivityPayload
    body: dict[str, Any] | None = None  # `payload.to_body()`, when the caller made it already
    change: Change = Change.CREATE
    activity_id: str | None = None  # the activity to update, or (move, delete) to delete
    old_contact_id: int | None = None  # move, delete: the contact the old activity is on
    found_id: str | None = None  # move: the new activity, already found on the server
    marked_at: datetime | None = None  # when the ledger marked it `sending` (aware), if it did


# contact id -> what the caller knows of it that a look on the server must respect
ClaimsSource = Callable[[int], Awaitable[recover.Claims]]


class _InDoubt(Exception):
    """A look before posting again could not tell whether the first POST landed."""


class RequestFailed(Exception):
    """A request ended without an answer: the last try timed out or lost its connection
    (or could not be made). `str()` is a plain reason without the key."""

    def __init__(
        self, reason: str, *, attempts: int, http_status: int | None, ambiguous: bool
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.http_status = http_status  # the last answer seen on an earlier try, if any
        self.ambiguous = ambiguous


@dataclass(slots=True)
class _Exchange:
    """What is known so far about one request and its tries."""

    attempts: int = 0
    last_status: int | None = None
    ambiguous: bool = False  # a finished try whose effect is unknown
    sending: bool = False  # a try is out now
    sent_at: float | None = None  # the limiter's grant time of the latest try

    def stopped(self, reason: str) -> SendResult:
        ambiguous = self.ambiguous or self.sending
        return SendResult(
            status=Status.FAILED,
            http_status=self.last_status,
            attempts=self.attempts,
            error=reason + (MAY_EXIST if ambiguous else ""),
            ambiguous=ambiguous,
        )


class Sender:
    """Sends requests to the API through one rate limit and one retry policy."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_key: str,
        settings: SenderSettings,
        *,
        limiter: RateLimit | None = None,
        rng: random.Random | None = None,
        on_notice: NoticeCallback | None = None,
    ) -> None:
        """`limiter` defaults to `RateLimit(settings.rate, on_notice=on_notice)`; `rng`
        (the backoff jitter) to a fresh `random.Random()`. Raises `ConfigError` for a
        refused base URL or an empty or malformed key."""
        check_base_url(settings.base_url)
        key = api_key.strip()
        if not key:
            raise ConfigError("no API key given")
        if any(ch.isspace() or not ch.isprintable() for ch in key):
            raise ConfigError("the API key contains spaces or control characters; check it")
        self._key = ApiKey(key)
        self._session = session
        self._settings = settings
        self._policy = settings.retry_policy
        self._base_url = settings.base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._limiter = limiter or RateLimit(settings.rate, on_notice=on_notice)
        self._rng = rng or random.Random()
        self._key_check: ApiResponse | None = None
        self._claims: ClaimsSource | None = None  # the caller's, during `send_all`
        self._run = RunClaims()  # this sender's own rows out, in doubt, and ids given

    def __repr__(self) -> str:
        return (
            f"Sender(base_url={shown_url(self._base_url)!r}, limiter={self._limiter!r},"
            f" concurrency={self._settings.concurrency})"
        )

    @property
    def limiter(self) -> RateLimit:
        """The rate limit every request of this sender waits for."""
        return self._limiter

    @property
    def base_url(self) -> str:
        """The base URL every request goes to (without a trailing slash)."""
        return self._base_url

    @property
    def key_check(self) -> ApiResponse | None:
        """The answer to `check_key` (a page of contacts: its `meta.total` counts them)."""
        return self._key_check

    def key_fingerprint(self, salt: bytes) -> str:
        """A keyed hash of the API key (HMAC-SHA256 under `salt`): tells whether a file was
        made with the same key without keeping the key, nor a hash anyone can test guesses
        against without the salt."""
        return hmac.new(salt, self._key.reveal().encode(), hashlib.sha256).hexdigest()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        recheck: Callable[[], Awaitable[ApiResponse | None]] | None = None,
    ) -> ApiResponse:
        """Send `method` to base URL + `path` (which starts with `/`), with retries.

        Gives the final answer, whatever its status (a 4xx, or a retryable status once the
        tries are used up). Raises `AuthError` on a 401, `RequestFailed` if none came.
        `recheck`, if given, is asked before trying again after a try whose effect is
        unknown: an answer from it stands for the request's (it did land), None tries again."""
        return await self._request(method, path, json, params, _Exchange(), recheck=recheck)

    async def create_activity(
        self, contact_id: int, payload: ActivityPayload, *, marked_at: datetime | None = None
    ) -> SendResult:
        """POST one activity; give CREATED with its id, or FAILED with the reason.
        Raises only `AuthError` (on a 401)."""
        return await self._send_job(SendJob(0, contact_id, payload, marked_at=marked_at))

    async def search_activity(
        self, sought: recover.Sought, known: recover.Claims | None = None
    ) -> recover.Search:
        """Look on the server for the activity `sought` may have created: Found, Absent or
        Unknown (see `importer.recover`), respecting `known` (the caller's claims: the
        ledger's) and this sender's own (rows out, rows in doubt, ids given this run).
        A row this run had left in doubt and that is now Found or Absent is settled."""
        claims = self._run.claims(sought, known)
        found = await recover.search(self._get_json, sought, claims)
        if not isinstance(found, recover.Unknown):
            self._run.settled(sought)
            if isinstance(found, recover.Found):
                self._run.give(sought.contact_id, found.activity_id)
        return found

    async def _recheck(self, sought: recover.Sought, ticket: int) -> recover.Search:
        known = await self._claims(sought.contact_id) if self._claims is not None else None
        claims = self._run.claims(sought, known, ticket)
        return await recover.search(self._get_json, sought, claims)

    async def _get_json(self, path: str, params: dict[str, str]) -> Any:
        """The JSON body of a 2xx answer to a GET (None if not JSON); `LookupFailed` for
        any other answer, or none."""
        try:
            answer = await self.request("GET", path, params=params)
        except RequestFailed as failure:
            raise recover.LookupFailed(failure.reason) from None
        if not answer.ok:
            raise recover.LookupFailed(f"the API answered {status_words(answer.status)}")
        return answer.json_body

    async def check_key(self) -> None:
        """Ask `GET /contacts?per_page=1` (with the usual retries) before anything is sent.

        Raises `AuthError` if the key is refused, `ConfigError` if the answer is a
        redirect or a 404 (the base URL is wrong), `ImporterError` if no answer comes.
        Any other answer lets the run go on: the rows will tell.
        """
        try:
            answer = await self.request("GET", "/contacts", params={"per_page": "1"})
        except RequestFailed as failure:
            raise ImporterError(
                f"cannot reach the API at {shown_url(self._base_url)}: {failure.reason}"
            ) from None
        if 300 <= answer.status < 400 or answer.status == 404:
            raise ConfigError(
                f"the API at {shown_url(self._base_url)} answered {status_words(answer.status)}"
                " to GET /contacts: is the base URL right?"
            )
        self._key_check = answer

    async def send_all(
        self,
        jobs: AsyncIterable[SendJob],
        on_result: Callable[[SendJob, SendResult], None],
        *,
        claims: ClaimsSource | None = None,
    ) -> None:
        """Create every job's activity with `concurrency` workers; tell `on_result` once
        per job taken from `jobs`, in the order results come. `claims(contact_id)` is
        what the caller knows that a look before posting again must respect (the ledger's
        created ids, rows in doubt since earlier runs). It must hold the activity id of
        every result `on_result` was told, from the moment it was told: while it is given,
        this sender keeps none of those ids itself.

        Workers take a job only when free, so no more than `concurrency` are taken and
        unfinished at a time. When cancelled, no new job is taken, each unfinished one is
        told FAILED "interrupted" (ambiguous if its request may have gone out), and the
        `CancelledError` propagates. On a 401, the same happens with
        "not sent: the API refused the key", then `AuthError` is raised.
        """
        run = _Run(aiter(jobs))
        self._claims = claims
        self._run.ids_kept_by_caller = claims is not None
        workers = [
            asyncio.create_task(self._work(run, on_result), name=f"send-worker-{number}")
            for number in range(self._settings.concurrency)
        ]
        try:
            await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            run.stopped = True
            for worker in workers:
                worker.cancel()
            await asyncio.wait(workers)
            self._claims = None
            self._run.ids_kept_by_caller = False
        _raise_first_error(workers)

    async def _work(self, run: _Run, on_result: Callable[[SendJob, SendResult], None]) -> None:
        while (job := await run.take()) is not None:
            exchange = _Exchange()
            try:
                if job.change is Change.CREATE:
                    result = await self._send_job(job, exchange)
                else:
                    from importer.changes import perform_change  # it builds on this module

                    exchange.sending = True  # a change stopped midway may have been made
                    result = await perform_change(self, job)
            except asyncio.CancelledError:
                on_result(job, exchange.stopped(run.stop_reason))
                raise
            except AuthError:
                run.stopped, run.stop_reason = True, KEY_REFUSED
                on_result(job, exchange.stopped(KEY_REFUSED))
                raise
            on_result(job, result)

    async def _send_job(self, job: SendJob, exchange: _Exchange | None = None) -> SendResult:
        """Create one job's activity, keeping this run's claims: the row is out while it is
        sent, then holds its activity id, or is left in doubt."""
        exchange = exchange or _Exchange()
        # Nothing this job posts can be older than now; the ledger's mark is older still.
        since = max(datetime.now(UTC), job.marked_at or datetime.min.replace(tzinfo=UTC))
        sought = recover.Sought(job.contact_id, job.payload, since, job.row)
        ticket = self._run.start(sought)
        result: SendResult | None = None
        try:
            result = await self._create(sought, ticket, exchange, job.body)
        finally:
            if result is None:  # cancelled, or a 401: a try may be out
                doubt = exchange.ambiguous or exchange.sending
                self._run.end(ticket, activity_id=None, in_doubt=doubt)
            else:
                created = result.status is Status.CREATED
                self._run.end(
                    ticket,
                    activity_id=result.activity_id if created else None,
                    in_doubt=not created and result.ambiguous,
                )
        return result

    async def _create(
        self,
        sought: recover.Sought,
        ticket: int,
        exchange: _Exchange,
        body: dict[str, Any] | None = None,
    ) -> SendResult:
        path = f"/contacts/{int(sought.contact_id)}/activities"

        async def recheck() -> ApiResponse | None:
            # Before posting again after a try whose effect is unknown, look for it: only
            # "absent" posts again.
            found = await self._recheck(sought, ticket)
            if isinstance(found, recover.Unknown):
                raise _InDoubt(found.reason)
            if isinstance(found, recover.Absent):
                return None
            return ApiResponse(200, {"id": found.activity_id}, {}, attempts=exchange.attempts)

        try:
            if body is None:
                body = sought.payload.to_body()
            answer = await self._request("POST", path, body, None, exchange, recheck=recheck)
        except RequestFailed as failure:
            return SendResult(
                status=Status.FAILED,
                http_status=failure.http_status,
                attempts=failure.attempts,
                error=failure.reason + (MAY_EXIST if failure.ambiguous else ""),
                ambiguous=failure.ambiguous,
            )
        except _InDoubt as doubt:
            why = f"could not check whether the activity was created ({doubt})"
            return SendResult(
                status=Status.FAILED,
                http_status=exchange.last_status,
                attempts=exchange.attempts,
                error=self._key.scrub(in_doubt(why)),
                ambiguous=True,
            )
        return send_result(answer, self._key.scrub)

    async def _request(
        self,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, str] | None,
        exchange: _Exchange,
        *,
        recheck: Callable[[], Awaitable[ApiResponse | None]] | None = None,
    ) -> ApiResponse:
        url = self._base_url + path
        while True:
            if recheck is not None and exchange.ambiguous and exchange.attempts:
                found = await recheck()
                if found is not None:
                    found.attempts = exchange.attempts
                    return found
            exchange.sent_at = await self._limiter.acquire()
            exchange.attempts += 1
            exchange.sending = True
            try:
                answer = await self._attempt(method, url, body, params)
            except (TimeoutError, aiohttp.ClientError) as error:
                exchange.sending = False
                await self._after_error(error, exchange)
                continue
            exchange.sending = False
            if not await self._after_answer(answer, exchange):
                answer.attempts, answer.ambiguous = exchange.attempts, exchange.ambiguous
                return answer

    async def _after_error(self, error: BaseException, exchange: _Exchange) -> None:
        """After a try with no answer: wait to try again, or raise `RequestFailed`."""
        reason, retryable, unknown_effect = describe_error(error, self._settings.timeout)
        exchange.ambiguous |= unknown_effect
        if not (retryable and self._policy.allows_another(exchange.attempts)):
            raise RequestFailed(
                self._key.scrub(after_attempts(reason, exchange.attempts)),
                attempts=exchange.attempts,
                http_status=exchange.last_status,
                ambiguous=exchange.ambiguous,
            ) from None
        await self._limiter.wait(self._policy.backoff(exchange.attempts, self._rng))

    async def _after_answer(self, answer: ApiResponse, exchange: _Exchange) -> bool:
        """After an answer: True once ready to try again, False if the answer is final.
        Raises `AuthError` on a 401."""
        exchange.last_status = answer.status
        exchange.ambiguous |= answer.status in _UNKNOWN_EFFECT_STATUSES
        self._limiter.observe_response(answer.status, answer.headers, exchange.sent_at)
        if answer.status == 401:
            raise AuthError(self._refused(answer))
        if not is_retryable_status(answer.status):
            return False
        delay = self._retry_delay(answer, exchange.attempts)
        if answer.status == 429:
            # Everyone waits, even if this request is not tried again: the limit is the
            # key's, not this worker's. This worker waits in its next acquire().
            self._limiter.pause_for(delay, "the API answered 429 Too Many Requests")
        if not self._policy.allows_another(exchange.attempts):
            return False
        if answer.status != 429:
            await self._limiter.wait(delay)
        return True

    async def _attempt(
        self, method: str, url: str, body: Any, params: Mapping[str, str] | None
    ) -> ApiResponse:
        headers = {
            "Authorization": f"Bearer {self._key.reveal()}",
            "Accept": "application/json",
            "User-Agent": f"givebutter-import/{__version__}",
        }
        async with self._session.request(
            method,
            url,
            json=body,
            params=params,
            headers=headers,
            allow_redirects=False,
            raise_for_status=False,  # whatever the session's default: statuses are read here
            timeout=self._timeout,
        ) as response:
            raw = await response.read()
            text = raw.decode("utf-8", errors="replace")
            return ApiResponse(
                status=response.status,
                json_body=parse_json(text),
                headers=response.headers,  # a read-only multidict of its own, kept after release
                text=text,
                scrub=self._key.scrub,
            )

    def _retry_delay(self, answer: ApiResponse, attempts: int) -> float:
        """max(Retry-After, backoff): the wait before another try after `answer`."""
        retry_after = parse_retry_after(
            answer.headers.get("Retry-After"), time.time(), cap=self._policy.max_retry_after
        )
        return self._policy.delay(attempts, self._rng, retry_after)

    def _refused(self, answer: ApiResponse) -> str:
        said = answer.message()
        detail = f" ({said})" if said else ""
        return f"the API refused the key: 401 Unauthorized{detail}; check that it is right"


@contextlib.asynccontextmanager
async def api_session(
    settings: SenderSettings,
    api_key: str,
    *,
    on_notice: NoticeCallback | None = None,
    session: aiohttp.ClientSession | None = None,
) -> AsyncIterator[Sender]:
    """A sender for one run, the key checked (`check_key`) before anything else.

    Without `session`, one is built for the run (its connection pool sized to the
    concurrency) and closed at the end; a given session is used as it is and left open, so
    that an application or a test can supply its own (an aioresponses-patched one, say)."""
    check_base_url(settings.base_url)
    if not api_key:
        raise ConfigError("no API key was given")
    async with contextlib.AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=settings.timeout),
                    connector=aiohttp.TCPConnector(limit=settings.concurrency),
                )
            )
        sender = Sender(session, api_key, settings, on_notice=on_notice)
        await sender.check_key()
        yield sender


class _Run:
    """The jobs of one `send_all`, handed to workers one at a time."""

    def __init__(self, jobs: AsyncIterator[SendJob]) -> None:
        self._jobs = jobs
        self._lock = asyncio.Lock()
        self.stopped = False
        self.stop_reason = INTERRUPTED_IN_FLIGHT

    async def take(self) -> SendJob | None:
        """The next job, or None when there are no more or the run is stopping."""
        async with self._lock:
            if self.stopped:
                return None
            return await anext(self._jobs, None)


def _raise_first_error(workers: list[asyncio.Task[None]]) -> None:
    """Raise what stopped the workers: an AuthError first, else the first error."""
    finished = [w.exception() for w in workers if w.done() and not w.cancelled()]
    errors = [error for error in finished if error is not None]
    for error in errors:
        if isinstance(error, AuthError):
            raise error
    if errors:
        raise errors[0]

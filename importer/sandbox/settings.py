"""How a sandbox is set up, and how the `givebutter-import sandbox` flags spell it.

`SandboxSettings` is everything a sandbox needs to start: the key it accepts, how many
contacts to seed, where it keeps its data, its rate limit and its misbehaviour (`Faults`).
`add_sandbox_arguments(parser)` adds the matching flags to an argparse parser and
`sandbox_settings_from_args(args)` reads them back, so the CLI stays a thin shell.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from importer.errors import ConfigError
from importer.sandbox.faults import Faults
from importer.sandbox.seed import DEFAULT_CONTACT_COUNT
from importer.sandbox.windows import RateWindow, parse_window

SANDBOX_API_KEY = "sandbox-key"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# The current reference page: 500 requests per minute.
DEFAULT_LIMITS: tuple[RateWindow, ...] = (RateWindow(limit=500, seconds=60.0),)


@dataclass(frozen=True, kw_only=True)
class SandboxSettings:
    """How one sandbox behaves. The default is well-behaved, in memory, with 1,000 contacts
    and the real API's documented limit of 500 requests per minute."""

    api_key: str = SANDBOX_API_KEY
    """The one key accepted as `Authorization: Bearer <key>`; anything else is 401."""

    contacts: int = DEFAULT_CONTACT_COUNT
    """How many seeded contacts an empty store gets (ids from 10001)."""

    db_path: Path | None = None
    """SQLite file to keep contacts and activities in across restarts; None: in memory."""

    limits: tuple[RateWindow, ...] = DEFAULT_LIMITS
    """Sliding windows, all enforced at once; a request when any is full is answered 429.
    Empty: no rate limit."""

    count_refused: bool = True
    """Count refused (429) requests in the windows too, as an API that counts every request
    it sees; False counts only admitted ones (Laravel's throttle). Counting them starves a
    client that does not wait out `Retry-After`."""

    rate_limit_headers: bool = False
    """Send `X-RateLimit-Limit/-Remaining/-Reset` on every API answer (the tightest window;
    Reset is a Unix time in seconds)."""

    faults: Faults = field(default_factory=Faults)
    """How often it misbehaves (nothing by default)."""

    put_allowed: bool = True
    """Serve `PUT /v1/contacts/{contact}/activities/{activity}`; False: that route does not
    exist and PUT answers 405 (an API whose updates a client must do without)."""

    echo_fields: bool = False
    """Echo `subject`, `note` and `timezone` in activity answers (and put them in `data`),
    beyond what the reference documents. False: answer exactly the documented fields, as a
    client must expect; True: the lenient shape some tests compare against."""

    def __post_init__(self) -> None:
        if self.contacts < 0:
            raise ValueError("contacts must not be negative")
        if not self.api_key:
            raise ValueError("api_key must not be empty")


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `sandbox` command's flags (each maps to one settings field)."""
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"loopback address to listen on (default {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on, 0 for any free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="keep contacts and activities in this SQLite file (default: memory)",
    )
    parser.add_argument(
        "--contacts",
        type=_count,
        default=DEFAULT_CONTACT_COUNT,
        metavar="N",
        help=f"seeded contacts in a new store (default {DEFAULT_CONTACT_COUNT})",
    )
    parser.add_argument(
        "--limit",
        action="append",
        metavar="N/DURATION",
        type=_window,
        help="a sliding-window rate limit, e.g. 8/1s; repeat for several; "
        "'none' for no limit (default 500/60s)",
    )
    parser.add_argument(
        "--no-count-refused",
        dest="count_refused",
        action="store_false",
        help="count only admitted requests in the windows, not refused ones",
    )
    parser.add_argument(
        "--rate-limit-headers",
        action="store_true",
        help="send X-RateLimit-Limit/-Remaining/-Reset on every answer",
    )
    parser.add_argument(
        "--error-rate",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of requests answered 500, nothing stored (0-1)",
    )
    parser.add_argument(
        "--store-then-fail-rate",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of activity writes (POST, PUT, DELETE) done and then answered 500 (0-1)",
    )
    parser.add_argument(
        "--drop-rate",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of requests whose connection is closed unanswered (0-1)",
    )
    parser.add_argument(
        "--latency", type=_seconds, default=0.0, metavar="SECONDS", help="added to every request"
    )
    parser.add_argument(
        "--write-latency",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="added to every activity write (POST, PUT, DELETE) on top of --latency",
    )
    parser.add_argument(
        "--slow-rate",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of requests answered --slow-seconds late (0-1)",
    )
    parser.add_argument(
        "--slow-seconds",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how late a slow answer is (default 60)",
    )
    parser.add_argument(
        "--no-put",
        dest="put_allowed",
        action="store_false",
        help="answer PUT of an activity 405, as an API without updates would",
    )
    parser.add_argument(
        "--post-error-rate",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of activity creations answered 500, nothing stored, reads unharmed (0-1)",
    )
    parser.add_argument(
        "--read-error-rate",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of activity list pages (GET .../activities) answered 500 (0-1)",
    )
    parser.add_argument(
        "--read-throttle-rate",
        type=_share,
        default=0.0,
        metavar="SHARE",
        help="share of activity list pages answered 429 with Retry-After: 1 (0-1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the fault dice (default 0)")
    parser.add_argument(
        "--echo-fields",
        action="store_true",
        help="echo subject, note and timezone in activity answers (not documented by the API)",
    )


def sandbox_settings_from_args(args: argparse.Namespace) -> SandboxSettings:
    """The settings the `sandbox` command's flags describe."""
    limits = DEFAULT_LIMITS if args.limit is None else tuple(w for w in args.limit if w)
    try:
        return SandboxSettings(
            contacts=args.contacts,
            db_path=Path(args.db) if args.db else None,
            limits=limits,
            count_refused=args.count_refused,
            rate_limit_headers=args.rate_limit_headers,
            put_allowed=args.put_allowed,
            echo_fields=args.echo_fields,
            faults=Faults(
                error_rate=args.error_rate,
                store_then_fail_rate=args.store_then_fail_rate,
                drop_rate=args.drop_rate,
                latency=args.latency,
                write_latency=args.write_latency,
                slow_rate=args.slow_rate,
                slow_seconds=args.slow_seconds,
                post_error_rate=args.post_error_rate,
                read_error_rate=args.read_error_rate,
                read_throttle_rate=args.read_throttle_rate,
                seed=args.seed,
            ),
        )
    except ValueError as error:
        raise ConfigError(str(error)) from error


def _window(text: str) -> RateWindow | None:
    if text.strip().lower() in {"none", "off", "0"}:
        return None
    try:
        return parse_window(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _share(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def _count(text: str) -> int:
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None

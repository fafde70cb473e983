"""The command line: parse arguments, call the library, print, exit with a meaningful code.

    givebutter-import run INPUT --mapping FILE [--dry-run] [--sandbox] ...
    givebutter-import check --mapping FILE [INPUT]
    givebutter-import init INPUT
    givebutter-import sandbox [--port N] [--db FILE] [faults...]

Exit codes: 0 every row created, valid or skipped; 1 some rows invalid or failed; 2 the
run could not start or was stopped by the API (bad arguments, unreadable file, bad
mapping, no or wrong API key); 130 interrupted (Ctrl-C; the results file is complete).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from importer import __version__
from importer.delivery import Interruption
from importer.errors import ConfigError, ImporterError
from importer.feed import FailureLimit
from importer.fit import check_fit
from importer.layout import find_layout
from importer.mapping import load_mapping
from importer.pipeline import (
    RunOptions,
    contacts_index_beside,
    default_ledger_path,
    refresh_contact_index,
    run_import,
    run_import_async,
)
from importer.progress import Progress, say
from importer.ratelimit import DEFAULT_RATE, parse_rate
from importer.read import SourceOptions, SourceTable, open_table
from importer.report import Summary, write_summary_json
from importer.selection import RowSelection, parse_rows
from importer.send import DEFAULT_BASE_URL, DEFAULT_CONCURRENCY, SenderSettings
from importer.starter import starter_mapping
from importer.sync_run import DeleteLimit
from importer.undo import failed_rows, undo_lines, undo_run

if TYPE_CHECKING:
    from importer.sandbox import Sandbox

T = TypeVar("T")
API_KEY_VARIABLE = "GIVEBUTTER_API_KEY"
BASE_URL_VARIABLE = "GIVEBUTTER_BASE_URL"
PROG = "givebutter-import"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.command(args))
    except ImporterError as error:
        say(f"{PROG}: error: {error}{_option_hint(error)}")
        return error.exit_code
    except KeyboardInterrupt:
        say(f"{PROG}: interrupted")
        return 130
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        say(f"{PROG}: unexpected error: {type(error).__name__}: {error} (rerun with --debug)")
        return 2


# -- run -----------------------------------------------------------------------------------


# The library names the setting an error turns on; the command line, its option.
_OPTION_HINTS = {
    "overwrite_results": " (use --force to replace it)",
    "ledger_path": " (--ledger names another)",
    "create_contacts": " (--create-contacts)",
    "max_delete": " with --max-delete",
    "new_ledger": " (add --new-ledger)",
}


def _option_hint(error: ImporterError) -> str:
    return _OPTION_HINTS.get(error.setting or "", "")


def _retry(args: argparse.Namespace) -> int:
    failed = failed_rows(Path(args.results_of))
    if not failed:
        say(f"{args.results_of}: no failed rows to send again")
        return 0
    say(f"sending again the {len(failed):,} rows that failed in {args.results_of}")
    args.dry_run, args.resolve, args.sandbox = False, False, False
    return _run(args, rows=RowSelection.of(failed))


def _undo(args: argparse.Namespace) -> int:
    lines = undo_lines(Path(args.results_of))
    if not lines:
        say(f"{args.results_of}: nothing that run changed is left to undo")
        return 0
    if args.dry_run:
        for line in lines:
            print(line.describe())
        say(f"{len(lines):,} changes would be taken back")
        return 0
    if not args.yes and not _confirm(f"take back {len(lines):,} changes in Givebutter?"):
        say("nothing undone")
        return 2
    settings = SenderSettings(base_url=_base_url(args), rate=parse_rate(args.rate))
    ledger = None if args.no_ledger else Path(args.ledger) if args.ledger else default_ledger_path()
    work = undo_run(Path(args.results_of), settings, _api_key(), ledger_path=ledger)
    done = asyncio.run(work)
    failed = [d for d in done if not d.done]
    for undone in failed:
        say(f"{undone.line.describe()}: not undone: {undone.reason}")
    say(f"{len(done) - len(failed):,} undone, {len(failed):,} not undone")
    return 1 if failed else 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} Add --yes to confirm when not at a terminal")
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def _contacts_refresh(args: argparse.Namespace) -> int:
    settings = SenderSettings(base_url=_base_url(args), rate=parse_rate(args.rate))
    index = contacts_index_beside(Path(args.ledger) if args.ledger else default_ledger_path())
    work = refresh_contact_index(settings, _api_key(), index, on_notice=say)
    count = asyncio.run(work)
    print(f"contact index {index}: {count:,} contacts")
    return 0


def _base_url(args: argparse.Namespace) -> str:
    return (args.base_url or os.environ.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL).rstrip("/")


def _api_key() -> str:
    key = os.environ.get(API_KEY_VARIABLE, "")
    if not key:
        raise ConfigError(
            f"no API key: set {API_KEY_VARIABLE} (or use --dry-run, or --sandbox to try it out)"
        )
    return key


def _run(args: argparse.Namespace, *, rows: RowSelection | None = None) -> int:
    try:
        return _run_checked(args, rows or _row_selection(args))
    except ImporterError as error:
        if args.summary_json:  # no stale summary from an earlier run may survive this one
            _write_failed_summary(Path(args.summary_json), args, error)
        raise


def _write_failed_summary(path: Path, args: argparse.Namespace, error: ImporterError) -> None:
    summary = Summary(dry_run=args.dry_run, error=str(error))
    summary.finish()
    with contextlib.suppress(ImporterError):
        write_summary_json(summary, path)


def _row_selection(args: argparse.Namespace) -> RowSelection:
    """`--rows` and `--limit` (only `run` has them)."""
    selection = RowSelection(ranges=getattr(args, "rows", None), limit=getattr(args, "limit", None))
    if not selection.everything and args.delete_missing:
        # Keys outside the rows taken are still in the file; a trial run is not a sync.
        raise ConfigError("--delete-missing mirrors a whole file: not with --limit or --rows")
    return selection


def _run_checked(args: argparse.Namespace, rows: RowSelection) -> int:
    mapping = load_mapping(args.mapping)
    input_path = Path(args.input)
    results = Path(args.results) if args.results else _default_results_path(input_path)
    if results.resolve() == input_path.resolve():
        raise ConfigError("the results path is the input file; choose another --results")
    sender = _sender_settings(args)
    with _sandbox_if_asked(args) as sandbox:
        sends = not args.dry_run or args.resolve
        api_key = None
        if sandbox is not None:
            sender = sender.replace(base_url=sandbox.base_url)
            api_key = sandbox.api_key
        elif sends:
            api_key = _api_key()
        with Progress(enabled=not args.quiet) as progress:
            options = RunOptions(
                input_path=input_path,
                mapping=mapping,
                results_path=results,
                dry_run=args.dry_run,
                overwrite_results=args.force,
                summary_json=Path(args.summary_json) if args.summary_json else None,
                sender=sender,
                api_key=api_key,
                # A --sandbox run sends to a new, empty, in-memory API: nothing to remember.
                keep_ledger=not args.no_ledger and (sandbox is None or bool(args.ledger)),
                ledger_path=Path(args.ledger) if args.ledger else None,
                contacts_max_age=args.contacts_max_age * 3600,
                create_contacts=args.create_contacts,
                resolve=args.resolve,
                rows=rows,
                allow_duplicates=args.allow_duplicates,
                source=args.source or Path(args.mapping).stem,
                recreate_deleted=args.recreate_deleted,
                delete_missing=args.delete_missing,
                max_delete=_limit(DeleteLimit.parse, args.max_delete, "--max-delete")
                or DeleteLimit(),
                max_failures=_limit(FailureLimit.parse, args.max_failures, "--max-failures"),
                new_ledger=args.new_ledger,
                mark_created=dict(args.mark_created),
                mark_absent=frozenset(args.mark_absent),
                on_start=lambda table: progress.start(table, rows.at_most(table.rows_hint)),
                on_progress=progress.advance,
                on_notice=progress.notice,
            )
            summary = _run_with_ctrl_c(options) if sends else run_import(options)
        say(summary.text())
        if sandbox is not None:
            say(
                f"sandbox: now holds {sandbox.store.count_activities():,} activities; it lived "
                "in memory for this run only (`givebutter-import sandbox` runs one that stays)"
            )
    return summary.exit_code()


def _run_with_ctrl_c(options: RunOptions) -> Summary:
    """A sending run where a first ctrl-c takes no more rows and lets the requests in flight
    finish, so that none is left in doubt, and a second abandons them. Where the loop cannot
    take the signal (not the main thread; Windows), ctrl-c cancels the run as Python does."""
    interruption = Interruption()
    options = dataclasses.replace(options, interruption=interruption)

    async def go() -> Summary:
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGINT)

        def first() -> None:
            loop.add_signal_handler(signal.SIGINT, interruption.abandon)
            interruption.drain()

        try:
            loop.add_signal_handler(signal.SIGINT, first)
        except (NotImplementedError, RuntimeError, ValueError):
            return await run_import_async(options)
        try:
            return await run_import_async(options)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)  # asyncio.run's own, for what follows

    return asyncio.run(go())


def _limit(parse: Callable[[str], T], text: str | None, option: str) -> T | None:
    try:
        return None if text is None else parse(text)
    except ValueError as error:
        raise ConfigError(f"{option}: {error}") from None


def _default_results_path(input_path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(f"{input_path.stem}-results-{stamp}.csv")


def _sender_settings(args: argparse.Namespace) -> SenderSettings:
    base_url = _base_url(args)
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if args.max_attempts < 1:
        raise ConfigError("--max-attempts must be at least 1")
    if args.timeout <= 0:
        raise ConfigError("--timeout must be a positive number of seconds")
    return SenderSettings(
        base_url=base_url.rstrip("/"),
        rate=parse_rate(args.rate),
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
    )


@contextlib.contextmanager
def _sandbox_if_asked(args: argparse.Namespace) -> Iterator[Sandbox | None]:
    if not getattr(args, "sandbox", False) or (args.dry_run and not args.resolve):
        yield None
        return
    from importer.sandbox import SandboxSettings, sandbox_in_thread

    with sandbox_in_thread(SandboxSettings()) as sandbox:
        say(f"sandbox: a local stand-in for the Givebutter API is answering at {sandbox.base_url}")
        yield sandbox


# -- check and init ------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.mapping)
    if args.input is None:
        print(f"{args.mapping}: the mapping is valid")
        return 0
    source = mapping.source
    table = open_table(
        Path(args.input),
        SourceOptions(
            encoding=source.encoding,
            delimiter=source.delimiter,
            sheet=source.sheet,
            header_row=source.header_row,
        ),
    )
    fit = check_fit(mapping, table)
    for warning in fit.warnings:
        say(f"{PROG}: warning: {args.mapping}: {warning}")
    print(
        f"{args.mapping}: the mapping is valid and fits {args.input} "
        f"({_describe(table)}, {fit.rows:,} rows)"
    )
    return 0


def _describe(table: SourceTable) -> str:
    if table.format == "csv":
        return f"CSV, {table.encoding}, delimiter {table.delimiter!r}, {len(table.columns)} columns"
    return f"sheet '{table.sheet}', {len(table.columns)} columns"


def _init(args: argparse.Namespace) -> int:
    if args.header_row is not None and args.header_row < 1:
        raise ConfigError("--header-row must be 1 or more")
    path = Path(args.input)
    layout = find_layout(path, sheet=args.sheet, header_row=args.header_row)
    options = SourceOptions(chunk_rows=1000, sheet=layout.sheet, header_row=layout.header_row)
    table = open_table(path, options)
    print(starter_mapping(table, layout), end="")
    say(f"{PROG} init: {args.input}: {layout.describe()}")
    return 0


# -- sandbox -------------------------------------------------------------------------------


def _sandbox(args: argparse.Namespace) -> int:
    from importer.sandbox import sandbox_settings_from_args, serve_forever

    settings = sandbox_settings_from_args(args)
    serve_forever(
        settings, host=args.host, port=args.port, on_ready=lambda url: print(url, flush=True)
    )
    return 0


# -- arguments -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Import activity history from CSV and Excel exports into Givebutter.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(metavar="COMMAND")

    run = commands.add_parser("run", help="import a file (or check it with --dry-run)")
    run.add_argument("input", metavar="INPUT", help="the CSV or Excel export")
    _add_run_arguments(run)
    run.add_argument("--dry-run", action="store_true", help="check every row; send nothing")
    run.add_argument(
        "--resolve",
        action="store_true",
        help="in a dry run, look up contacts named by email or external id (needs the key)",
    )
    run.add_argument(
        "--sandbox",
        action="store_true",
        help="send to a local stand-in for the API started for this run",
    )
    run.add_argument(
        "--limit",
        type=_row_count,
        metavar="N",
        help="take only the first N data rows (a trial run)",
    )
    run.add_argument(
        "--rows",
        type=_row_ranges,
        metavar="ROWS",
        help="take only these spreadsheet rows, e.g. 100-250 or 5,9,20-30",
    )
    run.set_defaults(command=_run)

    check = commands.add_parser("check", help="validate a mapping (against INPUT's header)")
    check.add_argument("--mapping", "-m", required=True)
    check.add_argument("input", metavar="INPUT", nargs="?")
    check.set_defaults(command=_check)

    init = commands.add_parser("init", help="print a starter mapping guessed from INPUT")
    init.add_argument("input", metavar="INPUT")
    init.add_argument(
        "--sheet", help="the workbook's sheet, by name or position from 0 (default: found)"
    )
    init.add_argument(
        "--header-row", type=int, metavar="N", help="the header's row number (default: found)"
    )
    init.set_defaults(command=_init)

    retry = commands.add_parser("retry", help="send again the rows that failed in a run")
    retry.add_argument("results_of", metavar="RESULTS", help="the earlier run's results CSV")
    retry.add_argument("input", metavar="INPUT", help="the same input file as that run")
    _add_run_arguments(retry)
    retry.set_defaults(command=_retry, dry_run=False, resolve=False, sandbox=False)

    undo = commands.add_parser("undo", help="take back what a run did in Givebutter")
    undo.add_argument("results_of", metavar="RESULTS", help="the run's results CSV")
    undo.add_argument("--yes", action="store_true", help="do not ask before deleting")
    undo.add_argument("--dry-run", action="store_true", help="list what would be taken back")
    undo.add_argument("--base-url", help="API base URL (as for run)")
    undo.add_argument("--rate", default=DEFAULT_RATE, help="requests allowed (as for run)")
    undo.add_argument("--ledger", metavar="PATH", help="the ledger to update (as for run)")
    undo.add_argument("--no-ledger", action="store_true", help="leave the ledger alone")
    undo.set_defaults(command=_undo)

    contacts = commands.add_parser("contacts", help="the local index of contacts")
    contacts_commands = contacts.add_subparsers(metavar="ACTION", required=True)
    refresh = contacts_commands.add_parser("refresh", help="scan every contact into the index now")
    refresh.add_argument("--base-url", help="API base URL (as for run)")
    refresh.add_argument("--rate", default=DEFAULT_RATE, help="requests allowed (as for run)")
    refresh.add_argument("--ledger", metavar="PATH", help="the index lives beside this ledger")
    refresh.set_defaults(command=_contacts_refresh, no_ledger=False)

    sandbox = commands.add_parser("sandbox", help="run the local stand-in for the API")
    from importer.sandbox import add_sandbox_arguments

    add_sandbox_arguments(sandbox)
    sandbox.set_defaults(command=_sandbox)
    return parser


def _row_count(text: str) -> int:
    if not text.strip().isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of rows (1 or more)")
    return int(text)


def _row_ranges(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return parse_rows(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _row_number(text: str) -> int:
    if not text.strip().isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a row number")
    return int(text)


def _row_and_id(text: str) -> tuple[int, str]:
    row, sep, activity_id = text.partition("=")
    if not sep or not activity_id.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not ROW=ID (e.g. 12=ab34cd)")
    return _row_number(row), activity_id.strip()


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `run` and `retry` share: where and how to send, the ledger, output."""
    parser.add_argument("--mapping", "-m", required=True, help="the mapping YAML")
    parser.add_argument("--results", help="results CSV (default: INPUT-results-TIME.csv here)")
    parser.add_argument("--force", action="store_true", help="replace an existing results file")
    parser.add_argument("--summary-json", metavar="PATH", help="also write the summary as JSON")
    parser.add_argument(
        "--base-url", help=f"API base URL (default ${BASE_URL_VARIABLE} or {DEFAULT_BASE_URL})"
    )
    parser.add_argument(
        "--rate",
        default=DEFAULT_RATE,
        help=f"requests allowed, as N/s, N/min or N/h (default {DEFAULT_RATE})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=5,
        help="tries per row for retryable failures (default 5)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for one answer (default 30)"
    )
    parser.add_argument(
        "--ledger",
        metavar="PATH",
        help="the record of what was sent, so re-runs never send a row twice "
        "(default ~/.local/share/givebutter-import/ledger.sqlite)",
    )
    parser.add_argument(
        "--no-ledger", action="store_true", help="keep no record (unsafe to re-run)"
    )
    parser.add_argument(
        "--new-ledger",
        action="store_true",
        help="the ledger file is empty on purpose: start a new ledger in it "
        "(without this, an empty ledger stops the run)",
    )
    parser.add_argument(
        "--mark-created",
        action="append",
        default=[],
        type=_row_and_id,
        metavar="ROW=ID",
        help="settle a row in doubt by hand: it exists in Givebutter as activity ID (repeatable)",
    )
    parser.add_argument(
        "--mark-absent",
        action="append",
        default=[],
        type=_row_number,
        metavar="ROW",
        help="settle a row in doubt by hand: it is not in Givebutter, send it (repeatable)",
    )
    parser.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="identical rows in one file are separate activities (default: sent once)",
    )
    sync = parser.add_argument_group("sync (with key: in the mapping)")
    sync.add_argument(
        "--source",
        metavar="NAME",
        help="the stream of files the keys belong to (default: the mapping file's name)",
    )
    sync.add_argument(
        "--delete-missing",
        action="store_true",
        help="delete the activities of keys this source had that the input no longer has",
    )
    sync.add_argument(
        "--max-delete",
        metavar="N|P%",
        default="10%",
        help="refuse to start if more would be deleted (default 10%% of the known keys)",
    )
    sync.add_argument(
        "--recreate-deleted",
        action="store_true",
        help="a row whose activity was deleted in Givebutter is created again",
    )
    parser.add_argument(
        "--max-failures",
        metavar="N|P%",
        help="take no more rows once this many (or this share of those sent) have failed",
    )
    parser.add_argument(
        "--contacts-max-age",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="use the contact index's answers while younger than this (default 24)",
    )
    parser.add_argument(
        "--create-contacts",
        action="store_true",
        help="create the contacts no one has the email of, as the mapping's contact: create: says",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

"""The cases of the suite (issue 7's table), each measured beside its reference.

Every case function takes the `Sizes` of the run and gives its rows of the table.

- Reading cases run the importer and the reference each in a fresh process (`bench.child`),
  on files already in the page cache.
- Sending cases give every measurement a fresh sandbox process with the same flags (so each
  starts from the same empty store) and read the rate off the arrival times it recorded
  (`bench.rates`); the importer's first request, its key check, is left out.
- Where a figure and its reference are cheap, they are measured alternately up to
  `Sizes.repeats` times (while the case's time budget lasts) and the best of each is kept:
  noise on a shared machine only ever makes things slower.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from bench import data
from bench.processes import (
    ChildReport,
    ImporterRun,
    fresh_dir,
    home_env,
    importer_help,
    run_child,
    run_importer,
)
from bench.rates import closed_loop_rate, spaced_rate
from bench.sandbox import SandboxProcess, SandboxStats, sandbox_process
from bench.table import Result
from importer.read import SourceOptions
from importer.sandbox.app import ACTIVITIES_ROUTE, ACTIVITY_ROUTE, CONTACTS_ROUTE
from importer.send import DEFAULT_CONCURRENCY

CHUNK_ROWS = SourceOptions().chunk_rows  # what the importer reads at a time
UNLIMITED_RATE = "100000/s"  # high enough that the importer's own limiter never waits
NO_LIMIT = ("--limit", "none")

A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each case is. `FULL` is issue 7's table; `QUICK` a smaller run."""

    csv_rows: int = 1_000_000
    csv_small_rows: int = 100_000  # at least two chunks, so both runs hold a full chunk
    xlsx_rows: int = 100_000
    send_rows: int = 20_000
    latency_rows: int = 1_000
    latency_concurrency: int = 20
    latency: float = 0.2
    limited_rate: int = 20  # R, requests per second
    limited_seconds: float = 65.0  # long enough to fill the 60 s window
    ledger_rows: int = 20_000
    email_rows: int = 10_000  # a by-email import: rows...
    email_people: int = 2_000  # ...over this many people...
    email_contacts: int = 10_000  # ...among this many contacts in the account
    memory_rows: int = 200_000  # a sending run's peak RSS at this many rows ...
    memory_small_rows: int = 20_000  # ... against this many
    sync_rows: int = 200_000  # a keyed nightly file re-run ...
    sync_changed: int = 2_000  # ... after this many of its records were edited
    repeats: int = 3  # alternating measurements of a figure and its reference, at most
    budget: float = 45.0  # seconds after which a case starts no further repeat


FULL = Sizes()
QUICK = replace(
    FULL,
    csv_rows=300_000,
    xlsx_rows=20_000,
    send_rows=5_000,
    latency_rows=400,
    limited_seconds=15.0,
    ledger_rows=5_000,
    memory_rows=50_000,
    memory_small_rows=5_000,
    sync_rows=20_000,
    sync_changed=200,
    repeats=2,
    budget=8.0,
)


@dataclass(frozen=True)
class Sent:
    """One measured send: the importer's run (None for the reference) and the arrivals."""

    run: ImporterRun | None
    times: list[float]
    stats: SandboxStats
    statuses: Counter[int]


# -- reading -------------------------------------------------------------------------------


def dry_run_csv(sizes: Sizes) -> list[Result]:
    """Cases 1 and 2: a dry run of a long CSV, its wall time and its peak memory."""
    big, small = data.dry_run_csv(sizes.csv_rows), data.dry_run_csv(sizes.csv_small_rows)
    mapping, out = data.mapping_path("csv"), fresh_dir("dry-run-csv")
    _warm(big, small)
    references, dry_runs = _alternate(
        lambda: run_child("read-csv", big, CHUNK_ROWS),
        lambda: run_child("dry-run", big, mapping, out / "big-results.csv"),
        sizes,
    )
    dry_small = run_child("dry-run", small, mapping, out / "small-results.csv")
    shutil.rmtree(out)
    reference, dry = _fastest(references), _fastest(dry_runs)
    peak = min(d.peak_rss_mb for d in dry_runs)
    return [
        Result(
            case=f"dry run, {sizes.csv_rows:,} rows × 6 columns CSV",
            figure=f"{dry.seconds:.2f} s",
            reference=f"{reference.seconds:.2f} s: bare `read_csv(dtype=str, "
            f"chunksize={CHUNK_ROWS:,})`",
            ratio=dry.seconds / reference.seconds,
            goal="≤ 1.5×",
            passed=dry.seconds <= 1.5 * reference.seconds,
            note=f"{sizes.csv_rows / dry.seconds:,.0f} rows/s; {_tries(dry_runs)}",
        ),
        Result(
            case="dry run, same file: peak RSS",
            figure=f"{peak:.0f} MB",
            reference=f"{dry_small.peak_rss_mb:.0f} MB: the same dry run on "
            f"{sizes.csv_small_rows:,} rows",
            ratio=peak / dry_small.peak_rss_mb,
            goal="≤ 1.2× and ≤ 300 MB",
            passed=peak <= 1.2 * dry_small.peak_rss_mb and peak <= 300,
            note=f"bare read_csv pass: {reference.peak_rss_mb:.0f} MB",
        ),
    ]


def dry_run_xlsx(sizes: Sizes) -> list[Result]:
    """Case 3: a dry run of a workbook against pandas reading it with calamine."""
    book, mapping, out = data.xlsx(sizes.xlsx_rows), data.mapping_path("xlsx"), fresh_dir("xlsx")
    _warm(book)
    references, dry_runs = _alternate(
        lambda: run_child("read-excel", book),
        lambda: run_child("dry-run", book, mapping, out / "results.csv"),
        sizes,
    )
    shutil.rmtree(out)
    reference, dry = _fastest(references), _fastest(dry_runs)
    return [
        Result(
            case=f"dry run, {sizes.xlsx_rows:,}-row .xlsx",
            figure=f"{dry.seconds:.2f} s",
            reference=f'{reference.seconds:.2f} s: `read_excel(engine="calamine", dtype=str)`',
            ratio=dry.seconds / reference.seconds,
            goal="≤ 1.5×",
            passed=dry.seconds <= 1.5 * reference.seconds,
            note=f"{sizes.xlsx_rows / dry.seconds:,.0f} rows/s; {_tries(dry_runs)}",
        )
    ]


def _warm(*paths: Path) -> None:
    """Read files once so that every measurement finds them in the page cache."""
    for path in paths:
        with path.open("rb") as file:
            while file.read(1 << 24):
                pass


def _fastest(reports: list[ChildReport]) -> ChildReport:
    return min(reports, key=lambda report: report.seconds)


def _tries(reports: list[ChildReport]) -> str:
    return f"best of {len(reports)}" if len(reports) > 1 else "one run"


# -- sending -------------------------------------------------------------------------------


def send_unlimited(sizes: Sizes) -> list[Result]:
    """Case 4: the importer against a bare aiohttp loop, to a sandbox with no limit."""
    path, mapping = data.send_csv(sizes.send_rows), data.mapping_path("csv")
    concurrency = DEFAULT_CONCURRENCY
    flags = ["--rate", UNLIMITED_RATE, "--concurrency", str(concurrency)]
    references, runs = _alternate(
        lambda: _send_bare(NO_LIMIT, path, mapping, concurrency, sizes.send_rows),
        lambda: _send_importer(NO_LIMIT, path, mapping, flags, "send"),
        sizes,
    )
    rate = max(closed_loop_rate(s.times, concurrency) for s in runs)
    reference = max(closed_loop_rate(s.times, concurrency) for s in references)
    problems = _problems(runs, sizes.send_rows) + _problems(references, sizes.send_rows)
    end_to_end = max(sizes.send_rows / _run(s).wall_seconds for s in runs)
    return [
        Result(
            case=f"send to sandbox, no limit, no latency, {sizes.send_rows:,} rows",
            figure=f"{rate:,.0f} req/s",
            reference=f"{reference:,.0f} req/s: bare aiohttp loop, concurrency {concurrency}",
            ratio=rate / reference,
            goal="≥ 0.9×",
            passed=rate >= 0.9 * reference and not problems,
            note=_joined(
                problems,
                f"importer with its defaults (ledger on); best of {len(runs)}; "
                f"end to end (process start to exit) {end_to_end:,.0f} rows/s",
            ),
        )
    ]


def send_with_latency(sizes: Sizes) -> list[Result]:
    """Case 5: with 200 ms latency, the importer should keep every worker busy."""
    path, mapping = data.send_csv(sizes.latency_rows), data.mapping_path("csv")
    concurrency, latency = sizes.latency_concurrency, sizes.latency
    flags = ["--rate", UNLIMITED_RATE, "--concurrency", str(concurrency)]
    sandbox_flags = [*NO_LIMIT, "--latency", str(latency)]
    sent = _send_importer(sandbox_flags, path, mapping, flags, "latency")
    rate, reference = closed_loop_rate(sent.times, concurrency), concurrency / latency
    problems = _problems([sent], sizes.latency_rows)
    return [
        Result(
            case=f"send with {latency * 1000:.0f} ms latency, no limit, "
            f"{sizes.latency_rows:,} rows",
            figure=f"{rate:,.1f} req/s",
            reference=f"{reference:,.1f} req/s: concurrency {concurrency} ÷ {latency:g} s",
            ratio=rate / reference,
            goal="≥ 0.9×",
            passed=rate >= 0.9 * reference and not problems,
            note=_joined(problems, ""),
        )
    ]


def send_limited(sizes: Sizes) -> list[Result]:
    """Case 6: the sandbox limits to R per 1 s and per 60 s; the importer runs at R."""
    r = sizes.limited_rate
    rows = round(r * sizes.limited_seconds)
    path, mapping = data.send_csv(rows), data.mapping_path("csv")
    limits = ["--limit", f"{r}/1s", "--limit", f"{r * 60}/60s"]
    sent = _send_importer(limits, path, mapping, ["--rate", f"{r}/s"], "limit")
    rate, throttled = spaced_rate(sent.times), sent.stats.throttled
    busiest = ", ".join(f"{w['max_admitted']} in {w['seconds']:g} s" for w in sent.stats.windows)
    problems = _problems([sent], rows)
    return [
        Result(
            case=f"send, sandbox limit {r}/1 s and {r * 60}/60 s, `--rate {r}/s`, {rows:,} rows",
            figure=f"{rate:.2f} req/s, {throttled} × 429",
            reference=f"R = {r} req/s",
            ratio=rate / r,
            goal="≥ 0.98 R, zero 429s",
            passed=rate >= 0.98 * r and throttled == 0 and not problems,
            note=_joined(problems, f"busiest windows: {busiest}"),
        )
    ]


def send_ledger(sizes: Sizes) -> list[Result]:
    """Case 7: sending with the ledger on, against the same run with `--no-ledger`."""
    case, goal = f"send with the ledger on vs off, {sizes.ledger_rows:,} rows", "≥ 0.95×"
    if "--no-ledger" not in importer_help():
        figure = "n/a (no ledger yet)"
        return [Result(case=case, figure=figure, reference="", ratio=None, goal=goal, passed=None)]
    path, mapping = data.send_csv(sizes.ledger_rows), data.mapping_path("csv")
    flags = ["--rate", UNLIMITED_RATE]
    offs, ons = _alternate(
        lambda: _send_importer(NO_LIMIT, path, mapping, [*flags, "--no-ledger"], "ledger-off"),
        lambda: _send_importer(NO_LIMIT, path, mapping, flags, "ledger-on"),
        sizes,
    )
    rate = max(closed_loop_rate(s.times, DEFAULT_CONCURRENCY) for s in ons)
    reference = max(closed_loop_rate(s.times, DEFAULT_CONCURRENCY) for s in offs)
    problems = _problems(ons, sizes.ledger_rows) + _problems(offs, sizes.ledger_rows)
    if not all(_ledger_files(_run(s)) for s in ons):
        problems.append("no ledger file appeared in the run's folder")
    on_wall = min(_run(s).wall_seconds for s in ons)
    off_wall = min(_run(s).wall_seconds for s in offs)
    return [
        Result(
            case=case,
            figure=f"{rate:,.0f} req/s",
            reference=f"{reference:,.0f} req/s: the same run with `--no-ledger`",
            ratio=rate / reference,
            goal=goal,
            passed=rate >= 0.95 * reference and not problems,
            note=_joined(
                problems,
                f"best of {len(ons)}; end to end {on_wall:.1f} s vs {off_wall:.1f} s "
                f"({off_wall / on_wall:.2f}×)",
            ),
        )
    ]


def contacts_by_email(sizes: Sizes) -> list[Result]:
    """Case 8: requests per imported row of a file that knows people only by email, and the
    contact reads of the same command run again."""
    rows, people, contacts = sizes.email_rows, sizes.email_people, sizes.email_contacts
    workdir = fresh_dir("contacts")
    path = Path(shutil.copy(data.by_email_csv(rows, people), workdir / "by-email.csv"))
    flags = ["--rate", UNLIMITED_RATE, "--ledger", str(workdir / "state" / "ledger.sqlite")]
    with sandbox_process([*NO_LIMIT, "--contacts", str(contacts)]) as sandbox:
        first = _importer_run(sandbox, path, data.by_email_mapping(), flags, workdir)
        after_first = sandbox.stats()
        again = _importer_run(sandbox, path, data.by_email_mapping(), flags, workdir)
        after_again = sandbox.stats()
    created = first.counts.get("created", 0)
    reads = after_first.count("GET", CONTACTS_ROUTE)
    rerun_reads = after_again.count("GET", CONTACTS_ROUTE) - reads
    per_row = after_first.requests / max(1, created)
    reference = (1 + people + rows) / rows  # the key check, a lookup per person, the POSTs
    problems = []
    if created != rows:
        problems.append(f"{created:,} of {rows:,} created (exit {first.exit_code})")
    if again.counts.get("skipped", 0) != rows:
        problems.append(f"re-run: {again.counts} (exit {again.exit_code})")
    pages = -(-contacts // 100)
    posts = after_first.count("POST", ACTIVITIES_ROUTE)
    rerun_posts = after_again.count("POST", ACTIVITIES_ROUTE) - posts
    return [
        Result(
            case=f"by-email import, {rows:,} rows over {people:,} people, {contacts:,} contacts",
            figure=f"{per_row:.4f} requests/row",
            reference=f"{reference:.4f} (computed): a lookup per person, as before issue 13",
            ratio=per_row / reference,
            goal="≤ 1.02 requests/row",
            passed=per_row <= 1.02 and not problems,
            note=_joined(
                problems,
                f"{reads:,} contact reads (the key check + {pages:,} pages), {posts:,} POSTs;"
                f" the same command again: {rerun_reads:,} contact reads (1: the key check),"
                f" {rerun_posts:,} POSTs",
            ),
        )
    ]


def send_memory(sizes: Sizes) -> list[Result]:
    """Case 9: a sending run's peak RSS (ledger on, no limit) at 200,000 rows against the same
    run at 20,000: what the importer keeps per row must not grow with the file."""
    big = _send_peak(sizes.memory_rows, "memory-big")
    small = _send_peak(sizes.memory_small_rows, "memory-small")
    return [
        Result(
            case=f"send, {sizes.memory_rows:,} rows, no limit, ledger on: peak RSS",
            figure=f"{big.peak_rss_mb:.0f} MB",
            reference=f"{small.peak_rss_mb:.0f} MB: the same send of "
            f"{sizes.memory_small_rows:,} rows",
            ratio=big.peak_rss_mb / small.peak_rss_mb,
            goal="≤ 1.2×",
            passed=big.peak_rss_mb <= 1.2 * small.peak_rss_mb,
            note=f"{sizes.memory_rows / big.seconds:,.0f} rows/s vs "
            f"{sizes.memory_small_rows / small.seconds:,.0f} rows/s; one run each",
        )
    ]


def _send_peak(rows: int, name: str) -> ChildReport:
    """The importer sending `rows` rows to a fresh sandbox process, in a fresh process whose
    ledger starts empty (its `HOME` is a fresh folder); `RuntimeError` unless it exits 0 and
    the sandbox holds an activity for every row it reports `created` (a generated file may
    hold a row twice: the second is `skipped`)."""
    path, mapping, workdir = data.send_csv(rows), data.mapping_path("csv"), fresh_dir(name)
    with sandbox_process(NO_LIMIT) as sandbox:
        env = {"GIVEBUTTER_API_KEY": sandbox.api_key, **home_env(workdir)}
        results, url = workdir / "results.csv", sandbox.base_url
        report = run_child("send", url, path, mapping, results, UNLIMITED_RATE, env=env)
        stored = sandbox.stats().activities
    statuses = _statuses(results)
    if report.exit_code != 0 or statuses.total() != rows or stored != statuses["created"]:
        raise RuntimeError(
            f"{name}: exit {report.exit_code}, results {dict(statuses)} for {rows:,} rows, "
            f"{stored:,} stored"
        )
    return report


def nightly_sync(sizes: Sizes) -> list[Result]:
    """Case 10: the nightly re-run of a keyed file in which 1% of the records were edited,
    against a plain dry run of the same file; its requests must be the edits alone."""
    rows, changed = sizes.sync_rows, sizes.sync_changed
    last_night, tonight = data.sync_csvs(rows, changed)
    mapping, workdir = data.sync_mapping(), fresh_dir("sync")
    with sandbox_process(NO_LIMIT) as sandbox:
        env = {"GIVEBUTTER_API_KEY": sandbox.api_key, **home_env(workdir)}
        url = sandbox.base_url
        first = run_child("send", url, last_night, mapping, workdir / "first.csv", UNLIMITED_RATE,
                          env=env)  # fmt: skip
        before = sandbox.stats()
        _warm(tonight)
        sync = run_child("send", url, tonight, mapping, workdir / "sync.csv", UNLIMITED_RATE,
                         env=env)  # fmt: skip
        after = sandbox.stats()
    # In a fresh home, no ledger: the dry run only reads, maps and checks.
    dry = run_child("dry-run", tonight, mapping, fresh_dir("sync-dry-run") / "results.csv")
    requests = after.requests - before.requests
    puts = after.count("PUT", ACTIVITY_ROUTE) - before.count("PUT", ACTIVITY_ROUTE)
    statuses = _statuses(workdir / "sync.csv")
    problems = []
    if first.exit_code != 0 or _statuses(workdir / "first.csv")["created"] != rows:
        problems.append(f"first import: exit {first.exit_code}")
    expected = Counter({"updated": changed, "unchanged": rows - changed})
    if sync.exit_code != 0 or statuses != expected:
        problems.append(f"re-run: exit {sync.exit_code}, {dict(statuses)}")
    if puts != changed:
        problems.append(f"{puts:,} PUTs for {changed:,} edited records")
    return [
        Result(
            case=f"nightly sync: {rows:,} keyed rows again, {changed:,} of them edited",
            figure=f"{sync.seconds:.2f} s, {requests:,} requests",
            reference=f"{dry.seconds:.2f} s: a plain dry run of the same file",
            ratio=sync.seconds / dry.seconds,
            goal=f"≤ 1.5×; {changed:,} updates + the key check",
            passed=sync.seconds <= 1.5 * dry.seconds and requests == changed + 1 and not problems,
            note=_joined(
                problems,
                f"{puts:,} PUTs; peak RSS {sync.peak_rss_mb:.0f} MB vs "
                f"{dry.peak_rss_mb:.0f} MB; one run each",
            ),
        )
    ]


def _statuses(results: Path) -> Counter[str]:
    with results.open(newline="", encoding="utf-8") as file:
        return Counter(line["status"] for line in csv.DictReader(file))


def _send_bare(
    sandbox_flags: Sequence[str], path: Path, mapping: Path, concurrency: int, rows: int
) -> Sent:
    """The reference loop, in a fresh process as the importer is, posting the bodies of
    `path` to a fresh sandbox."""
    with sandbox_process(sandbox_flags) as sandbox:
        key = {"GIVEBUTTER_API_KEY": sandbox.api_key}
        report = run_child("post", sandbox.base_url, path, mapping, concurrency, env=key)
        stats = sandbox.stats()
    statuses = Counter({200: rows if report.exit_code == 0 else 0})
    return Sent(None, stats.admitted_times, stats, statuses)


def _send_importer(
    sandbox_flags: Sequence[str], path: Path, mapping: Path, flags: list[str], name: str
) -> Sent:
    """The importer sending `path` to a fresh sandbox, from a fresh folder (`HOME` too, so
    that its ledger starts empty) with its own copy of the input. The first arrival, the
    key check, is left out of the times."""
    workdir = fresh_dir(name)
    path = Path(shutil.copy(path, workdir / path.name))
    with sandbox_process(sandbox_flags) as sandbox:
        run = _importer_run(sandbox, path, mapping, flags, workdir)
        stats = sandbox.stats()
    statuses = Counter({200: run.counts.get("created", 0)})
    return Sent(run, stats.admitted_times[1:], stats, statuses)


def _importer_run(
    sandbox: SandboxProcess, path: Path, mapping: Path, flags: list[str], workdir: Path
) -> ImporterRun:
    return run_importer(
        path, mapping, sandbox.base_url, sandbox.api_key, workdir=workdir, flags=flags
    )


def _alternate(
    first: Callable[[], A], second: Callable[[], B], sizes: Sizes
) -> tuple[list[A], list[B]]:
    """Measure `first` then `second`, again and again: `sizes.repeats` times, or fewer once
    `sizes.budget` seconds have passed (at least once)."""
    started = time.perf_counter()
    firsts: list[A] = []
    seconds: list[B] = []
    while len(firsts) < sizes.repeats:
        if firsts and time.perf_counter() - started > sizes.budget:
            break
        firsts.append(first())
        seconds.append(second())
    return firsts, seconds


def _run(sent: Sent) -> ImporterRun:
    assert sent.run is not None
    return sent.run


def _ledger_files(run: ImporterRun) -> list[Path]:
    return [p for p in run.workdir.rglob("*") if "ledger" in p.name.lower()]


def _problems(sends: list[Sent], rows: int) -> list[str]:
    """What went wrong in sends that should each have created every row."""
    problems = []
    for sent in sends:
        if sent.run is not None and sent.run.exit_code != 0:
            last = (sent.run.stderr.strip().splitlines() or [""])[-1]
            problems.append(f"importer exit {sent.run.exit_code} {last}".strip())
        if sent.statuses.get(200, 0) != rows:
            problems.append(f"{sent.statuses.get(200, 0):,} of {rows:,} created")
    return problems


def _joined(problems: list[str], note: str) -> str:
    return "; ".join([*problems, note] if note else problems)


CASES: dict[str, Callable[[Sizes], list[Result]]] = {
    "csv": dry_run_csv,
    "xlsx": dry_run_xlsx,
    "send": send_unlimited,
    "latency": send_with_latency,
    "limit": send_limited,
    "ledger": send_ledger,
    "contacts": contacts_by_email,
    "memory": send_memory,
    "sync": nightly_sync,
}

"""One piece of measured work, alone in a fresh process: `python -m bench.child WORK ARGS...`.

Each work is timed from just before it starts to just after it ends: the interpreter's start
and the imports are left out, for the work and its reference alike. The process then prints
one JSON line on stdout:

    {"seconds": 12.3, "peak_rss_mb": 145.2, "exit_code": 0}

`peak_rss_mb` is the most memory the process itself ever held, imports included: `VmHWM`
from `/proc/self/status`. (Not `ru_maxrss`: Linux carries it over from the parent across
fork and exec, so a child of a big parent would report the parent's peak.) The references
import pandas alone; the dry run imports the importer too. Works:

    dry-run INPUT MAPPING RESULTS   givebutter-import run INPUT -m MAPPING --dry-run -q
    read-csv INPUT CHUNK_ROWS       one bare pandas.read_csv(dtype=str, chunksize=...) pass
    read-excel INPUT                pandas.read_excel(INPUT, engine="calamine", dtype=str)
    post BASE_URL INPUT MAPPING N   the bare aiohttp loop posting INPUT's bodies with N at
                                    once, key from $GIVEBUTTER_API_KEY (exit 1 unless every
                                    answer is 200); the bodies are made before the clock starts
    send BASE_URL INPUT MAPPING RESULTS RATE
                                    givebutter-import run INPUT -m MAPPING --base-url BASE_URL
                                    --rate RATE -q (ledger on, where $HOME/$XDG_DATA_HOME say),
                                    key from $GIVEBUTTER_API_KEY
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

Work = Callable[[], int]  # does the measured work; gives an exit code


def dry_run(input_path: str, mapping: str, results: str) -> Work:
    """The importer's dry run, exactly as the command line runs it."""
    from importer.cli import main as importer_main

    argv = ["run", input_path, "-m", mapping, "--dry-run", "-q", "--results", results, "--force"]
    return lambda: importer_main(argv)


def send(base_url: str, input_path: str, mapping: str, results: str, rate: str) -> Work:
    """The importer sending, exactly as the command line runs it, with its defaults."""
    from importer.cli import main as importer_main

    argv = ["run", input_path, "-m", mapping, "--base-url", base_url, "--rate", rate, "-q"]
    return lambda: importer_main([*argv, "--results", results, "--force"])


def read_csv(input_path: str, chunk_rows: str) -> Work:
    """The reference: read every chunk as text and let it go."""

    def work() -> int:
        rows = 0
        for chunk in pd.read_csv(input_path, dtype=str, chunksize=int(chunk_rows)):
            rows += len(chunk)
        return 0 if rows else 1

    return work


def read_excel(input_path: str) -> Work:
    """The reference: the whole first sheet into one frame, as text."""
    return lambda: 0 if len(pd.read_excel(input_path, engine="calamine", dtype=str)) else 1


def post(base_url: str, input_path: str, mapping: str, concurrency: str) -> Work:
    """The reference for sending: `bench.reference.post_all` over the file's bodies."""
    from bench.reference import post_all, request_bodies

    bodies = request_bodies(Path(input_path), Path(mapping))
    api_key = os.environ["GIVEBUTTER_API_KEY"]

    def work() -> int:
        statuses = asyncio.run(post_all(base_url, api_key, bodies, int(concurrency)))
        return 0 if statuses.get(200, 0) == len(bodies) else 1

    return work


WORKS: dict[str, Callable[..., Work]] = {
    "dry-run": dry_run,
    "read-csv": read_csv,
    "read-excel": read_excel,
    "post": post,
    "send": send,
}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
    except OSError:  # not Linux: the best there is (Linux and BSD report KiB)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main(argv: Sequence[str]) -> int:
    name, *args = argv
    work = WORKS[name](*args)
    started = time.perf_counter()
    exit_code = work()
    seconds = time.perf_counter() - started
    report = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "exit_code": exit_code}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

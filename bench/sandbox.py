"""The sandbox in a process of its own, so that it and the client never share one GIL.

    with sandbox_process(["--limit", "none", "--latency", "0.2"]) as sandbox:
        ...  # send to sandbox.base_url with key sandbox.api_key
        stats = sandbox.stats()

It runs `python -m importer sandbox --host 127.0.0.1 --port 0 FLAGS...`, which prints its
base URL on stdout once it answers; on leaving, it is sent SIGTERM (and killed if it does
not stop). Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from importer.sandbox import SANDBOX_API_KEY

_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class SandboxStats:
    """What the sandbox saw: every admitted request's arrival time, and the 429s."""

    admitted_times: list[float]  # seconds on the sandbox's clock, in arrival order
    throttled: int
    windows: list[dict[str, Any]]  # per rate window: limit, seconds, max_admitted
    activities: int
    responses: list[dict[str, Any]] = field(default_factory=list)  # method, route, status, count

    def count(self, method: str, route: str) -> int:
        """How many requests of `method` to `route` (a template, `/v1/contacts`) it answered."""
        return sum(
            r["count"] for r in self.responses if r["method"] == method and r["route"] == route
        )

    @property
    def requests(self) -> int:
        """Every request it answered, whatever the route."""
        return sum(r["count"] for r in self.responses)


@dataclass(frozen=True)
class SandboxProcess:
    """A running sandbox process: where it answers and the key it takes."""

    base_url: str
    process: subprocess.Popen[str]
    api_key: str = SANDBOX_API_KEY

    @property
    def stats_url(self) -> str:
        return self.base_url.removesuffix("/v1") + "/_sandbox/stats?times=1"

    def stats(self) -> SandboxStats:
        """A snapshot of the sandbox's stats (GET /_sandbox/stats?times=1)."""
        with urllib.request.urlopen(self.stats_url, timeout=30) as answer:
            body = json.load(answer)
        return SandboxStats(
            admitted_times=body["admitted_times"],
            throttled=body["throttled"],
            windows=body["windows"],
            activities=body["activities"],
            responses=body["responses"],
        )


@contextlib.contextmanager
def sandbox_process(flags: Sequence[str] = ()) -> Iterator[SandboxProcess]:
    """Start a sandbox with `flags` (those of `givebutter-import sandbox`); stop it after."""
    command = [sys.executable, "-m", "importer", "sandbox", "--host", "127.0.0.1", "--port", "0"]
    # stderr goes to a file, not a pipe: a pipe nobody reads could fill and stall it.
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errors:
        process = subprocess.Popen(
            [*command, *flags], stdout=subprocess.PIPE, stderr=errors, text=True
        )
        try:
            base_url = _ready_url(process, errors)
            yield SandboxProcess(base_url=base_url, process=process)
        finally:
            _stop(process)


def _ready_url(process: subprocess.Popen[str], errors: IO[str]) -> str:
    """The base URL the sandbox prints once it answers; `RuntimeError` if it does not."""
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("http://127.0.0.1:"):
        _stop(process)
        errors.seek(0)
        raise RuntimeError(f"the sandbox did not start: {line or errors.read().strip()}")
    return line


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()

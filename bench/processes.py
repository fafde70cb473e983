"""Running measured work in fresh processes: `bench.child` works, and the importer's CLI.

Every process is started with this interpreter, with the repository on `PYTHONPATH`, and
with `GIVEBUTTER_BASE_URL` removed from its environment so that nothing but the base URL
given (always the sandbox on 127.0.0.1) can be reached, and with a home of its own, so that
nothing the user keeps in theirs (a ledger) changes what is measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "bench" / "out"


@dataclass(frozen=True)
class ChildReport:
    """What a `bench.child` work reported about itself."""

    seconds: float
    peak_rss_mb: float
    exit_code: int


@dataclass(frozen=True)
class ImporterRun:
    """One `givebutter-import run`: its wall time (process start to exit) and summary."""

    workdir: Path  # where it ran, with HOME pointing there too
    wall_seconds: float
    exit_code: int
    summary: dict[str, Any]
    stderr: str

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.summary.get("counts", {}))


def child_env(**extra: str) -> dict[str, str]:
    """This environment, with the repository importable and no API base URL set."""
    env = {k: v for k, v in os.environ.items() if k != "GIVEBUTTER_BASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def home_env(folder: Path) -> dict[str, str]:
    """`HOME` and `XDG_DATA_HOME` in `folder`: what the importer keeps between runs (a
    ledger, a contact index) is kept there, never in the user's own home."""
    return {"HOME": str(folder), "XDG_DATA_HOME": str(folder / "data")}


def run_child(work: str, *args: str | int | Path, env: dict[str, str] | None = None) -> ChildReport:
    """Run `python -m bench.child WORK ARGS...` and read its report. `RuntimeError` if it
    fails, or if the work's own exit code says it could not run (2 or more: for a dry run,
    1 only means that some rows are invalid). Its home is a fresh folder unless `env` names
    one: a ledger in the user's home would turn a plain dry run into one that reads it."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.child", work, *map(str, args)],
        cwd=REPO,
        env=child_env(**{**home_env(fresh_dir(f"home-{work}")), **(env or {})}),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bench.child {work} failed: {done.stderr.strip()[-2000:]}")
    report = ChildReport(**json.loads(lines[-1]))
    if report.exit_code >= 2:
        raise RuntimeError(f"{work} exited {report.exit_code}: {done.stderr.strip()[-2000:]}")
    return report


def fresh_dir(name: str) -> Path:
    """An empty directory `bench/out/NAME` (emptied if it was there)."""
    path = OUT_DIR / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_importer(
    input_path: Path,
    mapping_path: Path,
    base_url: str,
    api_key: str,
    *,
    workdir: Path,
    flags: list[str],
) -> ImporterRun:
    """`givebutter-import run INPUT -m MAPPING --base-url URL FLAGS... -q` in `workdir`.

    The key goes in the environment, as the CLI asks. `HOME` is `workdir` too, so that
    whatever the importer keeps between runs (a ledger) starts empty for every run.
    """
    results, summary = workdir / "results.csv", workdir / "summary.json"
    command = [
        *(sys.executable, "-m", "importer", "run", str(input_path), "-m", str(mapping_path)),
        *("--base-url", base_url, "--results", str(results), "--force", "-q"),
        *("--summary-json", str(summary), *flags),
    ]
    env = child_env(GIVEBUTTER_API_KEY=api_key, **home_env(workdir))
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    body = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
    return ImporterRun(workdir, wall, done.returncode, body, done.stderr)


def importer_help() -> str:
    """The text of `givebutter-import run --help`."""
    done = subprocess.run(
        [sys.executable, "-m", "importer", "run", "--help"],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout

"""Shared paths and fixtures: the repository's folders, a running sandbox, results reading.

Every test runs with `HOME` and `XDG_DATA_HOME` pointing at a temporary folder of its own
(the autouse `_private_home`), so that nothing a test starts — in-process or a
subprocess, which inherits the environment — writes into the real home folder (the default
ledger, the contact index); `tests/test_home.py` checks that the real default data folder
stays as it was. Hypothesis keeps its caches in a temporary folder of the run's own, not in
`.hypothesis` beside the tests.
"""

import csv
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from importer.ledger import Ledger
from importer.sandbox import Sandbox, SandboxSettings, sandbox_in_thread

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
MAPPINGS = ROOT / "mappings"

# Hypothesis profiles: "quick" for every run (each property still sees a few hundred rows
# of tricky cells), "thorough" on demand:
#     HYPOTHESIS_PROFILE=thorough pytest tests/test_mapper_properties.py
_PROPERTY_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow],
}
settings.register_profile("quick", max_examples=60, **_PROPERTY_SETTINGS)
settings.register_profile("thorough", max_examples=1000, **_PROPERTY_SETTINGS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

# Hypothesis caches its unicode tables and the constants it finds in our modules under
# `.hypothesis` in the working folder, the checkout. The run makes a temporary folder for
# them instead; the xdist workers and every subprocess inherit it through the environment,
# and the process that made it removes it at the end.
_HYPOTHESIS_STORAGE = "HYPOTHESIS_STORAGE_DIRECTORY"
_MADE_HYPOTHESIS_STORAGE = _HYPOTHESIS_STORAGE not in os.environ
if _MADE_HYPOTHESIS_STORAGE:
    os.environ[_HYPOTHESIS_STORAGE] = tempfile.mkdtemp(prefix="givebutter-hypothesis-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _MADE_HYPOTHESIS_STORAGE:
        shutil.rmtree(os.environ.pop(_HYPOTHESIS_STORAGE), ignore_errors=True)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers a core, up to 8 (or one a core past that). Most tests spend
    their time waiting on a subprocess, a socket or the sandbox's latency, so a core that
    one worker leaves idle is another's. On 2 cores (2026-12-04, alternating runs): 4 workers
    36-38 s, 3 workers 41-48 s, 6 workers 45-46 s."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return max(cores, min(2 * cores, 8))


# Read before any fixture changes the environment: where the tool's data would go for real.
REAL_HOME = Path.home()
REAL_DATA_DIR = (
    Path(os.environ.get("XDG_DATA_HOME") or REAL_HOME / ".local" / "share") / "givebutter-import"
)


def data_dir_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file under `folder` with its size and modification time (empty: no folder)."""
    if not folder.is_dir():
        return {}
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HOME and XDG_DATA_HOME in a temporary folder of the test's own: one test's default
    ledger is never the next one's."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
        yield home


# The rate of the tests' runs against a sandbox without limits: the limiter is in the path,
# and no test waits on it (at 500/s a 300-row sample took 0.6 s of waiting).
QUICK_RATE = "5000/s"


def run_cli(
    sandbox: Sandbox,
    tmp_path: Path,
    input_path: Path,
    mapping: Path | str,
    *extra: str,
    results: str = "r.csv",
) -> int:
    """`givebutter-import run` in-process, as the end-to-end tests run it: against
    `sandbox` at `QUICK_RATE`, the ledger (`ledger.sqlite`) and the results (replaced if there)
    in `tmp_path`, quiet; `extra` arguments last. `mapping` is a mapping file, or a
    mapping's YAML text (written to `tmp_path / "m.yaml"`). Gives the exit code."""
    from importer.cli import main  # here: xdist's controller loads this file, runs no test

    if isinstance(mapping, str):
        text, mapping = mapping, tmp_path / "m.yaml"
        mapping.write_text(text, encoding="utf-8")
    argv = ["run", str(input_path), "-m", str(mapping), "--base-url", sandbox.base_url]
    argv += ["--rate", QUICK_RATE, "--ledger", str(tmp_path / "ledger.sqlite")]
    argv += ["--results", str(tmp_path / results), "--force", "-q", *extra]
    return main(argv)


def rows_of(path: Path) -> list[dict[str, str]]:
    """The lines of a results CSV, as dicts."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A sandbox without rate limits on loopback, its key in GIVEBUTTER_API_KEY."""
    with sandbox_in_thread(SandboxSettings(limits=())) as running:
        monkeypatch.setenv("GIVEBUTTER_API_KEY", running.api_key)
        yield running


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """Where the test's ledger is (in a folder not made yet: the ledger makes it)."""
    return tmp_path / "state" / "ledger.sqlite"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[Ledger]:
    """A ledger, open for the test."""
    with Ledger.open(ledger_path) as opened:
        yield opened

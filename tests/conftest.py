"""Shared paths and fixtures: the repository's folders, a running sandbox, results reading."""

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.sandbox import Sandbox, SandboxSettings, sandbox_in_thread

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
MAPPINGS = ROOT / "mappings"


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


@pytest.fixture(autouse=True, scope="session")
def _home_is_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test writes into the real home folder: the default ledger, its contact index and
    anything else under $HOME or $XDG_DATA_HOME land in a temporary folder (subprocesses
    inherit it)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
        yield

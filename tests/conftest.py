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

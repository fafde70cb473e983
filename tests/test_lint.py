"""The code is ruff-clean and mypy-clean: CI runs this with the rest of the suite."""

import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_finds_nothing():
    paths = [p for p in ("importer", "tests", "bench", "samples") if (ROOT / p).exists()]
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing(request, tmp_path):
    # The settings are pyproject.toml's [tool.mypy]. Its cache lives in pytest's own cache
    # folder (15 s cold, 2 s warm), or a temporary one when pytest keeps no cache.
    cache = getattr(request.config, "cache", None)
    cache_dir = cache.mkdir("mypy") if cache is not None else tmp_path
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache_dir), "importer"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success" in done.stdout, done.stdout + done.stderr

"""The code is ruff-clean: CI runs this with the rest of the suite."""

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

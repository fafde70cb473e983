"""The code is ruff-clean: CI runs this with the rest of the suite."""

import shutil
import subprocess

from tests.conftest import ROOT


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(ROOT / ".venv" / "bin" / "ruff")
    done = subprocess.run(
        [ruff, "check", "--no-cache", "importer", "tests", "bench", "samples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""The suite never writes into the real home folder: HOME and XDG_DATA_HOME point at a
temporary folder for the whole session (tests/conftest.py), subprocesses included."""

import os
import subprocess
import sys
from pathlib import Path

from importer.cli import default_ledger_path, main
from tests.conftest import (
    MAPPINGS,
    QUICK_RATE,
    REAL_DATA_DIR,
    REAL_HOME,
    ROOT,
    SAMPLES,
    data_dir_state,
)


def test_the_default_ledger_is_outside_the_real_home():
    ledger = default_ledger_path()
    assert not ledger.is_relative_to(REAL_HOME)
    assert Path(os.environ["HOME"]) != REAL_HOME


def test_a_run_with_the_default_ledger_writes_it_in_the_temporary_home(tmp_path, sandbox):
    # (Compared within the test, not over the session: other programs on this machine may
    # use the real folder meanwhile.)
    real_before = data_dir_state(REAL_DATA_DIR)
    code = main(
        [
            "run",
            str(SAMPLES / "donor-crm-activities.csv"),
            "-m",
            str(MAPPINGS / "donor-crm-activities.yaml"),
            "--base-url",
            sandbox.base_url,
            "--rate",
            QUICK_RATE,
            "--results",
            str(tmp_path / "r.csv"),
            "-q",
        ]
    )
    assert code == 1  # the sample's bad rows
    assert default_ledger_path().is_file()  # the ledger was written: here, not in ~
    assert data_dir_state(REAL_DATA_DIR) == real_before


def test_a_subprocess_inherits_the_temporary_home(tmp_path):
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importer.ledger_file import default_ledger_path as p; print(p())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(shown) == default_ledger_path()
    assert not Path(shown).is_relative_to(REAL_HOME)

"""Progress when stderr is not a terminal: a line every interval, never silence."""

from pathlib import Path

from importer import progress as progress_module
from importer.cli import main
from importer.progress import Progress
from importer.read import SourceTable
from tests.conftest import MAPPINGS, SAMPLES


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(rows_hint: int | None) -> SourceTable:
    return SourceTable(
        path=Path("x.csv"),
        columns=["A"],
        format="csv",
        header_row=1,
        rows=iter,
        rows_hint=rows_hint,
    )


def test_a_line_every_interval_with_rows_rate_and_time_left(capsys):
    clock = Clock()
    with Progress(enabled=True, interval=30.0, clock=clock) as progress:
        progress.start(table(rows_hint=10_000))
        clock.now += 10
        progress.advance(1_000)  # 10 s in: too early for a line
        clock.now += 20
        progress.advance(2_000)  # 30 s: a line
        clock.now += 5
        progress.advance(500)  # 35 s: quiet again
        clock.now += 30
        progress.advance(1_500)  # 65 s: a line
    assert capsys.readouterr().err.splitlines() == [
        "progress: 3,000 of about 10,000 rows in 30 s (100 rows/s), about 1 min 10 s left",
        "progress: 5,000 of about 10,000 rows in 1 min 5 s (77 rows/s), about 1 min 5 s left",
    ]


def test_without_a_row_count_the_line_has_no_time_left(capsys):
    clock = Clock()
    progress = Progress(enabled=True, interval=1.0, clock=clock)
    progress.start(table(rows_hint=None))
    clock.now += 2
    progress.advance(400)
    assert capsys.readouterr().err == "progress: 400 rows in 2 s (200 rows/s)\n"


def test_quiet_means_no_lines(capsys):
    clock = Clock()
    progress = Progress(enabled=False, interval=1.0, clock=clock)
    progress.start(table(rows_hint=100))
    clock.now += 5
    progress.advance(50)
    assert capsys.readouterr().err == ""


def test_a_run_whose_stderr_is_not_a_terminal_says_how_far_it_is(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "PROGRESS_INTERVAL", 0.0)  # a line at every block
    code = main(
        [
            "run",
            str(SAMPLES / "donor-crm-activities.csv"),
            "-m",
            str(MAPPINGS / "donor-crm-activities.yaml"),
            "--dry-run",
            "--results",
            str(tmp_path / "r.csv"),
        ]
    )
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress:")]
    assert lines and lines[-1].startswith("progress: 300 ")


def test_a_trial_run_counts_toward_its_limit_not_the_whole_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "PROGRESS_INTERVAL", 0.0)
    argv = ["run", str(SAMPLES / "donor-crm-activities.csv")]
    argv += ["-m", str(MAPPINGS / "donor-crm-activities.yaml"), "--dry-run", "--limit", "40"]
    main([*argv, "--results", str(tmp_path / "r.csv")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress:")]
    assert lines and all(" of about 40 rows" in line for line in lines), lines


def test_a_selection_takes_at_most_its_limit_and_its_ranges():
    from importer.selection import RowSelection

    assert RowSelection().at_most(None) is None and RowSelection().at_most(300) == 300
    assert RowSelection(limit=40).at_most(300) == 40 and RowSelection(limit=40).at_most(None) == 40
    assert RowSelection(ranges=((5, 9), (20, 29))).at_most(300) == 15
    assert RowSelection(ranges=((5, 9),), limit=3).at_most(2) == 2

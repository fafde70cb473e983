"""What the suite prints: the machine it ran on, and one markdown table of results.

Each `Result` is one row: the figure, its reference measured in the same run, the ratio of
the two, the goal and whether it was met (`None`: not measured, e.g. a feature not there yet).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

_PACKAGES = ("pandas", "pyarrow", "pydantic", "aiohttp", "python-calamine")


@dataclass(frozen=True, kw_only=True)
class Result:
    """One row of the table."""

    case: str
    figure: str
    reference: str
    ratio: float | None
    goal: str
    passed: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "**MISS**", None: "n/a"}[self.passed]


def machine(load_before: str) -> str:
    """A few lines saying what the suite ran on; `load_before` is `load()` taken before the
    suite started (anything well above 0 means other work was sharing the machine)."""
    versions = ", ".join(f"{name} {_version(name)}" for name in _PACKAGES)
    return "\n".join(
        [
            f"- CPU: {_cpu_model()}; nproc {len(os.sched_getaffinity(0))}",
            f"- memory: {_memory_gb():.1f} GB",
            f"- OS: {platform.platform()}",
            f"- Python {platform.python_version()} ({sys.implementation.name}); {versions}",
            f"- load average before the suite (1, 5, 15 min): {load_before}",
        ]
    )


def markdown(results: list[Result]) -> str:
    """The results as one markdown table."""
    head = "| case | figure | reference (same run) | ratio | goal | result | notes |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in results:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}×"
        cells = (r.case, r.figure, r.reference, ratio, r.goal, r.verdict, r.note)
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text that stays inside its table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def load() -> str:
    """The load averages over 1, 5 and 15 minutes."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _cpu_model() -> str:
    for line in _read_lines(Path("/proc/cpuinfo")):
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def _memory_gb() -> float:
    for line in _read_lines(Path("/proc/meminfo")):
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []

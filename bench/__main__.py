"""`python -m bench [--quick] [--only CASE,...]`: run the suite, print the machine and the table."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence

from bench.cases import CASES, FULL, QUICK, Sizes
from bench.processes import OUT_DIR
from bench.table import Result, load, machine, markdown


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    chosen = _chosen(args.only)
    load_before = load()
    started = time.perf_counter()
    results = _run(chosen, sizes)
    seconds = time.perf_counter() - started
    if not args.keep:
        shutil.rmtree(OUT_DIR, ignore_errors=True)
    print(f"Machine:\n{machine(load_before)}\n")
    print(markdown(results))
    print(f"\nSuite{' (--quick)' if args.quick else ''}: {seconds:.0f} s wall.")
    return 0 if all(r.passed is not False for r in results) else 1


def _run(chosen: list[str], sizes: Sizes) -> list[Result]:
    results: list[Result] = []
    for number, name in enumerate(chosen, start=1):
        print(f"[{number}/{len(chosen)}] {name} ...", file=sys.stderr, flush=True)
        case_started = time.perf_counter()
        results += _run_case(name, sizes)
        print(f"      {time.perf_counter() - case_started:.0f} s", file=sys.stderr, flush=True)
    return results


def _run_case(name: str, sizes: Sizes) -> list[Result]:
    """The case's rows; a case that cannot run is one row saying why, and the rest go on."""
    try:
        return CASES[name](sizes)
    except Exception as error:  # one broken case must not hide the others' figures
        reason = " ".join(str(error).split())[:300]
        return [
            Result(
                case=name,
                figure=f"error: {type(error).__name__}",
                reference="",
                ratio=None,
                goal="",
                passed=False,
                note=reason,
            )
        ]


def _chosen(only: str | None) -> list[str]:
    if not only:
        return list(CASES)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        raise SystemExit(f"bench: unknown case {', '.join(unknown)}; cases: {', '.join(CASES)}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark givebutter-import against references measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (1 to 2 minutes)")
    parser.add_argument("--only", metavar="CASES", help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--keep", action="store_true", help="keep bench/out/ (results, logs)")
    return parser


if __name__ == "__main__":
    sys.exit(main())

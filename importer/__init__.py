"""givebutter-import: bring activity history from CSV and Excel exports into Givebutter.

The pipeline has five stages, each a module of its own:

    read (read) -> map (mapper, mapping, payload, decide) -> resolve (resolve)
        -> send (send; delivery, the exactly-once engine) -> report (report)

`importer.pipeline` wires them; `importer.cli` is a thin command line over the pipeline.
The names below are the library's public face; everything else may change.

    from importer import RunOptions, load_mapping, run_import
    summary = run_import(RunOptions(input_path=..., mapping=load_mapping(...), ...))
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importer.delivery import Interruption
    from importer.errors import (
        AuthError,
        ConfigError,
        ImporterError,
        InputError,
        LedgerError,
        MappingError,
    )
    from importer.ledger_file import default_ledger_path
    from importer.mapping import Mapping, load_mapping
    from importer.pipeline import (
        RunOptions,
        refresh_contact_index,
        retry_failed,
        retry_failed_async,
        run_import,
        run_import_async,
    )
    from importer.records import Outcome, Status
    from importer.report import Summary
    from importer.selection import RowSelection, parse_rows
    from importer.send import SenderSettings
    from importer.undo import Undone, undo_run

# The public names are imported when first asked for (PEP 562, as pydantic does), so that a
# process needing one module (`importer.ledger`, the sandbox) does not load pandas, pyarrow
# and aiohttp with the whole package. Each name's home module:
_HOMES = {
    "Interruption": "importer.delivery",
    **dict.fromkeys(
        ["AuthError", "ConfigError", "ImporterError", "InputError", "LedgerError", "MappingError"],
        "importer.errors",
    ),
    "default_ledger_path": "importer.ledger_file",
    "Mapping": "importer.mapping",
    "load_mapping": "importer.mapping",
    **dict.fromkeys(
        [
            "RunOptions",
            "refresh_contact_index",
            "retry_failed",
            "retry_failed_async",
            "run_import",
            "run_import_async",
        ],
        "importer.pipeline",
    ),
    "Outcome": "importer.records",
    "Status": "importer.records",
    "Summary": "importer.report",
    "RowSelection": "importer.selection",
    "parse_rows": "importer.selection",
    "SenderSettings": "importer.send",
    "Undone": "importer.undo",
    "undo_run": "importer.undo",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'importer' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # asked once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "AuthError",
    "ConfigError",
    "ImporterError",
    "InputError",
    "Interruption",
    "LedgerError",
    "Mapping",
    "MappingError",
    "Outcome",
    "RowSelection",
    "RunOptions",
    "SenderSettings",
    "Status",
    "Summary",
    "Undone",
    "__version__",
    "default_ledger_path",
    "load_mapping",
    "parse_rows",
    "refresh_contact_index",
    "retry_failed",
    "retry_failed_async",
    "run_import",
    "run_import_async",
    "undo_run",
]

"""Run-level errors: each stops a run with one clear line and an exit code.

    ImporterError (base, exit 2)
    ├── InputError        the input file cannot be read as a table
    ├── MappingError      the mapping file is malformed or does not fit the input
    ├── ConfigError       bad arguments or environment (no API key, bad --rate, ...)
    ├── LedgerError       the ledger cannot be read or written (damaged, disk full)
    └── AuthError         the API refused the key (401): nothing more can be sent

Row-level problems are never exceptions: they are `Outcome`s with a reason.
"""

from __future__ import annotations


class ImporterError(Exception):
    """A run cannot start or cannot go on. `str(error)` is the one line shown.

    `setting`, when given, names the `RunOptions` field that would change the outcome
    (the library's words; the command line turns it into its own option's name)."""

    exit_code = 2

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class InputError(ImporterError):
    """The input file cannot be read."""


class MappingError(ImporterError):
    """The mapping file is invalid, or names columns the input lacks."""


class ConfigError(ImporterError):
    """Bad arguments or environment."""


class LedgerError(ImporterError):
    """The ledger cannot be read or written: damaged, on a full disk, not a file."""


class AuthError(ImporterError):
    """The API answered 401: the key is wrong or revoked."""

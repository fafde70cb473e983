"""Files only their owner may read: the results CSV, the summary, the ledger, the contact index.

They hold donors' names, emails and notes, so each is created with mode 0600 whatever the
umask (a umask of 0 would otherwise leave them world-readable, and one of 0277 would take
the owner's own write permission). A file that already exists keeps the mode its owner
gave it. SQLite gives its -wal, -shm and journal files the mode of the database file, so
creating the database file owner-only is enough for them.

    create_private_file(path, overwrite=False)  # a new file to write; refuses to replace one
    ensure_private_file(path, what="the ledger")  # an empty one if none, for SQLite to open
    make_private_folders(folder)  # the folder and any missing above it, each 0700
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from importer.errors import ConfigError

OWNER_ONLY = 0o600


def create_private_file(path: Path, *, overwrite: bool, binary: bool = False) -> IO[Any]:
    """Open a new file readable by its owner only, for writing (text: UTF-8, newlines as
    written); refuse to replace an existing one unless `overwrite`. ConfigError if not."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, OWNER_ONLY)
    except FileExistsError:
        raise ConfigError(f"{path} already exists", setting="overwrite_results") from None
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror or error}") from None
    os.fchmod(fd, OWNER_ONLY)
    if binary:
        return open(fd, "wb")
    return open(fd, "w", encoding="utf-8", newline="")


def ensure_private_file(path: Path, *, what: str = "", private_parent: bool = False) -> None:
    """Create `path` empty and owner-only if it does not exist (an existing file is left as
    it is), so that a database opened on it next is owner-only too. With `private_parent`,
    missing folders above it are created owner-only (0700). ConfigError if it cannot be
    created, naming it as `what` ("the contact index") where given."""
    try:
        if private_parent:
            make_private_folders(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    except FileExistsError:
        return
    except OSError as error:
        named = f"{what} {path}" if what else str(path)
        raise ConfigError(f"cannot create {named}: {error.strerror or error}") from None
    try:
        os.fchmod(fd, OWNER_ONLY)
    finally:
        os.close(fd)


def make_private_folders(folder: Path) -> None:
    """Create `folder` and any missing above it, each 0700 (mkdir's mode is cut by the
    umask, and `parents=True` gives the ones above the umask's default)."""
    missing = [folder, *folder.parents]
    missing = [each for each in missing if not each.exists()]
    for each in reversed(missing):
        each.mkdir(exist_ok=True)
        each.chmod(0o700)

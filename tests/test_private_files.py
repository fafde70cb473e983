"""Owner-only files: created 0600 whatever the umask, existing ones left as they are."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.errors import ConfigError
from importer.private_files import create_private_file, ensure_private_file


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o277])
def test_a_created_file_is_owner_only_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        with create_private_file(tmp_path / "a.csv", overwrite=False) as file:
            file.write("x")
        ensure_private_file(tmp_path / "b.sqlite")
    assert mode(tmp_path / "a.csv") == mode(tmp_path / "b.sqlite") == 0o600


def test_an_existing_file_is_not_replaced_unless_told(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("kept")
    with pytest.raises(ConfigError, match=r"a.csv already exists$") as refused:
        create_private_file(path, overwrite=False)
    assert refused.value.setting == "overwrite_results"  # the CLI adds "(use --force …)"
    assert path.read_text() == "kept"
    with create_private_file(path, overwrite=True, binary=True) as file:
        file.write(b"new")
    assert path.read_text() == "new"


def test_ensure_leaves_an_existing_file_and_its_mode_alone(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"data")
    path.chmod(0o640)
    ensure_private_file(path)
    assert path.read_bytes() == b"data"
    assert mode(path) == 0o640


def test_ensure_makes_missing_folders_owner_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "deep" / "index.sqlite"
    with umask(0):
        ensure_private_file(path, private_parent=True)
    assert mode(path.parent) == mode(path.parent.parent) == 0o700
    assert mode(path) == 0o600


def test_a_file_that_cannot_be_created_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "index.sqlite"
    with pytest.raises(ConfigError) as raised:
        ensure_private_file(path, what="the contact index")
    assert str(raised.value) == f"cannot create the contact index {path}: No such file or directory"

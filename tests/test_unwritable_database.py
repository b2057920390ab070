"""`serve` on a database it cannot write says so in one line and exits 1, with no traceback.

Root writes through file modes, so the files are made immutable (`chattr +i`), which binds root
too; where the file system has no such attribute these tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import REPO, server_env
from voicestack.store.store import Store


def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Paths to make immutable with `chattr +i`; made mutable again afterwards."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is missing (Debian's e2fsprogs)")
    probe = tmp_path / "probe"
    probe.touch()
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip(f"{tmp_path} cannot hold the immutable attribute")
    chattr("-i", probe)
    paths: list[Path] = []
    yield paths
    for path in paths:
        chattr("-i", path)


def serve(db: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "voicestack", "serve", "--db", str(db), "--port", "0"]
    return subprocess.run(
        command, cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=30
    )


def refusal(db: Path, reason: str = "unable to open database file") -> str:
    """The one line `serve` prints for a database it cannot write."""
    return (
        f"error: Cannot write the database {db} ({reason}). voicestack needs to write the file"
        f" and to create {db.name}-wal and {db.name}-shm beside it: check the permissions of"
        " both, or choose another file with --db.\n"
    )


def test_a_read_only_database_file_is_one_line_and_exit_1(
    tmp_path: Path, immutable: list[Path]
) -> None:
    db = tmp_path / "voicestack.db"
    Store(db).close()
    immutable.append(db)
    chattr("+i", db)

    done = serve(db)

    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        refusal(db, "the file is read-only"),
    )


def test_a_new_database_in_a_read_only_directory_is_one_line_and_exit_1(
    tmp_path: Path, immutable: list[Path]
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    immutable.append(folder)
    chattr("+i", folder)

    done = serve(folder / "voicestack.db")

    assert (done.returncode, done.stdout, done.stderr) == (1, "", refusal(folder / "voicestack.db"))


def test_a_database_whose_directory_is_read_only_is_one_line_and_exit_1(
    tmp_path: Path, immutable: list[Path]
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    db = folder / "voicestack.db"
    Store(db).close()
    immutable.append(folder)
    chattr("+i", folder)

    done = serve(db)

    assert (done.returncode, done.stdout, done.stderr) == (1, "", refusal(db))

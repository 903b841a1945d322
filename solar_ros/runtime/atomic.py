"""Files that a killed process never leaves torn: write a temporary file, fsync it, rename it into place.

``os.replace`` is atomic on POSIX file systems: a reader opens either the old file or the new one,
never a half-written one, and a process killed at any point (even ``kill -9``) leaves the old file
or the new one plus, at worst, a stray temporary file (``.<name>.<random>.tmp``, ignored by every
reader). The directory is fsynced after the rename, so the new name survives a power loss too.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(path: Path, prefix: str, suffix: str) -> Iterator[Path]:
    """A temporary file's name next to ``path`` for the caller to write; on a clean exit the file is
    fsynced and renamed to ``path`` (then the directory is fsynced), on an exception it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path`` for writing; on a clean exit it is fsynced and renamed
    to ``path``, on an exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    with _replacing(path, f".{path.name}.", ".tmp") as tmp, open(tmp, mode) as f:
        yield f


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, default: Callable[[Any], Any] | None = None) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True, default=default) + "\n")


def write_with_atomic(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """For writers that want a file name (e.g. matplotlib's ``savefig``): ``writer(tmp_path)`` writes
    the temporary file, which then replaces ``path``. The temporary name keeps ``path``'s suffix, so
    format detection by extension still works."""
    path = Path(path)
    with _replacing(path, f".{path.stem}.", f".tmp{path.suffix}") as tmp:
        writer(tmp)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file written by :func:`write_json_atomic` (``ValueError`` if it is not valid JSON)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)

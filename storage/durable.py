"""Making file system changes durable: the fsync calls every store in this folder relies on.

A write is durable once the file is fsynced; a creation, rename or deletion once the directory
holding the entry is fsynced too (a directory whose own entry is lost in a crash takes all its
durable files with it).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make creations, renames and deletions of the directory's entries durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_directory(path: Path) -> None:
    """Create ``path`` and any missing parents durably, each new entry's parent fsynced."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_directory(directory.parent)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")

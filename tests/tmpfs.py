"""A small real file system for out-of-disk tests: a tmpfs mounted for one test (needs root, as
in CI), and a filler file that takes all but a given amount of its space."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

FILLER_CHUNK_BYTES = 64 * 1024


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """``path`` as a tmpfs of ``size_bytes``, unmounted afterwards.

    Raises:
        RuntimeError: mounting failed (not root?): these tests need a file system that fills.
    """
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        raise RuntimeError(
            f"cannot mount a tmpfs on {path} (the out-of-disk tests run as root): "
            f"{mount.stderr.strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(path: Path, leave_bytes: int) -> Path:
    """Write a file ``path`` that leaves about ``leave_bytes`` free on its file system (less
    when the file system has less). Returns the file, to be deleted to free the space."""
    with path.open("wb", buffering=0) as file:
        while (room := free_bytes(path.parent) - leave_bytes) > 0:
            try:
                file.write(b"\0" * min(FILLER_CHUNK_BYTES, room))
            except OSError:
                break
    return path

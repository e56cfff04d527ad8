"""Free disk space watermarks: when a broker stops taking work, and when it takes it again.

Theory of operation
-------------------
Zeebe keeps two free-space thresholds on a broker's data directory (``data.disk.freeSpace``):
below ``processing`` it refuses every new client command and pauses processing; below
``replication`` (the lower one) it also stops receiving what other nodes send it. Both are
checked every ``monitoringInterval``; above them again, work resumes by itself. Here the
"received" part is the inter-partition commands (and, once it exists, Raft appends): their
senders retry until acknowledged, so refusing them costs nothing but time.

A write can still fail for lack of space between two readings (another process filled the disk,
monitoring is off, a quota): the partition then refuses the commands of the group it was
writing (see ``broker/partition.py``) and reports it here; processing stays paused for one
monitoring interval and is then tried again, which is how it resumes when monitoring is off.

:func:`decide` is the whole rule, a pure function of a reading, the last write failure and the
time. :class:`DiskMonitor` is the thin shell: it reads ``statvfs`` every interval (the reader and
the clock are injected), keeps the current :class:`DiskVerdict` for partitions to consult without
any I/O, and tells listeners when the verdict changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import attrs

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# zeebe-sim's defaults, far below Zeebe's 2GB / 1GB (see README, "Out of disk"): a local dev
# cluster writes megabytes, and a laptop with a gigabyte free must not refuse work. What stays
# from Zeebe: two thresholds, processing above replication, checked every second.
FREE_SPACE_PROCESSING_BYTES_DEFAULT = 256 * MIB
FREE_SPACE_REPLICATION_BYTES_DEFAULT = 128 * MIB
MONITORING_INTERVAL_S_DEFAULT = 1.0


@attrs.frozen
class DiskConfig:
    """Zeebe's ``zeebe.broker.data.disk`` settings."""

    free_space_processing_bytes: int = FREE_SPACE_PROCESSING_BYTES_DEFAULT
    free_space_replication_bytes: int = FREE_SPACE_REPLICATION_BYTES_DEFAULT
    monitoring_interval_s: float = MONITORING_INTERVAL_S_DEFAULT
    enable_monitoring: bool = True

    def __attrs_post_init__(self) -> None:
        # Zeebe's rule: processing stops before receiving does, so that what is received can
        # still be written.
        if self.free_space_processing_bytes <= self.free_space_replication_bytes:
            raise ValueError(
                f"the free space for processing ({format_bytes(self.free_space_processing_bytes)})"
                " must be greater than the free space for replication "
                f"({format_bytes(self.free_space_replication_bytes)})"
            )


@attrs.frozen
class WriteFailure:
    """A write that failed for lack of space (or an I/O error), and when."""

    reason: str
    at_ms: int


@attrs.frozen
class DiskVerdict:
    """What a broker may do now; a refusal is the reason, None means allowed."""

    processing_refusal: str | None = None
    receive_refusal: str | None = None

    @property
    def state(self) -> tuple[bool, bool]:
        """(processing allowed, receiving allowed): what listeners are told about."""
        return self.processing_refusal is None, self.receive_refusal is None

    @property
    def ok(self) -> bool:
        return self.processing_refusal is None and self.receive_refusal is None


def decide(
    config: DiskConfig,
    free_bytes: int | None,
    failure: WriteFailure | None,
    now_ms: int,
    directory: str = "the data directory",
) -> DiskVerdict:
    """The verdict for a reading of ``free_bytes`` (None: not measured, monitoring is off) and
    the last write failure, at ``now_ms``.

    A reading below a threshold refuses; so does a write failure less than one monitoring
    interval old (then it is tried again, even if no reading says space is back).
    """
    processing: str | None = None
    receive: str | None = None
    if free_bytes is not None and free_bytes < config.free_space_processing_bytes:
        processing = (
            f"Out of disk space: {format_bytes(free_bytes)} free on {directory}, below the "
            f"{format_bytes(config.free_space_processing_bytes)} needed for processing "
            "(ZEEBE_BROKER_DATA_DISK_FREESPACE_PROCESSING)"
        )
        if free_bytes < config.free_space_replication_bytes:
            receive = (
                f"Out of disk space: {format_bytes(free_bytes)} free on {directory}, below the "
                f"{format_bytes(config.free_space_replication_bytes)} needed to receive "
                "(ZEEBE_BROKER_DATA_DISK_FREESPACE_REPLICATION)"
            )
    if failure is not None and processing is None:
        if now_ms - failure.at_ms < round(config.monitoring_interval_s * 1000):
            processing = failure.reason
    return DiskVerdict(processing, receive)


def format_bytes(count: int) -> str:
    for unit, size in (("GB", 1024 * MIB), ("MB", MIB), ("KB", 1024)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return f"{count}B"


def free_bytes_of(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``directory``."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


Listener = Callable[[DiskVerdict], None]


class DiskMonitor:
    """The shell around :func:`decide` for one broker's data directory (see the module
    docstring). ``verdict`` is always current enough to consult on every request."""

    def __init__(
        self,
        config: DiskConfig,
        directory: Path,
        *,
        free_bytes: Callable[[Path], int] = free_bytes_of,
        clock_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
    ) -> None:
        self.config = config
        self.directory = directory
        self._free_bytes = free_bytes
        self._clock_ms = clock_ms
        self._reading: int | None = None
        self._failure: WriteFailure | None = None
        self._listeners: list[Listener] = []
        self.verdict = DiskVerdict()

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` with every new verdict (from the event loop's thread)."""
        self._listeners.append(listener)

    def check(self) -> DiskVerdict:
        """Read the free space (if monitoring is on) and update the verdict.

        Raises:
            OSError: the free space cannot be read (the directory is gone).
        """
        if self.config.enable_monitoring:
            self._reading = self._free_bytes(self.directory)
        self._update()
        return self.verdict

    def write_failed(self, reason: str) -> None:
        """A partition could not write: pause processing for one interval."""
        self._failure = WriteFailure(reason, self._clock_ms())
        self._update()

    def _update(self) -> None:
        verdict = decide(
            self.config, self._reading, self._failure, self._clock_ms(), str(self.directory)
        )
        previous, self.verdict = self.verdict, verdict
        if verdict.state == previous.state:
            # the same decision, only a new reading in the reason
            return
        if verdict.ok:
            log.warning("disk space is available again on %s; resuming", self.directory)
        else:
            log.warning("%s", verdict.processing_refusal or verdict.receive_refusal)
        for listener in self._listeners:
            listener(verdict)

    async def run(self) -> None:
        """Check every monitoring interval, until cancelled. A reading that fails is logged
        and keeps the previous verdict."""
        while True:
            try:
                self.check()
            except OSError as exc:
                log.error("cannot read the free space of %s: %s", self.directory, exc)
            await asyncio.sleep(self.config.monitoring_interval_s)

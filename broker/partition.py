"""One partition: the asyncio shell around the log, the engine and the snapshot store.

Theory of operation
-------------------
Commands arrive in a bounded inbox (from the gateway or from other partitions). A single
processing task takes everything waiting, and for each command: appends it to the log as its own
entry, lets the engine process it, appends the follow-up records as one entry. Then it fsyncs
once for the whole group (group commit: one fsync costs ~0.2 ms, so a per-record fsync would cap
a partition near 5,000 records/s) and only then carries out the effects: answers requesters,
sends inter-partition commands, starts backups. A crash before the fsync loses only commands
nobody was told about; nothing acknowledged is lost.

The decisions (checkpoint first, retries, when to snapshot, what a backup holds, how far to
compact) are made by the pure core, ``broker/core.py``; this module carries them out.

Maintenance that must not race with writing (snapshot state copy, compaction, handing segment
lists to a backup) runs in the processing task between two groups, so it never needs locks. The
expensive part of a snapshot (serialising and fsyncing) runs in the background afterwards on a
frozen copy of the state (see ``engine/state.py``).

Start-up recovers: newest valid snapshot, replay of the events after it, then processing of the
commands that were written but not processed (e.g. the trailing ``CHECKPOINT CREATE`` of a
restored backup).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import msgpack

from broker.core import (
    BackupPlan,
    Command,
    Outgoing,
    PartitionCore,
    PartitionView,
    Release,
    plan_backup,
)
from broker.core import PartitionConfig as PartitionConfig  # re-exported: the partition's settings
from broker.engine.processor import Engine, ProcessingResult, Response, Send
from broker.engine.state import COLUMN_FAMILIES, State
from broker.waiters import Waiters
from storage.log import SegmentedLog
from storage.snapshots import Snapshot, SnapshotId, SnapshotStore
from zeebe_sim.ground.errors import ResourceExhausted
from zeebe_sim.ground.records import Record, decode_records, encode_records
from zeebe_sim.ground.tasks import OwnedTasks

log = logging.getLogger(__name__)

STATE_FILE = "state.msgpack"
# Commands waiting in a partition's inbox before new requests are refused (backpressure).
INBOX_COMMANDS_MAX = 10_000
# Commands processed in one group commit; bounds the latency of the first one in the group.
GROUP_COMMANDS_MAX = 500
# Entries of a column family serialised between two yields to the event loop while a snapshot
# is written, so processing never waits long for the loop.
SNAPSHOT_CHUNK_ENTRIES = 1_000
TICK_S = 0.05


@attrs.frozen
class _Queued:
    command: Command
    reply: asyncio.Future[Response] | None


SendFn = Callable[[Send, int], None]
# Called in the processing task once a new checkpoint is durable, with the backup's plan and
# what can hold its files (starts the backup).
CheckpointFn = Callable[[BackupPlan, "Partition"], None]


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class Partition:
    def __init__(
        self,
        partition_id: int,
        partition_count: int,
        directory: Path,
        config: PartitionConfig,
        send: SendFn,
        *,
        on_checkpoint: CheckpointFn | None = None,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.partition_id = partition_id
        self.partition_count = partition_count
        self.directory = directory
        self.config = config
        self._send = send
        self._on_checkpoint = on_checkpoint
        self._clock_ms = clock_ms
        self.waiters = Waiters(clock_ms)  # parked gateway requests (see broker/waiters.py)
        self._inbox: collections.deque[_Queued] = collections.deque()
        self._wakeup = asyncio.Event()
        self._tasks = OwnedTasks(f"partition {partition_id}")
        self._maintenance: list[Callable[[], None]] = []
        self.ready = False
        self.processed_position = 0
        self.records_written = 0
        self.longest_pause_ms = 0.0
        self.log: SegmentedLog
        self.snapshots: SnapshotStore
        self.state: State
        self.engine: Engine
        self.core: PartitionCore

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.snapshots = SnapshotStore.open(self.directory / "snapshots")
        self.log = SegmentedLog.open(
            self.directory / "log", segment_bytes_max=self.config.segment_bytes_max
        )
        # Written before the crash (or the restore) but never processed: process them now.
        results = [self._process_written(command) for command in self._recover()]
        await asyncio.to_thread(self.log.flush)
        self.core.reset_retries(_monotonic_ms())
        self._tasks.spawn(self._run())
        self._tasks.spawn(self._timers())
        self.ready = True
        for result in results:
            self._carry_out(None, result, _monotonic_ms())
        log.info(
            "partition started",
            extra={"partition": self.partition_id, "position": self.log.last_position},
        )

    async def stop(self) -> None:
        self.ready = False
        await self._tasks.stop()
        self.log.close()

    # -- recovery -----------------------------------------------------------------------------

    def _recover(self) -> list[Record]:
        snapshot = self.snapshots.latest()
        if snapshot is not None:
            snapshot.verify()
            self.state = State.from_snapshot(self.partition_id, read_snapshot_state(snapshot))
            self.processed_position = snapshot.processed_position
            skip_until = snapshot.last_followup_event_position
        else:
            self.state = State(self.partition_id)
            self.processed_position = 0
            skip_until = 0
        self.engine = Engine(self.state, self.partition_count)
        self.core = PartitionCore(self.engine, self.config)
        self.processed_position, unprocessed = self.engine.replay(
            read_records(self.log, self.processed_position + 1),
            skip_until,
            self.processed_position,
        )
        return unprocessed

    # -- the inbox ----------------------------------------------------------------------------

    def submit(
        self, value_type: str, intent: str, key: int, value: dict[str, Any]
    ) -> asyncio.Future[Response]:
        """Queue a command from a client; the future resolves once it is processed and durable.

        Raises:
            ResourceExhausted: the inbox is full (backpressure, HTTP 503 / gRPC
                RESOURCE_EXHAUSTED in Zeebe).
        """
        if len(self._inbox) >= INBOX_COMMANDS_MAX or not self.ready:
            raise ResourceExhausted(
                f"Expected to handle the request on partition {self.partition_id}, but it "
                "is currently overloaded or starting up"
            )
        reply: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._inbox.append(_Queued(Command(value_type, intent, key, value), reply))
        self._wakeup.set()
        return reply

    def receive(
        self, value_type: str, intent: str, key: int, value: dict[str, Any], checkpoint_id: int
    ) -> None:
        """Queue a command sent by another partition (or this one). Dropped when the inbox is
        full: the sender retries until acknowledged."""
        if len(self._inbox) >= INBOX_COMMANDS_MAX or not self.ready:
            return
        self._inbox.append(_Queued(Command(value_type, intent, key, value, checkpoint_id), None))
        self._wakeup.set()

    # -- processing ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._inbox or self._maintenance:
                await self._process_group()

    async def _process_group(self) -> None:
        group: list[tuple[asyncio.Future[Response] | None, ProcessingResult]] = []
        while self._inbox and len(group) < GROUP_COMMANDS_MAX:
            queued = self._inbox.popleft()
            checkpoint = self.core.checkpoint_before(queued.command)
            if checkpoint is not None:
                group.append((None, self._process(checkpoint)))
            group.append((queued.reply, self._process(queued.command)))
        if group:
            await asyncio.to_thread(self.log.flush)
            now_ms = _monotonic_ms()
            for reply, result in group:
                self._carry_out(reply, result, now_ms)
        if self._maintenance:
            started = time.perf_counter()
            for task in self._maintenance:
                task()
            self._maintenance.clear()
            self._note_pause(started)

    def _note_pause(self, started: float) -> None:
        """Record work done on the processing path that is not processing (snapshot, backup
        start): the longest such pause is a reported figure (target: under 10 ms)."""
        self.longest_pause_ms = max(self.longest_pause_ms, (time.perf_counter() - started) * 1000)

    def _process(self, command: Command) -> ProcessingResult:
        record = command.record(self.log.last_position + 1, self._clock_ms())
        self.log.append(record.position, 1, encode_records([record]))
        self.records_written += 1
        return self._process_written(record)

    def _process_written(self, command: Record) -> ProcessingResult:
        first = self.log.last_position + 1
        result = self.engine.process(command, first)
        self.log.append(first, len(result.records), encode_records(result.records))
        self.processed_position = command.position
        self.records_written += len(result.records)
        return result

    def _carry_out(
        self, reply: asyncio.Future[Response] | None, result: ProcessingResult, now_ms: int
    ) -> None:
        if reply is not None and not reply.done():
            assert result.response is not None
            reply.set_result(result.response)
        self._send_all(self.core.outgoing(result, now_ms))
        self.waiters.notify(result.wakeups)
        if result.checkpoint_created is not None and self._on_checkpoint is not None:
            checkpoint_id, position = result.checkpoint_created
            started = time.perf_counter()
            plan = plan_backup(
                self.partition_id,
                checkpoint_id,
                position,
                self.snapshots.all(),
                self.log.segments(),
            )
            self._on_checkpoint(plan, self)
            self._note_pause(started)

    def _send_all(self, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            self._send(out.send, out.checkpoint_id)

    # -- timers: deadlines and retries --------------------------------------------------------

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.waiters.expire()
            for value_type, intent, key in self.engine.due_commands(self._clock_ms()):
                self._inbox.append(_Queued(Command(value_type, intent, key, {}), None))
                self._wakeup.set()
            now_ms = _monotonic_ms()
            self._send_all(self.core.due_retries(now_ms))
            if self.core.snapshot_due(now_ms):
                self.request_snapshot()

    # -- snapshots and compaction -------------------------------------------------------------

    def request_snapshot(self) -> asyncio.Future[Snapshot | None]:
        """Take a snapshot soon (between two processing groups); resolves when it is durable,
        with None when there is nothing new to snapshot."""
        done: asyncio.Future[Snapshot | None] = asyncio.get_running_loop().create_future()

        def begin() -> None:
            snapshot_id = self.core.begin_snapshot(
                PartitionView(self.processed_position, self.log.last_index, self.snapshots.latest())
            )
            if snapshot_id is None:
                done.set_result(None)
                return
            view = self.state.copy_for_snapshot()
            self._tasks.spawn(self._write_snapshot(snapshot_id, self.log.last_position, view, done))

        self._maintenance.append(begin)
        self._wakeup.set()
        return done

    async def _write_snapshot(
        self,
        snapshot_id: SnapshotId,
        last_followup_position: int,
        view: dict[str, Any],
        done: asyncio.Future[Snapshot | None],
    ) -> None:
        try:
            chunks: list[bytes] = []
            serialiser = _serialise_state(view)
            while True:
                # Each chunk is serialised on the loop, between processing groups: it is a
                # processing pause, so it is measured as one.
                started = time.perf_counter()
                chunk = next(serialiser, None)
                self._note_pause(started)
                if chunk is None:
                    break
                chunks.append(chunk)
                await asyncio.sleep(0)
            pending = self.snapshots.begin(snapshot_id, last_followup_position)
            await asyncio.to_thread(pending.write_file, STATE_FILE, chunks)
            snapshot = await asyncio.to_thread(self.snapshots.persist, pending)
            log.info(
                "snapshot taken",
                extra={"partition": self.partition_id, "snapshot": str(snapshot.id)},
            )
            self._maintenance.append(self._compact)
            self._wakeup.set()
            done.set_result(snapshot)
        except Exception as exc:
            log.exception("snapshot failed", extra={"partition": self.partition_id})
            if not done.done():
                done.set_exception(exc)
        finally:
            self.core.snapshot_ended()

    def hold(self, plan: BackupPlan) -> Release:
        """Keep the plan's snapshot and log segments until the returned function is called
        (the partition's side of :class:`broker.core.BackupSource`)."""
        reservation = self.snapshots.reserve(plan.snapshot.id) if plan.snapshot else None
        owner = object()
        self.core.hold_log(owner, plan.log_from_position)

        def release() -> None:
            if reservation is not None:
                reservation.release()
            self.core.release_log(owner)

        return release

    def _compact(self) -> None:
        floor = self.core.compaction_floor(self.snapshots.latest())
        if floor is not None:
            self.log.compact(floor)

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        latest = self.snapshots.latest()
        return {
            "role": "LEADER" if self.ready else "INACTIVE",
            "processedPosition": self.processed_position,
            "snapshotId": str(latest.id) if latest else None,
            "processedPositionInSnapshot": latest.processed_position if latest else None,
            "streamProcessorPhase": "PROCESSING" if self.ready else "REPLAY",
            "exporterPhase": "EXPORTING",
            "exportedPosition": self.processed_position,
            "checkpointId": self.state.checkpoint_id,
            "checkpointPosition": self.state.checkpoint_position,
        }


def _serialise_state(view: dict[str, Any]) -> Iterator[bytes]:
    """The snapshot file as msgpack chunks: the meta map, then per column family its name, its
    size and its entries as [key, value] pairs; each chunk is little work, so the caller can
    yield to the loop between them."""
    packer = msgpack.Packer(use_bin_type=True)
    yield packer.pack(view["meta"])
    for name in COLUMN_FAMILIES:
        family: dict[Any, Any] = view[name]  # a frozen copy: safe to iterate lazily
        yield packer.pack(name) + packer.pack(len(family))
        items = iter(family.items())
        while chunk := list(itertools.islice(items, SNAPSHOT_CHUNK_ENTRIES)):
            yield b"".join(packer.pack([k, v]) for k, v in chunk)


def read_snapshot_state(snapshot: Snapshot) -> dict[str, Any]:
    """Load a snapshot's state file back into a column-family view."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 31)
    unpacker.feed((snapshot.directory / STATE_FILE).read_bytes())
    view: dict[str, Any] = {"meta": next(unpacker)}
    for name in unpacker:
        count = next(unpacker)
        family = {}
        for _ in range(count):
            key, value = next(unpacker)
            family[key] = value
        view[name] = family
    return view


def read_records(log_: SegmentedLog, from_position: int) -> Iterator[Record]:
    for entry in log_.entries_from(from_position):
        for record in decode_records(entry.payload):
            if record.position >= from_position:
                yield record

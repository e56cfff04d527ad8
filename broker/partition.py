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

Out of disk (``broker/disk.py``): while the broker's disk verdict refuses processing, client
commands are answered RESOURCE_EXHAUSTED at once and the inbox is not processed (commands from
other partitions and timers wait in it). A group whose writing fails (ENOSPC, EIO) is answered
RESOURCE_EXHAUSTED, never acknowledged; the log is reopened and cut back to the end of the last
durable group and the state rebuilt from snapshot and log, so what the refused commands did in
memory is gone too. Processing resumes when the verdict allows it again.

Errors: a command whose processing fails is rejected (``PROCESSING_ERROR``) with an ``ERROR``
record and processing goes on (see ``engine/processor.py``); effects that fail (a send, a backup
start, maintenance) are logged and cost only themselves. If processing itself cannot go on (a
failure other than a write), the partition is DEAD: it says so in its health and answers every
request with an error instead of leaving it to time out. Background loops are supervised:
restarted with backoff, and UNHEALTHY while they fail.

Start-up recovers: newest valid snapshot, replay of the events after it, then processing of the
commands that were written but not processed (e.g. the trailing ``CHECKPOINT CREATE`` of a
restored backup).

Replicated (a replication factor above 1): the partition is one replica of a Raft group, and
``broker/replica.py`` owns its Raft core. Only the leader processes; a processed group is
appended and proposed in one synchronous step, and its answers and effects wait until the
group is committed instead of until the fsync. Followers' state follows the committed entries;
start-up loads only the snapshot (the rest is applied as the core learns what is committed).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import msgpack

from broker.core import (
    BackupJob,
    BackupPlan,
    Command,
    Outgoing,
    PartitionCore,
    PartitionView,
    Release,
)
from broker.core import PartitionConfig as PartitionConfig  # re-exported: the partition's settings
from broker.disk import DiskMonitor, DiskVerdict
from broker.engine.processor import Engine, ProcessingResult, Response, Send
from broker.engine.state import COLUMN_FAMILIES, State
from broker.replica import Awaiting, Replica, ReplicaConfig, entry_data
from broker.replica import SendFn as PeerSendFn
from broker.waiters import Waiters
from storage.log import SegmentedLog
from storage.snapshots import Snapshot, SnapshotId, SnapshotStore
from zeebe_sim.ground.errors import InternalError, PartitionLeaderMismatch, ResourceExhausted
from zeebe_sim.ground.layout import LOG_DIR, SNAPSHOTS_DIR, STATE_FILE
from zeebe_sim.ground.records import Record, decode_records
from zeebe_sim.ground.tasks import OwnedTasks, in_thread

log = logging.getLogger(__name__)

# Commands waiting in a partition's inbox before new requests are refused (backpressure).
INBOX_COMMANDS_MAX = 10_000
# Commands processed in one group commit; bounds the latency of the first one in the group.
GROUP_COMMANDS_MAX = 500
# Entries of a column family serialised between two yields to the event loop while a snapshot
# is written, so processing never waits long for the loop.
SNAPSHOT_CHUNK_ENTRIES = 1_000
TICK_S = 0.05
# Entries after its snapshot a replica's Raft core may hold (in memory) before a snapshot is
# taken whatever the snapshot period.
RAFT_ENTRIES_IN_MEMORY_MAX = 100_000
# How long a replica that cannot process (yet) waits before looking at its inbox again.
IDLE_S = 0.005
# How soon a log that could not be reopened after a failed write is tried again.
REOPEN_RETRY_S = 1.0


@attrs.frozen
class _Queued:
    command: Command
    reply: asyncio.Future[Response] | None


SendFn = Callable[[Send, int], None]
# Called in the processing task once a command with backup work is durable, with each job (a
# backup's plan, a metadata sync, a deletion) and what can hold a backup's files.
CheckpointFn = Callable[[BackupJob, "Partition"], None]


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
        disk: DiskMonitor | None = None,
        replication: ReplicaConfig | None = None,
        send_to_peer: PeerSendFn | None = None,
        on_leader_change: Callable[[int, bool, int], None] | None = None,
    ) -> None:
        """``replication``: this replica's place in a replicated partition (None: the only
        replica, which leads always); ``send_to_peer(node, message)`` carries Raft messages."""
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
        self._disk = disk
        # set while the log is being reopened after a failed write: why commands are refused
        self._reopening: str | None = None
        # why the last group could not be written, until one is written again
        self._write_failure: str | None = None
        # why the broker paused processing (its RECOVERING mode, broker/recovery.py), or None
        self.paused: str | None = None
        if disk is not None:
            disk.listen(self._disk_changed)
        self.ready = False
        # why processing stopped for good (DEAD), None while it runs
        self.failure: str | None = None
        self._taken: list[_Queued] = []  # the commands of the group being processed
        self.processed_position = 0
        self.records_written = 0
        self.longest_pause_ms = 0.0
        self.log: SegmentedLog
        self.snapshots: SnapshotStore
        self.state: State
        self.engine: Engine
        self.core: PartitionCore
        self.replica: Replica | None = None
        # (partition id, leading, latest checkpoint id): backups follow leadership
        self._on_leader_change = on_leader_change
        if replication is not None:
            assert send_to_peer is not None
            self.replica = Replica(self, replication, send_to_peer)
        # the proposal of the group being processed (replicated partitions)
        self._proposal: list[bytes] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.snapshots = SnapshotStore.open(self.directory / SNAPSHOTS_DIR)
        self.log = SegmentedLog.open(
            self.directory / LOG_DIR, segment_bytes_max=self.config.segment_bytes_max
        )
        if self.replica is not None:
            # a fresh shell: a restart (in-place restore) keeps nothing of the old history
            self.replica = Replica(self, self.replica.config, self.replica.send)
            await self._start_replica(self.replica)
            return
        unprocessed = self._recover()
        self.core = PartitionCore(self.engine, self.config)
        try:
            # Written before the crash (or the restore) but never processed: process them now.
            results = [self._process_written(command) for command in unprocessed]
            await in_thread(self.log.flush)
        except Exception as exc:
            # Reported as DEAD in the topology rather than taking the whole broker down.
            self.processing_stopped(exc)
            self.ready = True
            return
        self.core.reset_retries(_monotonic_ms())
        self._tasks.spawn(self._run())
        self._tasks.supervise("timers", self._timers)
        self.ready = True
        for result in results:
            self.carry_out(None, result, _monotonic_ms())
        log.info(
            "partition started",
            extra={"partition": self.partition_id, "position": self.log.last_position},
        )

    async def _start_replica(self, replica: Replica) -> None:
        """A replica of a replicated partition: its state from its snapshot only; committed
        entries are applied as the core learns they are (see ``broker/replica.py``)."""
        snapshot = self.snapshots.latest()
        if snapshot is not None:
            snapshot.verify()
        self.load_state(snapshot)
        self.core = PartitionCore(self.engine, self.config)
        replica.recover(snapshot)
        self._tasks.spawn(replica.run())
        self._tasks.spawn(replica.tick())
        self._tasks.spawn(self._run())
        self._tasks.supervise("timers", self._timers)
        self.ready = True

    def load_state(self, snapshot: Snapshot | None) -> None:
        """State and engine as of ``snapshot`` (empty without one)."""
        if snapshot is not None:
            self.state = State.from_snapshot(self.partition_id, read_snapshot_state(snapshot))
            self.processed_position = snapshot.processed_position
        else:
            self.state = State(self.partition_id)
            self.processed_position = 0
        self.engine = Engine(self.state, self.partition_count)
        if hasattr(self, "core"):
            self.core.engine = self.engine

    @property
    def leading(self) -> bool:
        """Whether this replica processes: always without replication, else while it leads."""
        return self.replica is None or self.replica.can_process

    @property
    def role(self) -> str:
        """For topology: LEADER, FOLLOWER, CANDIDATE or INACTIVE (starting)."""
        if not self.ready:
            return "INACTIVE"
        if self.replica is None:
            return "LEADER"
        return self.replica.role.name

    def lead(self, unprocessed: list[Record]) -> None:
        """This replica became the leader and applied everything committed: process what was
        written but never processed (as recovery does), then take commands."""
        now_ms = _monotonic_ms()
        self.core.engine = self.engine
        self.core.reset_retries(now_ms)
        assert self.replica is not None
        results: list[Awaiting] = []
        for command in unprocessed:
            result = self._process_written(command)
            results.append((self.log.last_index, None, result))
        self.replica.propose(self._take_proposal(), results)
        log.info("partition %s: leading, %d unprocessed", self.partition_id, len(unprocessed))
        if self._on_leader_change is not None:
            latest = self.engine.backup_runtime_state()[0]
            # a MARKER has no backup to reconcile
            takes_backup = latest is None or latest.checkpoint_type.takes_backup
            checkpoint_id = self.state.checkpoint_id if takes_backup else 0
            self._on_leader_change(self.partition_id, True, checkpoint_id)
        self._wakeup.set()

    def step_down(
        self, error: PartitionLeaderMismatch, replies: list[asyncio.Future[Response] | None]
    ) -> None:
        """No longer the leader: fail what waits for an answer; stop processing."""
        replies = replies + [q.reply for q in self._inbox]
        self._inbox.clear()
        if self._on_leader_change is not None:
            self._on_leader_change(self.partition_id, False, self.state.checkpoint_id)
        for reply in replies:
            if reply is not None and not reply.done():
                reply.set_exception(error)

    def _take_proposal(self) -> list[bytes]:
        proposal, self._proposal = self._proposal, []
        return proposal

    async def stop(self) -> None:
        self.ready = False
        await self._tasks.stop()
        self.log.close()

    async def restart(self) -> None:
        """Start again from what the directory holds now (an in-place restore replaced it):
        nothing queued for the old history survives."""
        self._inbox.clear()
        self._maintenance.clear()
        self.failure = self._write_failure = None
        await self.start()

    def pause(self, reason: str | None) -> None:
        """Stop processing commands for ``reason`` (queued client commands are answered
        RESOURCE_EXHAUSTED), or resume with None."""
        self.paused = reason
        if reason is not None:
            self._refuse_queued(ResourceExhausted(reason))
        self._wakeup.set()

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
            ResourceExhausted: out of disk space (see ``broker/disk.py``).
        """
        if self.failure is not None:
            raise InternalError(f"Partition {self.partition_id} is dead: {self.failure}")
        if self.replica is not None and not self.replica.can_process:
            raise self.replica.not_leader()
        refusal = self._disk_refusal()
        if refusal is not None:
            raise ResourceExhausted(refusal)
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
        full or the disk below the replication threshold: the sender retries until
        acknowledged."""
        if (
            len(self._inbox) >= INBOX_COMMANDS_MAX
            or not self.ready
            or self._receive_refused()
            or self.failure is not None
            or not self.leading
        ):
            return
        self._inbox.append(_Queued(Command(value_type, intent, key, value, checkpoint_id), None))
        self._wakeup.set()

    # -- processing ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while (self._inbox and self._disk_refusal() is None) or self._maintenance:
                    replica = self.replica
                    if replica is not None:
                        if self._maintenance or replica.backlogged:
                            # a snapshot is of committed state only; and a leader does not run
                            # far ahead of its followers
                            await replica.drained.wait()
                        processed = self.log.last_index
                        await self._process_group()
                        # let the replica's executor run; while this replica cannot process
                        # (stepping down, or its log not yet caught up), do not spin
                        idle = self.log.last_index == processed and not self._maintenance
                        await asyncio.sleep(IDLE_S if idle else 0)
                        continue
                    await self._process_group()
        except Exception as exc:
            # Not restarted: the log and the state may disagree now (a command written without
            # its follow-ups); a restart recovers both from disk.
            self.processing_stopped(exc)

    def processing_stopped(self, exc: Exception) -> None:
        self.failure = f"processing stopped: {type(exc).__name__}: {exc}"
        log.critical("partition %s is dead: %s", self.partition_id, self.failure, exc_info=exc)
        error = InternalError(f"Partition {self.partition_id} is dead: {self.failure}")
        replies = [q.reply for q in self._taken] + [q.reply for q in self._inbox]
        self._inbox.clear()
        for reply in replies:
            if reply is not None and not reply.done():
                reply.set_exception(error)

    async def _process_group(self) -> None:
        group: list[tuple[asyncio.Future[Response] | None, ProcessingResult]] = []
        taken: list[_Queued] = []
        self._taken = taken  # answered if processing stops
        durable_position = self.log.last_position
        if self.replica is not None:
            # maintenance first: the processing loop waited until everything processed is
            # committed, so a snapshot now is of committed state
            self._run_maintenance()
            self._process_replicated_group(self.replica, taken)
            return
        try:
            while self._inbox and len(group) < GROUP_COMMANDS_MAX and self._disk_refusal() is None:
                queued = self._inbox.popleft()
                taken.append(queued)
                checkpoint = self.core.checkpoint_before(queued.command)
                if checkpoint is not None:
                    group.append((None, self._process(checkpoint)))
                group.append((queued.reply, self._process(queued.command)))
            if group:
                await in_thread(self.log.flush)
                self._write_failure = None
        except (ResourceExhausted, OSError) as exc:
            await self._write_failed(taken, durable_position, exc)
            return
        if group:
            now_ms = _monotonic_ms()
            for reply, result in group:
                self.carry_out(reply, result, now_ms)
        self._taken = []
        self._run_maintenance()

    def _process_replicated_group(self, replica: Replica, taken: list[_Queued]) -> None:
        """Process a group as the leader: append it, propose it; its answers and effects wait
        for commitment (``Replica.propose``). Nothing here awaits: the log and the core never
        disagree."""
        if not replica.can_process or self.log.last_index != replica.core.last_index:
            return
        results: list[Awaiting] = []
        try:
            while (
                self._inbox and len(results) < GROUP_COMMANDS_MAX and self._disk_refusal() is None
            ):
                queued = self._inbox.popleft()
                taken.append(queued)
                checkpoint = self.core.checkpoint_before(queued.command)
                if checkpoint is not None:
                    checkpoint_result = self._process(checkpoint)
                    results.append((self.log.last_index, None, checkpoint_result))
                result = self._process(queued.command)
                results.append((self.log.last_index, queued.reply, result))
        except (ResourceExhausted, OSError) as exc:
            # Out of disk mid-group: the group is refused, its entries cut from the log and
            # the state rebuilt from the snapshot and the entries the core holds.
            self._proposal = []
            self.log.truncate_from_index(replica.core.last_index + 1)
            replica.reset_state(self.snapshots.latest())
            replica.apply_to(replica.core.last_index)
            error = ResourceExhausted(
                f"Expected to write to the log of partition {self.partition_id}, but "
                f"writing failed: {exc}"
            )
            for queued in taken:
                if queued.reply is not None and not queued.reply.done():
                    queued.reply.set_exception(error)
            self._taken = []
            return
        replica.propose(self._take_proposal(), results)
        self._taken = []

    def _run_maintenance(self) -> None:
        if self._maintenance:
            started = time.perf_counter()
            for task in self._maintenance:
                try:
                    task()
                except Exception:
                    log.exception("partition %s: maintenance failed", self.partition_id)
            self._maintenance.clear()
            self._note_pause(started)

    def _note_pause(self, started: float) -> None:
        """Record work done on the processing path that is not processing (snapshot, backup
        start): the longest such pause is a reported figure (target: under 10 ms)."""
        self.longest_pause_ms = max(self.longest_pause_ms, (time.perf_counter() - started) * 1000)

    def _process(self, command: Command) -> ProcessingResult:
        prepared = self.core.prepare(command, self.log.last_position + 1, self._clock_ms())
        if prepared.rejected is not None:
            log.error(
                "partition %s: command not written",
                self.partition_id,
                exc_info=prepared.rejected.error,
            )
            return prepared.rejected
        self._append(prepared.record.position, 1, prepared.payload)
        self.records_written += 1
        return self._process_written(prepared.record)

    def _process_written(self, command: Record) -> ProcessingResult:
        first = self.log.last_position + 1
        result = self.engine.process(command, first)
        if result.error is not None:
            log.error(
                "partition %s: processing %s %s at position %s failed; rejected",
                self.partition_id,
                command.value_type,
                command.intent,
                command.position,
                exc_info=result.error,
            )
        self._append(first, len(result.records), result.payload)
        self.processed_position = command.position
        self.records_written += len(result.records)
        return result

    def _append(self, first_position: int, record_count: int, payload: bytes) -> None:
        if self.replica is None:
            self.log.append(first_position, record_count, payload, 1)
            return
        self.log.append(first_position, record_count, payload, self.replica.core.term)
        self._proposal.append(entry_data(first_position, record_count, payload))

    def carry_out(
        self, reply: asyncio.Future[Response] | None, result: ProcessingResult, now_ms: int
    ) -> None:
        if reply is not None and not reply.done():
            assert result.response is not None
            reply.set_result(result.response)
        self._send_all(self.core.outgoing(result, now_ms))
        self.waiters.notify(result.wakeups)
        if result.backup_work and self._on_checkpoint is not None:
            started = time.perf_counter()
            jobs = self.core.backup_jobs(
                self.partition_id, result.backup_work, self.snapshots.all(), self.log.segments()
            )
            for job in jobs:
                try:
                    self._on_checkpoint(job, self)
                except Exception:
                    log.exception("partition %s: cannot start %s", self.partition_id, job)
            self._note_pause(started)

    def _send_all(self, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            try:
                self._send(out.send, out.checkpoint_id)
            except Exception:
                # Lost like on the network: a send that matters is retried until acknowledged.
                log.exception("partition %s: cannot send %s", self.partition_id, out.send)

    # -- out of disk ----------------------------------------------------------------------------

    def _disk_refusal(self) -> str | None:
        """Why processing is paused (for lack of disk space, or by the broker), None while it
        is not."""
        if self._reopening is not None:
            return self._reopening
        if self.paused is not None:
            return self.paused
        return self._disk.verdict.processing_refusal if self._disk is not None else None

    def _receive_refused(self) -> bool:
        if self._reopening is not None or self.paused is not None:
            return True
        return self._disk is not None and self._disk.verdict.receive_refusal is not None

    def _disk_changed(self, verdict: DiskVerdict) -> None:
        if verdict.processing_refusal is not None:
            # Waiting would only turn into a gateway timeout (504): answer now (503).
            self._refuse_queued(ResourceExhausted(verdict.processing_refusal))
        self._wakeup.set()

    def _refuse_queued(self, error: ResourceExhausted) -> None:
        for queued in self._inbox:
            if queued.reply is not None and not queued.reply.done():
                queued.reply.set_exception(error)
        self._inbox = collections.deque(q for q in self._inbox if q.reply is None)

    async def _write_failed(
        self, taken: list[_Queued], durable_position: int, exc: Exception
    ) -> None:
        """A group could not be written: refuse its commands, cut the log back to
        ``durable_position`` (the end of the last flushed group) and rebuild the state."""
        space = isinstance(exc, ResourceExhausted) or (
            isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        )
        reason = f"Expected to write to the log of partition {self.partition_id}, but " + (
            "the disk is full" if space else f"writing failed: {exc}"
        )
        log.error("%s; %d command(s) refused", reason, len(taken), exc_info=exc)
        self._reopening = reason
        # shown in health until a group is written again
        self._write_failure = reason
        error = ResourceExhausted(reason)

        def refuse() -> None:
            for queued in taken:
                if queued.reply is not None and not queued.reply.done():
                    queued.reply.set_exception(error)

        try:
            if self._disk is not None:
                self._disk.write_failed(reason)
            self.log.close()
            while True:
                try:
                    self.log = await in_thread(self._reopen_log, durable_position)
                    break
                except OSError as reopen_error:
                    log.error(
                        "cannot reopen the log of partition %s: %s", self.partition_id, reopen_error
                    )
                    refuse()  # no one waits for a log that cannot be reopened
                    await asyncio.sleep(REOPEN_RETRY_S)
            # Every flushed group holds its commands' follow-ups: nothing is left unprocessed.
            unprocessed = self._recover()
            assert not unprocessed, unprocessed
            self.core.engine = self.engine
            self.core.reset_retries(_monotonic_ms())
        finally:
            # Refused once the state no longer holds what they did: a client that is told "no"
            # never finds the effects of its command afterwards.
            refuse()
            self._reopening = None

    def _reopen_log(self, durable_position: int) -> SegmentedLog:
        """The log as it was after the last flush: reopened (recovery validates every entry,
        also after a failed fsync) and cut after ``durable_position``."""
        reopened = SegmentedLog.open(
            self.directory / "log", segment_bytes_max=self.config.segment_bytes_max
        )
        try:
            reopened.truncate_after(durable_position)
        except BaseException:
            reopened.close()
            raise
        return reopened

    # -- timers: deadlines and retries --------------------------------------------------------

    async def _timers(self) -> None:
        while self.failure is None:  # a dead partition writes nothing, due commands included
            await asyncio.sleep(TICK_S)
            self.waiters.expire()
            if self.replica is not None and self._raft_log_too_long(self.replica):
                # the Raft core keeps the entries after its snapshot in memory: bound them
                self.request_snapshot()
            if not self.leading:
                if self.replica is not None and self.core.snapshot_due(_monotonic_ms()):
                    self.request_snapshot()
                continue
            for value_type, intent, key in self.engine.due_commands(self._clock_ms()):
                self._inbox.append(_Queued(Command(value_type, intent, key, {}), None))
                self._wakeup.set()
            now_ms = _monotonic_ms()
            self._send_all(self.core.due_retries(now_ms))
            if self.core.snapshot_due(now_ms):
                self.request_snapshot()

    # -- snapshots and compaction -------------------------------------------------------------

    def _raft_log_too_long(self, replica: Replica) -> bool:
        core = replica.core
        base = core.snapshot.index if core.snapshot is not None else 0
        return (
            replica.applied_index - base > RAFT_ENTRIES_IN_MEMORY_MAX
            and not self.core.snapshotting
            and not self._maintenance
        )

    def request_snapshot(self) -> asyncio.Future[Snapshot | None]:
        """Take a snapshot soon (between two processing groups); resolves when it is durable,
        with None when there is nothing new to snapshot."""
        done: asyncio.Future[Snapshot | None] = asyncio.get_running_loop().create_future()

        def begin() -> None:
            replica = self.replica
            # replicated: the state is of the applied index (committed: the processing loop
            # waited), and the snapshot carries that entry's term
            last_index = self.log.last_index if replica is None else replica.applied_index
            snapshot_id = self.core.begin_snapshot(
                PartitionView(self.processed_position, last_index, self.snapshots.latest())
            )
            if snapshot_id is None:
                done.set_result(None)
                return
            last_position: int = self.log.last_position
            if replica is not None:
                snapshot_id = attrs.evolve(snapshot_id, term=replica.applied_term)
                last_position = replica.applied_position
            view = self.state.copy_for_snapshot()
            self._tasks.spawn(self._write_snapshot(snapshot_id, last_position, view, done))

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
            try:
                await in_thread(pending.write_file, STATE_FILE, chunks)
            except BaseException:
                # Out of disk: a partial file must not keep holding the space.
                pending.abort()
                raise
            snapshot = await in_thread(self.snapshots.persist, pending)
            if self.replica is not None:
                self.replica.snapshot_taken(snapshot)
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

    def health(self) -> tuple[str, list[str]]:
        """``HEALTHY``, ``UNHEALTHY`` (a background loop fails and is being restarted, or the
        disk is too full to process) or ``DEAD`` (processing stopped), with the reasons."""
        if self.failure is not None:
            return "DEAD", [self.failure]
        issues = [f"{name}: {reason}" for name, reason in self._tasks.failing().items()]
        disk = self._disk_refusal() or self._write_failure
        if disk is not None:
            issues.append(disk)
        return ("UNHEALTHY", issues) if issues else ("HEALTHY", [])

    def status(self) -> dict[str, Any]:
        latest = self.snapshots.latest()
        return {
            "role": self.role,
            "processedPosition": self.processed_position,
            "snapshotId": str(latest.id) if latest else None,
            "processedPositionInSnapshot": latest.processed_position if latest else None,
            "streamProcessorPhase": "PROCESSING" if self.ready and self.leading else "REPLAY",
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

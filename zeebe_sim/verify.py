"""Cross-partition consistency checks over partitions' logs and snapshots (DESIGN.md invariants).

Theory of operation
-------------------
Each check collects *facts* per partition (from the events in its log and from its snapshot's
state, which stands for the events compacted away) and looks for an effect on one partition
whose cause is missing on the partition that must have sent it: an *orphan receive*. In a cut
taken with checkpoint propagation that cannot happen (REFERENCE.md §3); without it, a command
sent after the sender's checkpoint can be received before the receiver's, and the restored
cluster holds an effect without its cause.

When the sender's log no longer starts at position 1 and its snapshot does not show the cause,
the cause may simply have been compacted away; such a case is counted as *unverifiable*, not
reported as a violation.

With replication, a partition has a replica on several brokers. :func:`check` first checks that
the replicas agree (:func:`_check_replicas`), then runs the cross-partition checks on one replica
of each partition (the one with the longest log):

- *Same log*: over the entries every replica still holds, the entries at one index are the same
  (term, positions, bytes). Where they differ, the entries of a strict majority win if every
  dissenting entry from there on has a lower term: that is a deposed leader's uncommitted tail,
  which Raft truncates when that replica rejoins, and it is reported as a note. Anything else
  is a violation naming the first index where the replicas disagree.
- *Same state*: the state each replica rebuilds (its snapshot, then its log's events) at one
  position every replica can reach is the same.

The pure part (:func:`check`) takes :class:`PartitionData`; :func:`load_data_dir` reads a
stopped cluster's data directory without changing a byte of it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from zeebe_sim.ground import layout
from zeebe_sim.ground.records import Record, RecordType, ValueType, decode_records


@attrs.frozen
class EntrySummary:
    """One log entry, as replicas are compared: its place, term and a checksum of its bytes."""

    index: int
    term: int
    first_position: int
    record_count: int
    crc32: int


@attrs.frozen
class PartitionData:
    partition_id: int
    records: list[Record]
    snapshot_state: dict[str, Any] | None = None
    first_position: int = 1  # of the log on disk; > 1 when compacted
    node_id: int | None = None  # the broker holding this replica
    entries: list[EntrySummary] = attrs.Factory(list)
    # the snapshot's processed position and last follow-up event position (0: no snapshot)
    snapshot_position: int = 0
    snapshot_followup_position: int = 0

    @property
    def replica(self) -> str:
        return f"broker {self.node_id}" if self.node_id is not None else "a replica"

    @property
    def log_complete(self) -> bool:
        return self.first_position <= 1


@attrs.frozen
class Violation:
    invariant: str
    partition_id: int
    detail: str


@attrs.define
class Report:
    partitions: int = 0
    replicas: int = 0
    records: int = 0
    checks: int = 0
    unverifiable: int = 0
    checkpoint: int | None = None
    violations: list[Violation] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        replicas = f" ({self.replicas} replicas)" if self.replicas > self.partitions else ""
        lines = [
            f"Checked {self.partitions} partitions{replicas}, {self.records} records, "
            f"{self.checks} cross-partition effects"
            + (f", cut at checkpoint {self.checkpoint}" if self.checkpoint is not None else "")
            + "."
        ]
        lines += [f"note: {n}" for n in self.notes]
        if self.unverifiable:
            lines.append(
                f"note: {self.unverifiable} effects could not be verified (their cause may have "
                "been compacted away on the sender)"
            )
        if self.ok:
            lines.append("OK: every invariant holds.")
        else:
            lines.append(f"FAILED: {len(self.violations)} violation(s):")
            lines += [
                f"  [{v.invariant}] partition {v.partition_id}: {v.detail}" for v in self.violations
            ]
        return "\n".join(lines)


@attrs.define
class _Facts:
    deployments: set[int] = attrs.Factory(set)
    processes: set[int] = attrs.Factory(set)
    # element instance keys whose process-side subscription was opened (CREATING written)
    opening: set[int] = attrs.Factory(set)
    # element instance keys with a message-side subscription
    message_subscriptions: set[int] = attrs.Factory(set)
    # (element instance key, message key) correlations started on the message side
    correlating: set[tuple[int, int]] = attrs.Factory(set)
    # (element instance key, message key) correlated on the process side
    correlated: set[tuple[int, int]] = attrs.Factory(set)
    # (element instance key, message key) correlations the process side rejected
    rejected: set[tuple[int, int]] = attrs.Factory(set)


def _facts(data: PartitionData) -> _Facts:
    facts = _Facts()
    state = data.snapshot_state or {}
    facts.deployments.update(int(k) for k in state.get("deployments", {}))
    facts.processes.update(int(k) for k in state.get("processes", {}))
    for key, sub in state.get("process_subscriptions", {}).items():
        facts.opening.add(int(key))
        if sub.get("state") == "CORRELATED":
            facts.correlated.add((int(key), sub["messageKey"]))
    for sub in state.get("message_subscriptions", {}).values():
        facts.message_subscriptions.add(sub["elementInstanceKey"])
        if sub.get("state") == "CORRELATING":
            facts.correlating.add((sub["elementInstanceKey"], sub["messageKey"]))
    for record in data.records:
        value, kind = record.value, (record.value_type, record.intent)
        if record.record_type == RecordType.COMMAND_REJECTION:
            if kind == (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CORRELATE"):
                facts.rejected.add((value["elementInstanceKey"], value["messageKey"]))
            continue
        if record.record_type != RecordType.EVENT:
            continue
        if kind == (ValueType.DEPLOYMENT, "CREATED"):
            facts.deployments.add(record.key)
        elif kind == (ValueType.PROCESS, "CREATED"):
            facts.processes.add(record.key)
        elif kind == (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATING"):
            facts.opening.add(value["elementInstanceKey"])
        elif kind == (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CORRELATED"):
            facts.correlated.add((value["elementInstanceKey"], value["messageKey"]))
        elif kind == (ValueType.MESSAGE_SUBSCRIPTION, "CREATED"):
            facts.message_subscriptions.add(value["elementInstanceKey"])
        elif kind == (ValueType.MESSAGE_SUBSCRIPTION, "CORRELATING"):
            facts.correlating.add((value["elementInstanceKey"], value["messageKey"]))
    return facts


def _effects(data: PartitionData) -> Iterable[tuple[str, int, Any, str]]:
    """(kind, sender partition, cause, description) for every received effect in the log."""
    for record in data.records:
        if record.record_type != RecordType.EVENT:
            continue
        value, kind = record.value, (record.value_type, record.intent)
        if kind == (ValueType.DEPLOYMENT, "CREATED") and data.partition_id != 1:
            yield "deployments", 1, record.key, f"deployment {record.key} distributed here"
        elif kind == (ValueType.COMMAND_DISTRIBUTION, "ACKNOWLEDGED"):
            yield (
                "deployments",
                value["partitionId"],
                record.key,
                f"acknowledgement of deployment {record.key} by partition {value['partitionId']}",
            )
        elif kind == (ValueType.MESSAGE_SUBSCRIPTION, "CREATED"):
            yield (
                "opening",
                value["processInstanceKey"] >> 51,
                value["elementInstanceKey"],
                f"message subscription for element {value['elementInstanceKey']}",
            )
        elif kind == (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATED"):
            yield (
                "message_subscriptions",
                value["messagePartitionId"],
                value["elementInstanceKey"],
                f"acknowledged subscription of element {value['elementInstanceKey']}",
            )
        elif kind == (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CORRELATED"):
            pair = (value["elementInstanceKey"], value["messageKey"])
            yield (
                "correlating",
                value["messagePartitionId"],
                pair,
                f"correlation of message {pair[1]} to element {pair[0]}",
            )
        elif kind == (ValueType.MESSAGE_SUBSCRIPTION, "CORRELATED"):
            pair = (value["elementInstanceKey"], value["messageKey"])
            yield (
                "correlated",
                value["processInstanceKey"] >> 51,
                pair,
                f"confirmed correlation of message {pair[1]} to element {pair[0]}",
            )
        elif kind == (ValueType.MESSAGE_SUBSCRIPTION, "REJECTED"):
            pair = (value["elementInstanceKey"], value["messageKey"])
            yield (
                "rejected",
                value["processInstanceKey"] >> 51,
                pair,
                f"rejected correlation of message {pair[1]} to element {pair[0]}",
            )


def check(replicas: list[PartitionData]) -> Report:
    """Check every invariant that can be checked on these partitions' replicas."""
    groups: dict[int, list[PartitionData]] = {}
    for data in replicas:
        groups.setdefault(data.partition_id, []).append(data)
    report = Report(partitions=len(groups), replicas=len(replicas))
    for group in groups.values():
        if len(group) > 1:
            _check_replicas(group, report)
    # The cross-partition checks on the most complete replica of each partition.
    partitions = [
        max(group, key=lambda d: (d.records[-1].position if d.records else 0, -(d.node_id or 0)))
        for group in groups.values()
    ]
    by_id = {p.partition_id: p for p in partitions}
    facts = {p.partition_id: _facts(p) for p in partitions}
    report.records = sum(len(p.records) for p in partitions)
    _check_cut(partitions, report)

    for data in partitions:
        for kind, sender, cause, description in _effects(data):
            report.checks += 1
            if sender == data.partition_id or sender not in by_id:
                continue
            if cause in getattr(facts[sender], kind):
                continue
            if not by_id[sender].log_complete:
                report.unverifiable += 1
                continue
            report.violations.append(
                Violation(
                    "no orphan receive",
                    data.partition_id,
                    f"{description}, but partition {sender} has no record of sending it",
                )
            )

    _check_exactly_once(partitions, report)
    if 1 in facts:
        for partition_id, partition_facts in facts.items():
            extra = partition_facts.processes - facts[1].processes
            if partition_id != 1 and extra:
                report.violations.append(
                    Violation(
                        "deployments",
                        partition_id,
                        f"process definitions {sorted(extra)} are not on partition 1",
                    )
                )
    return report


def _check_exactly_once(partitions: list[PartitionData], report: Report) -> None:
    """No element instance (process instances included) completes twice, however often the
    commands that led there were re-sent."""
    for data in partitions:
        completed: set[int] = set()
        for record in data.records:
            if record.record_type == RecordType.EVENT and (record.value_type, record.intent) == (
                ValueType.PROCESS_INSTANCE,
                "ELEMENT_COMPLETED",
            ):
                if record.key in completed:
                    report.violations.append(
                        Violation(
                            "exactly once",
                            data.partition_id,
                            f"element instance {record.key} ({record.value['elementId']}) "
                            "completed twice",
                        )
                    )
                completed.add(record.key)


def _check_cut(partitions: list[PartitionData], report: Report) -> None:
    """Restored clusters: every log ends with CHECKPOINT CREATE of one and the same id."""
    ends: dict[int, int | None] = {}
    for data in partitions:
        last = data.records[-1] if data.records else None
        is_checkpoint = (
            last is not None
            and last.record_type == RecordType.COMMAND
            and (last.value_type, last.intent) == (ValueType.CHECKPOINT, "CREATE")
        )
        ends[data.partition_id] = last.value["checkpointId"] if last and is_checkpoint else None
    ids = {i for i in ends.values() if i is not None}
    if not ids:
        report.notes.append(
            "no log ends at a checkpoint: not a freshly restored cluster, the cut was not checked"
        )
        return
    if len(ids) == 1 and None not in ends.values():
        report.checkpoint = ids.pop()
        return
    for partition_id, checkpoint in sorted(ends.items()):
        report.violations.append(
            Violation(
                "same cut",
                partition_id,
                "log does not end with a checkpoint"
                if checkpoint is None
                else f"log ends with checkpoint {checkpoint}",
            )
        )


def layout_problems(data_dir: Path, partition_count: int) -> list[str]:
    """Why ``data_dir`` cannot be verified as a whole cluster: an unfinished restore, or
    partitions of ``1..partition_count`` found under no broker (a half-restored cluster
    whose present partitions are consistent must not pass as OK). Empty when none.

    Raises:
        RestoreError: an interrupted restore's journal is unreadable.
    """
    from zeebe_sim.restore import unfinished_restore

    unfinished = unfinished_restore(data_dir)
    if unfinished is not None:
        return [unfinished]
    present = {
        int(d.name) for d in layout.partition_dirs(data_dir) if d.name.isdigit() and d.is_dir()
    }
    missing = [p for p in range(1, partition_count + 1) if p not in present]
    if not missing or len(missing) == partition_count:
        # none at all: load_data_dir's "no partitions" message says it better
        return []
    return [
        f"partition {p} is missing: no {data_dir}/broker-*/partitions/{p} directory "
        f"(expected {partition_count} partitions)"
        for p in missing
    ]


def load_data_dir(data_dir: Path) -> list[PartitionData]:
    """Read every partition found under ``<data-dir>/broker-*/partitions/*``, read-only.

    Raises:
        FileNotFoundError: no partition directory was found.
    """
    from broker.partition import read_snapshot_state
    from storage.log import SegmentedLog
    from storage.snapshots import SnapshotStore

    found: list[PartitionData] = []
    for directory in layout.partition_dirs(data_dir):
        if not directory.name.isdigit():
            continue
        log = SegmentedLog.open(directory / layout.LOG_DIR, read_only=True)
        try:
            snapshot = None
            snapshots = directory / layout.SNAPSHOTS_DIR
            if snapshots.is_dir():
                snapshot = SnapshotStore.open(snapshots, read_only=True).latest()
            state = read_snapshot_state(snapshot) if snapshot is not None else None
            # All the log there is: events before the snapshot are facts too.
            records: list[Record] = []
            entries: list[EntrySummary] = []
            for entry in log.entries_from(1):
                if entry.record_count:  # a new Raft leader's no-op entry holds no record
                    records.extend(decode_records(entry.payload))
                entries.append(
                    EntrySummary(
                        entry.index,
                        entry.term,
                        entry.first_position,
                        entry.record_count,
                        zlib.crc32(entry.payload),
                    )
                )
            node = directory.parent.parent.name.removeprefix(layout.BROKER_PREFIX)
            found.append(
                PartitionData(
                    int(directory.name),
                    records,
                    state,
                    log.first_position or 1,
                    node_id=int(node) if node.isdigit() else None,
                    entries=entries,
                    snapshot_position=snapshot.processed_position if snapshot else 0,
                    snapshot_followup_position=(
                        snapshot.last_followup_event_position if snapshot else 0
                    ),
                )
            )
        finally:
            log.close()
    if not found:
        raise FileNotFoundError(f"no partitions under {data_dir}/broker-*/partitions/")
    return sorted(found, key=lambda p: (p.partition_id, p.node_id or 0))


def _check_replicas(group: list[PartitionData], report: Report) -> None:
    """The replicas of one partition hold the same log and rebuild the same state."""
    partition_id = group[0].partition_id
    by_index = [{e.index: e for e in data.entries} for data in group]
    common = set.intersection(*(set(entries) for entries in by_index))
    # States are compared up to where the logs agree (before a deposed leader's tail).
    agreed_position = None
    for index in sorted(common):
        entries = [entries[index] for entries in by_index]
        if len(set(entries)) == 1:
            continue
        majority = max(set(entries), key=entries.count)
        dissenters = [d for d, e in zip(group, entries, strict=True) if e != majority]
        if entries.count(majority) * 2 > len(entries) and all(
            e.term < majority.term for d in dissenters for e in d.entries if e.index >= index
        ):
            names = ", ".join(d.replica for d in dissenters)
            report.notes.append(
                f"partition {partition_id}: {names} hold(s) an uncommitted tail from index "
                f"{index} (older terms than term {majority.term} of the others); Raft "
                "truncates it when the replica rejoins"
            )
            agreed_position = majority.first_position - 1
            break
        detail = "; ".join(
            f"{d.replica} has term {e.term}, positions {e.first_position}.."
            f"{e.first_position + e.record_count - 1}, crc {e.crc32:08x}"
            for d, e in zip(group, entries, strict=True)
        )
        report.violations.append(
            Violation(
                "replicas agree",
                partition_id,
                f"the replicas disagree first at log index {index}: {detail}",
            )
        )
        return
    _check_replica_states(group, report, agreed_position)


def _check_replica_states(
    group: list[PartitionData], report: Report, position_max: int | None
) -> None:
    """Each replica's state at one position all of them can rebuild (and not beyond
    ``position_max``) is the same."""
    partition_id = group[0].partition_id
    ends = [d.records[-1].position if d.records else d.snapshot_position for d in group]
    # Every replica must be able to stop there: past its snapshot (and the snapshot's
    # follow-up events, already in its state), and not beyond its log.
    position = min([*ends, *([position_max] if position_max is not None else [])])
    floor = max(max(d.snapshot_position, d.snapshot_followup_position) for d in group)
    if position < floor:
        report.notes.append(
            f"partition {partition_id}: the replicas' states were not compared (no position "
            "every replica can rebuild: one's snapshot is past another's log)"
        )
        return
    states = [(d, _state_at(d, position)) for d in group]
    first, expected = states[0]
    for data, state in states[1:]:
        if state != expected:
            families = sorted(
                name for name in set(state) | set(expected) if state.get(name) != expected.get(name)
            )
            report.violations.append(
                Violation(
                    "replicas agree",
                    partition_id,
                    f"at position {position}, {data.replica}'s state differs from "
                    f"{first.replica}'s in {families}",
                )
            )
            return


def _state_at(data: PartitionData, position: int) -> dict[str, Any]:
    """The state a replica rebuilds up to ``position``: its snapshot, then its events."""
    from broker.engine.processor import Engine
    from broker.engine.state import State

    if data.snapshot_state is not None:
        state = State.from_snapshot(data.partition_id, data.snapshot_state)
    else:
        state = State(data.partition_id)
    # The partition count only matters for processing; replay applies events.
    Engine(state, 1).replay(
        (r for r in data.records if r.position <= position),
        data.snapshot_followup_position,
        data.snapshot_position,
    )
    plain: dict[str, Any] = _plain(state.copy_for_snapshot())
    return plain


def _plain(value: Any) -> Any:
    """Tuples as lists: a state loaded from a snapshot holds lists where one built by the
    appliers may hold tuples, and the two are the same state."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value

"""Contained processing errors (Zeebe's rule): a command whose processing fails is rolled back,
rejected with PROCESSING_ERROR and recorded with an ERROR record; processing goes on, and a
restart replays past it. The trigger is real: a time to live or an activation timeout so large
that the follow-up record's deadline no longer fits a msgpack integer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from broker.core import Command, PartitionCore
from broker.engine.processor import Engine, ProcessingResult
from broker.engine.state import State
from broker.partition import PartitionConfig, read_records
from storage.log import SegmentedLog
from tests.broker.test_partition import LocalPartition
from tests.scenarios.bpmn_samples import process_xml
from zeebe_sim.ground.errors import ResourceExhausted
from zeebe_sim.ground.ids import PartitionId, encode_key
from zeebe_sim.ground.records import Record, RecordType, ValueType, encode_records
from zeebe_sim.harness import eventually

NOW_MS = 1_700_000_000_000
# msgpack holds integers up to 2**64 - 1: a deadline of now + this does not fit
TOO_LONG_MS = 2**64 - 1


def indexes(state: State) -> tuple[Any, ...]:
    """A copy of the derived indexes and the key generator."""
    return copy.deepcopy(
        (
            state.activatable_jobs,
            sorted(state.job_deadlines),
            sorted(state.message_deadlines),
            state.messages_by_name_key,
            state.subscriptions_by_name_key,
            state.next_key_local,
        )
    )


class Engine1:
    """One partition's engine over an in-memory log."""

    def __init__(self) -> None:
        self.engine = Engine(State(1), 1)
        self.log: list[Record] = []

    def process(
        self, value_type: str, intent: str, key: int = -1, **value: Any
    ) -> ProcessingResult:
        command = Command(value_type, intent, key, value).record(len(self.log) + 1, NOW_MS)
        self.log.append(command)
        result = self.engine.process(command)
        self.log.extend(result.records)
        return result


def test_a_failing_command_leaves_no_trace_in_state_and_is_rejected_with_an_error_record() -> None:
    """The message is published, correlated to a waiting subscription (state changed in four
    column families and the indexes), then its records cannot be encoded: everything is undone,
    the command is answered PROCESSING_ERROR and an ERROR record names its position."""
    node = Engine1()
    node.process(
        ValueType.MESSAGE_SUBSCRIPTION,
        "CREATE",
        7,
        processInstanceKey=encode_key(PartitionId(1), 900),
        elementInstanceKey=encode_key(PartitionId(1), 901),
        messageName="ping",
        correlationKey="k",
        bpmnProcessId="p",
    )
    node.process(ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="other", timeToLive=1)
    before = node.engine.state.copy_for_snapshot()
    before_indexes = indexes(node.engine.state)
    key_before = node.engine.state.next_key_local

    result = node.process(
        ValueType.MESSAGE,
        "PUBLISH",
        name="ping",
        correlationKey="k",
        messageId="m-1",
        timeToLive=TOO_LONG_MS,
    )

    state = node.engine.state
    assert state.copy_for_snapshot() == before
    assert indexes(state) == before_indexes
    assert result.response is not None
    assert result.response.rejection_type == "PROCESSING_ERROR"
    assert "OverflowError" in (result.response.rejection_reason or "")
    assert result.sends == [] and result.resolved == []
    command = node.log[-3]
    rejection, error = result.records
    assert (rejection.record_type, rejection.rejection_type) == (
        RecordType.COMMAND_REJECTION,
        "PROCESSING_ERROR",
    )
    assert (error.value_type, error.intent, error.record_type) == (
        ValueType.ERROR,
        "CREATED",
        RecordType.EVENT,
    )
    assert error.value["errorEventPosition"] == command.position
    assert error.value["exceptionMessage"].startswith("OverflowError")
    assert {r.source_position for r in result.records} == {command.position}
    assert encode_records(result.records) == result.payload

    # Processing goes on: the same message with a sane time to live is published (its id was
    # not taken by the failed one), with the key the failed command did not keep, and correlates.
    again = node.process(
        ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="k", messageId="m-1", timeToLive=1
    )
    assert again.response is not None and again.response.rejection_type is None
    assert again.response.key == encode_key(PartitionId(1), key_before)
    assert [s.intent for s in again.sends] == ["CORRELATE"]


def test_an_activation_whose_deadline_overflows_is_rejected_and_the_jobs_stay_activatable() -> None:
    """The job batch would be ACTIVATED (jobs changed, deadlines indexed), then fails to encode:
    the jobs are activatable again and a later activation gets them."""
    node = Engine1()
    resource = {"resourceName": "p.bpmn", "resource": process_xml("p", message=None)}
    node.process(ValueType.DEPLOYMENT, "CREATE", resources=[resource])
    for _ in range(2):
        node.process(ValueType.PROCESS_INSTANCE_CREATION, "CREATE", bpmnProcessId="p")
    before = node.engine.state.copy_for_snapshot()
    before_indexes = indexes(node.engine.state)
    batch = {"type": "work", "worker": "w", "maxJobsToActivate": 10}

    failed = node.process(ValueType.JOB_BATCH, "ACTIVATE", timeout=TOO_LONG_MS, **batch)

    assert failed.response is not None and failed.response.rejection_type == "PROCESSING_ERROR"
    assert node.engine.state.copy_for_snapshot() == before
    assert indexes(node.engine.state) == before_indexes
    activated = node.process(ValueType.JOB_BATCH, "ACTIVATE", timeout=60_000, **batch)
    assert activated.response is not None
    assert len(activated.response.value["jobs"]) == 2


def test_replay_counts_a_command_with_an_error_record_as_processed() -> None:
    """A log holding a failed command replays into the same state, and nothing is left to
    process: the failed command is not processed again."""
    node = Engine1()
    node.process(ValueType.MESSAGE, "PUBLISH", name="a", correlationKey="k", timeToLive=TOO_LONG_MS)
    node.process(ValueType.MESSAGE, "PUBLISH", name="b", correlationKey="k", timeToLive=60_000)
    replayed = Engine(State(1), 1)
    processed, unprocessed = replayed.replay(node.log, 0, 0)
    assert unprocessed == []
    assert processed == node.log[-1].source_position
    assert replayed.state.copy_for_snapshot() == node.engine.state.copy_for_snapshot()


def test_a_command_that_cannot_be_written_is_rejected_and_not_written() -> None:
    """An integer beyond msgpack's range in a command's value (possible only from a sender in
    this process): PROCESSING_ERROR, and nothing to append."""
    prepared = PartitionCore.prepare(
        Command(ValueType.MESSAGE, "PUBLISH", -1, {"timeToLive": 2**64}), 5, NOW_MS
    )
    assert prepared.rejected is not None and prepared.payload == b""
    response = prepared.rejected.response
    assert response is not None and response.rejection_type == "PROCESSING_ERROR"
    assert prepared.rejected.records == []
    fine = PartitionCore.prepare(Command(ValueType.MESSAGE, "PUBLISH", -1, {"a": 1}), 5, NOW_MS)
    assert fine.rejected is None and fine.payload == encode_records([fine.record])


# -- one partition on real files ----------------------------------------------------------------


async def test_partition_rejects_overflowing_commands_goes_on_and_restarts(tmp_path: Path) -> None:
    """Over the partition's real inbox and log: both overflowing commands are answered with
    PROCESSING_ERROR, the ERROR records are in the log, later commands are processed; after a
    restart the state is the same, nothing is processed twice and processing goes on."""
    node = LocalPartition(tmp_path)
    await node.partition.start()
    partition = node.partition
    await node.command(
        ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="a", timeToLive=60_000
    )
    before = partition.state.copy_for_snapshot()
    publish = await partition.submit(
        ValueType.MESSAGE,
        "PUBLISH",
        -1,
        {"name": "ping", "correlationKey": "b", "timeToLive": TOO_LONG_MS},
    )
    activate = await partition.submit(
        ValueType.JOB_BATCH,
        "ACTIVATE",
        -1,
        {"type": "work", "maxJobsToActivate": 1, "timeout": TOO_LONG_MS, "worker": "w"},
    )
    for response in (publish, activate):
        assert response.rejection_type == "PROCESSING_ERROR", response
    assert partition.state.copy_for_snapshot() == before
    assert partition.health() == ("HEALTHY", [])
    await node.command(
        ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="c", timeToLive=60_000
    )
    after = partition.state.copy_for_snapshot()
    log_before = list(read_records(partition.log, 1))
    errors = [r for r in log_before if r.value_type == ValueType.ERROR]
    overflowing = [
        r.position
        for r in log_before
        if r.is_command and TOO_LONG_MS in (r.value.get("timeToLive"), r.value.get("timeout"))
    ]
    assert len(overflowing) == 2
    assert [e.value["errorEventPosition"] for e in errors] == overflowing
    await partition.stop()

    node = LocalPartition(tmp_path)
    await node.partition.start()
    assert node.partition.state.copy_for_snapshot() == after
    assert list(read_records(node.partition.log, 1)) == log_before  # nothing reprocessed
    await node.command(
        ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="d", timeToLive=60_000
    )
    await node.partition.stop()


async def test_a_failing_command_written_but_never_processed_is_contained_on_recovery(
    tmp_path: Path,
) -> None:
    """A crash after writing an overflowing command and before processing it (what killed the
    broker at every restart before): recovery processes it into PROCESSING_ERROR and an ERROR
    record, and the partition starts and serves."""
    node = LocalPartition(tmp_path)
    await node.partition.start()
    await node.command(
        ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="a", timeToLive=60_000
    )
    await node.partition.stop()
    log_ = SegmentedLog.open(tmp_path / "log")
    position = log_.last_position + 1
    command = Command(
        ValueType.MESSAGE,
        "PUBLISH",
        -1,
        {"name": "x", "correlationKey": "k", "timeToLive": TOO_LONG_MS},
    ).record(position, NOW_MS)
    log_.append(position, 1, encode_records([command]))
    log_.flush()
    log_.close()

    node = LocalPartition(tmp_path)
    await node.partition.start()
    records = list(read_records(node.partition.log, position))
    assert [(r.record_type, r.value_type) for r in records] == [
        (RecordType.COMMAND, ValueType.MESSAGE),
        (RecordType.COMMAND_REJECTION, ValueType.MESSAGE),
        (RecordType.EVENT, ValueType.ERROR),
    ]
    assert records[2].value["errorEventPosition"] == position
    assert "x" not in {m["name"] for m in node.partition.state.messages.values()}
    await node.command(
        ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="b", timeToLive=60_000
    )
    assert node.partition.health() == ("HEALTHY", [])
    await node.partition.stop()


async def test_a_log_that_cannot_be_written_refuses_work_visibly_and_resumes_when_fixed(
    tmp_path: Path,
) -> None:
    """The next segment's path is taken by a directory (a disk fault the log cannot work
    around): the group being written is refused (RESOURCE_EXHAUSTED, never acknowledged), the
    partition reports UNHEALTHY with the reason and refuses work at once instead of going
    silent; once the fault is gone it processes again by itself, and nothing refused was
    written."""
    partition = LocalPartition(tmp_path).partition
    partition.config = PartitionConfig(snapshot_period_s=3600, segment_bytes_max=4096)
    await partition.start()
    first_index = partition.log.last_index + 1
    blocked = []
    for index in range(first_index, first_index + 500):
        path = tmp_path / "log" / f"segment-{index:012d}.log"
        if not path.exists():  # the active segment
            path.mkdir()
            blocked.append(path)
    value = {"name": "ping", "correlationKey": "k", "timeToLive": 60_000, "variables": {}}
    acknowledged = 0
    for _ in range(200):
        try:
            await partition.submit(ValueType.MESSAGE, "PUBLISH", -1, value)
            acknowledged += 1
        except ResourceExhausted:
            break
    else:
        raise AssertionError("the log kept accepting entries")

    async def unhealthy() -> list[str] | None:
        health, reasons = partition.health()
        return reasons if health == "UNHEALTHY" else None

    reasons = await eventually(unhealthy, timeout_s=5)
    assert any("writing failed" in reason for reason in reasons), reasons

    for path in blocked:
        path.rmdir()

    async def processes_again() -> bool:
        try:
            await partition.submit(ValueType.MESSAGE, "PUBLISH", -1, value)
        except ResourceExhausted:
            return False
        return True

    await eventually(processes_again, timeout_s=10)
    assert partition.health() == ("HEALTHY", [])
    published = [m for m in partition.state.messages.values() if m["name"] == "ping"]
    assert len(published) == acknowledged + 1
    await partition.stop()

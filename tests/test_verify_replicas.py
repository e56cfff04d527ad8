"""`verify` with replication: the replicas of a partition must hold the same log and rebuild the
same state; a deposed leader's uncommitted tail is a note, any other disagreement a violation
naming where it starts (zeebe_sim/verify.py)."""

from __future__ import annotations

from typing import Any

from broker.engine.state import State
from zeebe_sim.ground.records import Record, RecordType, ValueType
from zeebe_sim.verify import EntrySummary, PartitionData, check


def entries(terms: list[int], salt: int = 0) -> list[EntrySummary]:
    """One entry per index 1.., of one record each, in the given terms."""
    return [EntrySummary(i, t, i, 1, hash((i, t, salt)) & 0xFFFF) for i, t in enumerate(terms, 1)]


def replica(node: int, log: list[EntrySummary], **fields: Any) -> PartitionData:
    return PartitionData(1, [], node_id=node, entries=log, **fields)


def test_replicas_with_one_log_agree_even_when_one_lags() -> None:
    """Three replicas, one of them two entries behind: no violation, the partition counted
    once with its three replicas."""
    log = entries([1, 1, 2, 2, 2])
    report = check([replica(0, log), replica(1, log), replica(2, log[:3])])
    assert report.ok, report.render()
    assert (report.partitions, report.replicas) == (1, 3)
    assert "1 partitions (3 replicas)" in report.render()


def test_a_deposed_leaders_uncommitted_tail_is_a_note() -> None:
    """Broker 0 led term 1 and wrote entries 3-4 nobody else got; brokers 1 and 2 went on in
    term 2. The majority's entries have the higher term: a note, not a violation."""
    shared = entries([1, 1])
    old_tail = entries([1, 1, 1, 1])
    new = shared + entries([2, 2, 2])[2:]
    report = check([replica(0, old_tail), replica(1, new), replica(2, new)])
    assert report.ok, report.render()
    assert any("broker 0 hold(s) an uncommitted tail from index 3" in n for n in report.notes)


def test_a_disagreement_that_is_no_uncommitted_tail_is_named() -> None:
    """Same index, same term, different bytes on broker 2 (or a dissenter in a newer term):
    a violation naming the first index where the replicas disagree and each replica's entry."""
    log = entries([1, 1, 1, 1])
    forged = log[:2] + entries([1, 1, 1, 1], salt=7)[2:]
    report = check([replica(0, log), replica(1, log), replica(2, forged)])
    assert [v.invariant for v in report.violations] == ["replicas agree"]
    detail = report.violations[0].detail
    assert detail.startswith("the replicas disagree first at log index 3")
    assert "broker 2 has term 1, positions 3..3" in detail

    newer = log[:2] + entries([1, 1, 3, 3])[2:]
    report = check([replica(0, log), replica(1, log), replica(2, newer)])
    assert not report.ok and "index 3" in report.violations[0].detail


def record(position: int, intent: str = "CREATED") -> Record:
    return Record(position, -1, 1, 0, RecordType.EVENT, ValueType.PROCESS, intent, {})


def test_replicas_whose_state_differs_at_one_position_are_named() -> None:
    """Same log, but broker 1's snapshot at position 2 holds another next key than broker 0's:
    their states at position 2 differ, and the violation names the position and the parts of
    the state that differ. The same snapshots agree."""
    view = State(1).copy_for_snapshot()
    other = {**view, "meta": {**view["meta"], "next_key_local": 99}}
    log = entries([1, 1])
    records = [record(1), record(2)]

    def at(node: int, state: dict[str, Any]) -> PartitionData:
        return PartitionData(
            1,
            records,
            state,
            node_id=node,
            entries=log,
            snapshot_position=2,
            snapshot_followup_position=2,
        )

    assert check([at(0, view), at(1, view)]).ok
    report = check([at(0, view), at(1, other)])
    assert [v.detail for v in report.violations] == [
        "at position 2, broker 1's state differs from broker 0's in ['meta']"
    ]


def test_states_are_not_compared_when_no_position_is_common() -> None:
    """Broker 0's snapshot is past the end of broker 1's log: no position both can rebuild,
    said in a note rather than compared wrongly."""
    view = State(1).copy_for_snapshot()
    report = check(
        [
            PartitionData(
                1,
                [record(5)],
                view,
                node_id=0,
                entries=entries([1] * 5)[4:],
                snapshot_position=4,
            ),
            PartitionData(1, [record(1)], None, node_id=1, entries=entries([1])),
        ]
    )
    assert report.ok
    assert any("states were not compared" in n for n in report.notes)


def test_states_are_compared_before_a_deposed_leaders_tail() -> None:
    """A deposed leader's uncommitted entry at position 3 created another process than the
    new leader's: the states are compared at position 2, where the logs agree, so this is a
    note and no violation (at position 3 they would differ)."""

    def process(position: int, key: int) -> Record:
        value = {"bpmnProcessId": "p", "version": key}
        return Record(position, -1, key, 0, RecordType.EVENT, ValueType.PROCESS, "CREATED", value)

    shared = [process(1, 1), process(2, 2)]
    old = PartitionData(1, [*shared, process(3, 30)], node_id=0, entries=entries([1, 1, 1], salt=1))
    new_log = entries([1, 1], salt=1) + entries([1, 1, 2], salt=2)[2:]
    new = [PartitionData(1, [*shared, process(3, 31)], node_id=n, entries=new_log) for n in (1, 2)]
    report = check([old, *new])
    assert report.ok, report.render()
    assert any("uncommitted tail from index 3" in n for n in report.notes)

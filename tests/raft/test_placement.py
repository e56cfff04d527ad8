"""Round-robin replica placement and election priorities (reference/replication.md B.2)."""

from __future__ import annotations

import pytest

from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.ids import NodeId, PartitionId
from zeebe_sim.ground.routing import (
    broker_of_partition,
    replica_priorities,
    replicas_of_partition,
    replicated_partitions_of_broker,
)


def test_helm_layout_three_brokers_three_partitions_factor_three() -> None:
    """3/3/3: every broker holds every partition; partition p's primary is broker p-1 and the
    other replicas follow it round the ring."""
    assert replicas_of_partition(PartitionId(1), 3, 3) == [0, 1, 2]
    assert replicas_of_partition(PartitionId(2), 3, 3) == [1, 2, 0]
    assert replicas_of_partition(PartitionId(3), 3, 3) == [2, 0, 1]
    for node in range(3):
        assert replicated_partitions_of_broker(NodeId(node), 3, 3, 3) == [1, 2, 3]


def test_factor_one_is_the_existing_single_replica_assignment() -> None:
    """With replication factor 1 the placement is broker_of_partition, for any cluster shape."""
    for size in range(1, 6):
        for p in range(1, 12):
            pid = PartitionId(p)
            assert replicas_of_partition(pid, size, 1) == [broker_of_partition(pid, size)]


def test_factor_above_cluster_size_is_capped() -> None:
    """rf' = min(rf, N): two brokers hold a factor-3 partition once each."""
    assert replicas_of_partition(PartitionId(1), 2, 3) == [0, 1]
    assert replicas_of_partition(PartitionId(2), 2, 3) == [1, 0]


def test_priorities_alternate_every_cluster_size_partitions() -> None:
    """The primary gets rf; the others get rf-1, rf-2, ... when ((p-1) // N) is even and 1, 2,
    ... when odd, in placement order."""
    # N = 3, rf = 3: partitions 1-3 descend, 4-6 ascend, 7 descends again
    assert replica_priorities(PartitionId(1), 3, 3) == {0: 3, 1: 2, 2: 1}
    assert replica_priorities(PartitionId(2), 3, 3) == {1: 3, 2: 2, 0: 1}
    assert replica_priorities(PartitionId(4), 3, 3) == {0: 3, 1: 1, 2: 2}
    assert replica_priorities(PartitionId(6), 3, 3) == {2: 3, 0: 1, 1: 2}
    assert replica_priorities(PartitionId(7), 3, 3) == {0: 3, 1: 2, 2: 1}
    # N = 5, rf = 4: partition 6 is in the second block of 5 partitions
    assert replica_priorities(PartitionId(6), 5, 4) == {0: 4, 1: 1, 2: 2, 3: 3}
    assert replica_priorities(PartitionId(5), 5, 4) == {4: 4, 0: 3, 1: 2, 2: 1}


def test_primary_has_the_highest_priority_and_priorities_are_distinct() -> None:
    """Whatever the shape, the primary is the unique top priority (the target priority)."""
    for size in range(1, 7):
        for rf in range(1, size + 1):
            for p in range(1, 3 * size + 1):
                pid = PartitionId(p)
                priorities = replica_priorities(pid, size, rf)
                members = replicas_of_partition(pid, size, rf)
                assert list(priorities) == members
                assert priorities[members[0]] == rf == max(priorities.values())
                assert len(set(priorities.values())) == len(members)


@pytest.mark.parametrize(("partition", "size", "rf"), [(0, 3, 3), (1, 0, 3), (1, 3, 0)])
def test_bad_placement_arguments(partition: int, size: int, rf: int) -> None:
    """Partition ids, cluster sizes and replication factors below 1 are refused."""
    with pytest.raises(InvalidArgument):
        replicas_of_partition(PartitionId(partition), size, rf)

"""Which partition a message (and every subscription waiting for it) lives on.

Zeebe keeps all messages and message subscriptions with one correlation key on one partition, so
a published message and a waiting process instance meet there whichever partitions they started
on. The gateway routes ``PublishMessage`` with the same function the engine uses to open the
subscription, so both sides must agree bit for bit; clients that predict the partition (and the
consistency tests) rely on it too.

The rule, as in Zeebe's ``io.camunda.zeebe.protocol.impl.SubscriptionUtil``
(zeebe/protocol-impl/src/main/java/io/camunda/zeebe/protocol/impl/SubscriptionUtil.java)::

    int hashCode = 0;
    for (int i = 0; i < correlationKey.capacity(); i++)
        hashCode = 31 * hashCode + correlationKey.getByte(i);
    return Math.abs(hashCode % partitionCount) + START_PARTITION_ID;   // START_PARTITION_ID = 1

``correlationKey`` is an Agrona buffer holding the key's **UTF-8 bytes**, and ``getByte`` returns a
*signed* Java byte. Zeebe's comment says the hash "is equal to java.lang.String#hashCode", which
holds only for ASCII keys: for any other character the loop sees two to four bytes, each from
-128 to -1, where ``String.hashCode`` sees one or two positive UTF-16 code units. For "é"
(U+00E9, UTF-8 C3 A9) String.hashCode is 233, Zeebe's hash is 31 * -61 + -87 = -1978. We
reproduce Zeebe's byte hash, not the comment, because routing has to match real Zeebe.
``java_string_hash`` (the real ``String.hashCode``) is kept for the comparison and the tests.
"""

from __future__ import annotations

from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.ids import NodeId, PartitionId

# Partition ids are 1-based in Zeebe (Protocol.START_PARTITION_ID).
START_PARTITION_ID = 1

_INT32_MODULUS = 1 << 32
_INT32_MIN = -(1 << 31)


def _to_int32(value: int) -> int:
    """Wrap an integer to Java's int range, as int arithmetic overflow does."""
    return (value - _INT32_MIN) % _INT32_MODULUS + _INT32_MIN


def _java_remainder(dividend: int, divisor: int) -> int:
    """Java's ``%`` on ints: truncates toward zero, so the result has the dividend's sign
    (Python's ``%`` floors and takes the divisor's sign)."""
    remainder = abs(dividend) % abs(divisor)
    return -remainder if dividend < 0 else remainder


def java_string_hash(s: str) -> int:
    """``java.lang.String#hashCode``: ``h = 31 * h + c`` over UTF-16 code units, int32 wrap.

    Characters outside the Basic Multilingual Plane count as their two surrogate code units.
    """
    units = s.encode("utf-16-le", "surrogatepass")
    h = 0
    for i in range(0, len(units), 2):
        h = _to_int32(31 * h + int.from_bytes(units[i : i + 2], "little"))
    return h


def subscription_hash_code(correlation_key: str) -> int:
    """Zeebe's ``SubscriptionUtil.getSubscriptionHashCode``: the String.hashCode recurrence over
    the key's UTF-8 bytes read as signed bytes (see the module docstring)."""
    # A lone surrogate (possible in a Python str, e.g. from JSON "\ud800") becomes "?", as Java's
    # String.getBytes(UTF_8) replaces unmappable input.
    h = 0
    for byte in correlation_key.encode("utf-8", "replace"):
        signed = byte - 256 if byte > 127 else byte
        h = _to_int32(31 * h + signed)
    return h


def subscription_partition_id(correlation_key: str, partition_count: int) -> PartitionId:
    """The partition (``1..partition_count``) that owns messages with this correlation key.

    Raises ``InvalidArgument`` if ``partition_count`` is less than 1.
    """
    if partition_count < 1:
        raise InvalidArgument(f"Partition count must be at least 1, found {partition_count}")
    # Java's `%` result is within (-count, count), so Math.abs never meets Integer.MIN_VALUE here.
    remainder = _java_remainder(subscription_hash_code(correlation_key), partition_count)
    return PartitionId(abs(remainder) + START_PARTITION_ID)


def broker_of_partition(partition_id: PartitionId, cluster_size: int) -> NodeId:
    """Round-robin assignment: partition p (1-based) lives on broker (p-1) % N."""
    return NodeId((partition_id - 1) % cluster_size)


def partitions_of_broker(
    node_id: NodeId, cluster_size: int, partition_count: int
) -> list[PartitionId]:
    return [
        PartitionId(p)
        for p in range(1, partition_count + 1)
        if broker_of_partition(PartitionId(p), cluster_size) == node_id
    ]


def replicas_of_partition(
    partition_id: PartitionId, cluster_size: int, replication_factor: int
) -> list[NodeId]:
    """The brokers holding partition ``partition_id``, primary first, as Zeebe's
    ``RoundRobinPartitionDistributor`` places them: members sorted by node id, and partition
    ``p`` (1-based) on ``(p-1+j) % N`` for ``j = 0 .. min(rf, N)-1``. With a replication factor of
    1 this is ``[broker_of_partition(p, N)]``.

    Raises ``InvalidArgument`` for a partition id, cluster size or replication factor below 1.
    """
    _check_placement(partition_id, cluster_size, replication_factor)
    start = partition_id - START_PARTITION_ID
    return [
        NodeId((start + j) % cluster_size) for j in range(min(replication_factor, cluster_size))
    ]


def replica_priorities(
    partition_id: PartitionId, cluster_size: int, replication_factor: int
) -> dict[NodeId, int]:
    """Each replica's election priority for partition ``partition_id`` (Zeebe's distributor).

    The primary gets ``replication_factor``, which is also the partition's target priority. The
    other replicas, in placement order, get ``rf-1, rf-2, ...`` when ``((p-1) // N)`` is even
    and ``1, 2, ...`` when it is odd: with more partitions than brokers, the second choice for
    leadership alternates, so a broker's failure does not move all its partitions to one
    neighbour.

    Raises ``InvalidArgument`` as :func:`replicas_of_partition` does.
    """
    members = replicas_of_partition(partition_id, cluster_size, replication_factor)
    descending = ((partition_id - START_PARTITION_ID) // cluster_size) % 2 == 0
    priorities = {members[0]: replication_factor}
    for rank, node in enumerate(members[1:], start=1):
        priorities[node] = replication_factor - rank if descending else rank
    return priorities


def replicated_partitions_of_broker(
    node_id: NodeId, cluster_size: int, partition_count: int, replication_factor: int
) -> list[PartitionId]:
    """The partitions broker ``node_id`` holds a replica of (any role), in partition order."""
    return [
        PartitionId(p)
        for p in range(START_PARTITION_ID, partition_count + START_PARTITION_ID)
        if node_id in replicas_of_partition(PartitionId(p), cluster_size, replication_factor)
    ]


def _check_placement(partition_id: int, cluster_size: int, replication_factor: int) -> None:
    if partition_id < START_PARTITION_ID:
        raise InvalidArgument(f"Partition id must be at least 1, found {partition_id}")
    if cluster_size < 1:
        raise InvalidArgument(f"Cluster size must be at least 1, found {cluster_size}")
    if replication_factor < 1:
        raise InvalidArgument(f"Replication factor must be at least 1, found {replication_factor}")

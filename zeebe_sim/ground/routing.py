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

"""Typed ids, so that a swapped argument is a type error, and Zeebe's key encoding."""

from __future__ import annotations

from typing import NewType

PartitionId = NewType("PartitionId", int)
NodeId = NewType("NodeId", int)
Position = NewType("Position", int)
BackupId = NewType("BackupId", int)
Key = NewType("Key", int)

# Every integer on the wire and in records is a Java long in Zeebe.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Zeebe keys carry their partition in the top bits: key = (partitionId << 51) + n. Key-based
# requests (job completion, instance lookup) are routed by `key >> 51`.
KEY_PARTITION_SHIFT = 51
KEY_LOCAL_MAX = (1 << KEY_PARTITION_SHIFT) - 1

# The checkpoint id a partition has before its first checkpoint (Zeebe: NO_CHECKPOINT = -1).
NO_CHECKPOINT = BackupId(-1)


def encode_key(partition_id: PartitionId, local: int) -> Key:
    assert 0 <= local <= KEY_LOCAL_MAX, local
    return Key((partition_id << KEY_PARTITION_SHIFT) + local)


def partition_of_key(key: int) -> PartitionId:
    return PartitionId(key >> KEY_PARTITION_SHIFT)

"""Raft messages to and from the wire: the core's dataclasses (``messages.py``) and the
protocol's ``Raft*`` messages (``zeebe_sim/ground/protocol.py``) carry the same fields; the wire
form adds the partition id."""

from __future__ import annotations

from broker.raft import messages as raft
from zeebe_sim.ground import protocol
from zeebe_sim.ground.ids import NodeId, PartitionId


def to_wire(partition_id: PartitionId, m: raft.Message) -> protocol.RaftMessage:
    if isinstance(m, raft.AppendRequest):
        return protocol.RaftAppendRequest(
            partition_id,
            m.sender,
            m.term,
            m.prev_index,
            m.prev_term,
            protocol.pack_raft_entries((e.index, e.term, e.data) for e in m.entries),
            m.commit_index,
        )
    if isinstance(m, raft.AppendResponse):
        return protocol.RaftAppendResponse(partition_id, m.sender, m.term, m.success, m.last_index)
    if isinstance(m, raft.PollRequest):
        return protocol.RaftPollRequest(partition_id, m.sender, m.term, m.last_index, m.last_term)
    if isinstance(m, raft.PollResponse):
        return protocol.RaftPollResponse(partition_id, m.sender, m.term, m.granted)
    if isinstance(m, raft.VoteRequest):
        return protocol.RaftVoteRequest(partition_id, m.sender, m.term, m.last_index, m.last_term)
    if isinstance(m, raft.VoteResponse):
        return protocol.RaftVoteResponse(partition_id, m.sender, m.term, m.granted)
    if isinstance(m, raft.InstallRequest):
        snapshot = protocol.RaftSnapshot(m.snapshot.index, m.snapshot.term, m.snapshot.size_bytes)
        return protocol.RaftInstallRequest(
            partition_id, m.sender, m.term, snapshot, m.offset, m.data, m.done
        )
    return protocol.RaftInstallResponse(
        partition_id, m.sender, m.term, m.snapshot_index, m.next_offset, m.complete
    )


def from_wire(m: protocol.RaftMessage) -> raft.Message:
    sender, term = NodeId(m.sender), raft.Term(m.term)
    if isinstance(m, protocol.RaftAppendRequest):
        return raft.AppendRequest(
            term,
            sender,
            raft.Index(m.prev_index),
            raft.Term(m.prev_term),
            tuple(
                raft.Entry(raft.Index(index), raft.Term(term), data)
                for index, term, data in protocol.unpack_raft_entries(m.entries)
            ),
            raft.Index(m.commit_index),
        )
    if isinstance(m, protocol.RaftAppendResponse):
        return raft.AppendResponse(term, sender, m.success, raft.Index(m.last_index))
    if isinstance(m, protocol.RaftPollRequest):
        return raft.PollRequest(term, sender, raft.Index(m.last_index), raft.Term(m.last_term))
    if isinstance(m, protocol.RaftPollResponse):
        return raft.PollResponse(term, sender, m.granted)
    if isinstance(m, protocol.RaftVoteRequest):
        return raft.VoteRequest(term, sender, raft.Index(m.last_index), raft.Term(m.last_term))
    if isinstance(m, protocol.RaftVoteResponse):
        return raft.VoteResponse(term, sender, m.granted)
    if isinstance(m, protocol.RaftInstallRequest):
        s = m.snapshot
        snapshot = raft.SnapshotMeta(raft.Index(s.index), raft.Term(s.term), s.size_bytes)
        return raft.InstallRequest(term, sender, snapshot, m.offset, m.data, m.done)
    return raft.InstallResponse(
        term, sender, raft.Index(m.snapshot_index), m.next_offset, m.complete
    )

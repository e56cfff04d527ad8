"""Network faults a broker applies to its own broker-to-broker traffic, on purpose.

Theory of operation
-------------------
Chaos tests and ``zeebe-sim chaos`` break the network between brokers without root and without
touching sockets: every message one broker sends to another, and every one it receives from
another, passes the broker's single peer send point and single peer receive point, and both ask
this module what to do. A fault set is plain data, replaced whole by an admin request
(``SetFaultsRequest``), so a schedule of faults is deterministic and a test can read it back.

- **Cut**: the peers named in ``cut`` are unreachable. Messages to them are dropped at the send
  point, and messages from them at the receive point, so a cut set on one broker alone already
  severs both directions (a one-sided cut is as useful as a two-sided one when a broker is
  paused or unreachable to tell).
- **Slow**: every message this broker sends to a peer leaves ``delay_ms`` late (a slow disk or
  a congested link on that replica). Incoming messages are not delayed: slowing broker B is
  setting B's delay, not everybody's.

Gossip about addresses and the gateway's traffic are not affected: a cut isolates replicas
from each other, not the cluster from its clients.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.ids import NodeId

# A slow replica, not a dead one: beyond a minute every election and request would time out
# anyway, and an unbounded delay would let a typo hold messages (and their memory) forever.
DELAY_MS_MAX = 60_000


@attrs.frozen
class Faults:
    """The faults a broker applies: the peers cut off, and the delay of outgoing messages."""

    cut: frozenset[NodeId] = frozenset()
    delay_ms: int = 0

    def send_delay_ms(self, peer: NodeId) -> int | None:
        """How late a message to ``peer`` leaves; None: it is dropped."""
        if peer in self.cut:
            return None
        return self.delay_ms

    def accepts_from(self, peer: NodeId) -> bool:
        """Whether a message received from ``peer`` is handled (False: dropped)."""
        return peer not in self.cut

    @property
    def active(self) -> bool:
        return bool(self.cut) or self.delay_ms > 0


NO_FAULTS = Faults()


def faults_from_request(
    current: Faults,
    node_id: NodeId,
    cluster_size: int,
    cut: Iterable[int] | None,
    delay_ms: int | None,
) -> Faults:
    """The fault set a ``SetFaultsRequest`` asks for: ``None`` keeps that part as it is.

    Raises:
        InvalidArgument: a cut names this broker itself or no broker of the cluster, or the
            delay is negative or above :data:`DELAY_MS_MAX`.
    """
    new_cut = current.cut
    if cut is not None:
        peers = set(cut)
        strangers = sorted(p for p in peers if not 0 <= p < cluster_size)
        if strangers:
            raise InvalidArgument(
                f"Expected to cut brokers of this cluster (0..{cluster_size - 1}), "
                f"but got {strangers}"
            )
        if node_id in peers:
            raise InvalidArgument(f"Broker {node_id} cannot be cut from itself")
        new_cut = frozenset(NodeId(p) for p in peers)
    new_delay = current.delay_ms
    if delay_ms is not None:
        if not 0 <= delay_ms <= DELAY_MS_MAX:
            raise InvalidArgument(
                f"Expected a delay between 0 and {DELAY_MS_MAX} ms, but got {delay_ms}"
            )
        new_delay = delay_ms
    return Faults(new_cut, new_delay)

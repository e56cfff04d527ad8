"""The fault set a broker applies to its broker-to-broker traffic (broker/faults.py)."""

from __future__ import annotations

import pytest

from broker.faults import DELAY_MS_MAX, NO_FAULTS, Faults, faults_from_request
from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.ids import NodeId

ME = NodeId(1)


def test_without_faults_everything_passes_at_once() -> None:
    """No faults: every message leaves without delay and every one received is handled."""
    assert NO_FAULTS.send_delay_ms(NodeId(0)) == 0
    assert NO_FAULTS.accepts_from(NodeId(2))
    assert not NO_FAULTS.active


def test_a_cut_peer_is_dropped_both_ways_and_others_are_delayed() -> None:
    """A cut drops what goes to the peer and what comes from it; a delay applies to what is
    sent to every other peer, and never to what is received."""
    faults = Faults(frozenset({NodeId(0)}), delay_ms=200)
    assert faults.send_delay_ms(NodeId(0)) is None
    assert not faults.accepts_from(NodeId(0))
    assert faults.send_delay_ms(NodeId(2)) == 200
    assert faults.accepts_from(NodeId(2))
    assert faults.active


def test_a_request_replaces_only_the_parts_it_names() -> None:
    """``None`` keeps the cut or the delay; a list replaces the cut, an empty one heals it."""
    slow = faults_from_request(NO_FAULTS, ME, 3, None, 300)
    assert slow == Faults(frozenset(), 300)
    cut = faults_from_request(slow, ME, 3, [0, 2], None)
    assert cut == Faults(frozenset({NodeId(0), NodeId(2)}), 300)
    assert faults_from_request(cut, ME, 3, None, None) == cut
    assert faults_from_request(cut, ME, 3, [], 0) == NO_FAULTS


@pytest.mark.parametrize(
    ("cut", "delay_ms", "message"),
    [
        ([3], None, r"brokers of this cluster \(0\.\.2\), but got \[3\]"),
        ([-1, 0], None, r"but got \[-1\]"),
        ([1], None, "cannot be cut from itself"),
        (None, -1, "delay between 0 and"),
        (None, DELAY_MS_MAX + 1, "delay between 0 and"),
    ],
)
def test_a_request_naming_no_peer_or_a_bad_delay_is_refused(
    cut: list[int] | None, delay_ms: int | None, message: str
) -> None:
    """A cut of a node outside the cluster or of the broker itself, and a delay out of range,
    are the client's mistakes (INVALID_ARGUMENT), and change nothing."""
    with pytest.raises(InvalidArgument, match=message):
        faults_from_request(NO_FAULTS, ME, 3, cut, delay_ms)

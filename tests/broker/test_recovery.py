"""An in-place restore killed between its two renames (broker/recovery.py): at the next broker
start the staged partition, complete by then, goes where the partition's directory is missing;
a staged partition whose directory still exists was not swapped yet and is scratch."""

from __future__ import annotations

from pathlib import Path

from broker.recovery import RECOVERING_DIR, finish_interrupted_restore


def test_a_swap_cut_between_the_renames_is_finished_and_scratch_removed(tmp_path: Path) -> None:
    """Partition 1: old directory moved away, staged not yet in place -> placed. Partition 2:
    staged while its directory is still there -> removed, the directory kept."""
    broker = tmp_path / "broker-0"
    recovering = broker / RECOVERING_DIR
    (recovering / "1" / "log").mkdir(parents=True)
    (recovering / "1" / "log" / "segment").write_bytes(b"restored")
    (recovering / "1.old" / "log").mkdir(parents=True)
    (recovering / "2" / "log").mkdir(parents=True)
    (recovering / "2" / "log" / "segment").write_bytes(b"half staged")
    (broker / "partitions" / "2" / "log").mkdir(parents=True)
    (broker / "partitions" / "2" / "log" / "segment").write_bytes(b"current")

    finish_interrupted_restore(broker)

    assert (broker / "partitions" / "1" / "log" / "segment").read_bytes() == b"restored"
    assert (broker / "partitions" / "2" / "log" / "segment").read_bytes() == b"current"
    assert not recovering.exists()
    finish_interrupted_restore(broker)  # nothing left to do: a no-op
    assert sorted(p.name for p in (broker / "partitions").iterdir()) == ["1", "2"]

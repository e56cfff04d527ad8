"""zeebe-sim: a simulated multi-broker Zeebe cluster whose backups behave like the real thing.

The package's own modules are the operator's roof (CLI, launcher, harness, restore, verify,
workload, backup client); ``zeebe_sim.ground`` is the floor everything stands on.
"""

from zeebe_sim.ground import VERSION

__all__ = ["VERSION"]

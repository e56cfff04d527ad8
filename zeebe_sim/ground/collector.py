"""The garbage collector's settings for a broker or gateway process.

A broker's state is a large, growing set of small, long-lived containers (instances, element
instances, jobs), and processing allocates many short-lived ones. With CPython's default
thresholds (a young collection every 700 allocations) the collector walks the survivors so
often that it took 25-40 % of a busy partition's time, more while a backup's upload added
allocations of its own (benchmarks/backup_during_processing.py). Collecting the young
generation every 50,000 allocations instead leaves cyclic garbage uncollected a little longer
(a few MB at most) and gives that time back to processing.
"""

from __future__ import annotations

import gc
from typing import Final

THRESHOLDS: Final = (50_000, 20, 10)


def tune() -> None:
    """Apply :data:`THRESHOLDS` to this process (at its start)."""
    gc.set_threshold(*THRESHOLDS)

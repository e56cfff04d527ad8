"""When scheduled work runs: Zeebe's ``schedule`` setting (a Spring cron expression, an ISO-8601
duration, ``none`` or ``auto``), parsed once and asked for its next and previous run.

Theory of operation
-------------------
Zeebe parses a schedule by trying cron first, then ``Duration.parse`` (reference
backups-8.9-8.10.md A.2). Cron is Spring's six-field form (second minute hour day-of-month
month day-of-week), evaluated with ``croniter`` (``second_at_beginning``) in the process's
local time zone, as Zeebe evaluates it in the JVM's default zone. A duration is an interval: the
next run is one interval after the given time, the previous one interval before.

``auto`` means "an interval supplied at run time" in Zeebe; what supplies it was not
established, so zeebe-sim uses the interval the docs recommend for backups, one hour.

Pure: every method takes the time (epoch milliseconds) and reads no clock.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

import attrs
from croniter import croniter

INVALID: Final = "Invalid expression for schedule: must be one of CRON, ISO8601, NONE or AUTO."
AUTO_INTERVAL_MS: Final = 3_600_000

# Java's Duration.parse: PnDTnHnMn.nS, an optional sign, at least one part.
_DURATION = re.compile(
    r"(?P<sign>[-+]?)P(?:(?P<d>[-+]?\d+)D)?"
    r"(?:T(?:(?P<h>[-+]?\d+)H)?(?:(?P<m>[-+]?\d+)M)?(?:(?P<s>[-+]?\d+(?:[.,]\d{0,9})?)S)?)?",
    re.IGNORECASE,
)


@attrs.frozen
class IntervalSchedule:
    """Every ``interval_ms``, counted from the previous run."""

    interval_ms: int
    text: str

    def next_ms(self, after_ms: int) -> int:
        return after_ms + self.interval_ms

    def previous_ms(self, before_ms: int) -> int:
        return before_ms - self.interval_ms

    def __str__(self) -> str:
        return self.text


@attrs.frozen
class CronSchedule:
    """A Spring cron expression (six fields, seconds first)."""

    expression: str

    def next_ms(self, after_ms: int) -> int:
        return _cron_ms(self.expression, after_ms, forward=True)

    def previous_ms(self, before_ms: int) -> int:
        return _cron_ms(self.expression, before_ms, forward=False)

    def __str__(self) -> str:
        return self.expression


Schedule = IntervalSchedule | CronSchedule


def _cron_ms(expression: str, at_ms: int, *, forward: bool) -> int:
    start = datetime.fromtimestamp(at_ms / 1000).astimezone()
    iterator = croniter(expression, start, second_at_beginning=True)
    moment: datetime = iterator.get_next(datetime) if forward else iterator.get_prev(datetime)
    return round(moment.timestamp() * 1000)


def parse_schedule(text: str) -> Schedule | None:
    """The schedule ``text`` names; None for ``none`` (or blank).

    Raises:
        ValueError: with Zeebe's message, for anything else.
    """
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("", "none"):
        return None
    if lowered == "auto":
        return IntervalSchedule(AUTO_INTERVAL_MS, "auto")
    if len(stripped.split()) == 6 and croniter.is_valid(stripped, second_at_beginning=True):
        return CronSchedule(stripped)
    interval_ms = parse_iso_duration_ms(stripped)
    if interval_ms is None or interval_ms <= 0:
        raise ValueError(f"{INVALID} Given: {text}")
    return IntervalSchedule(interval_ms, stripped)


def parse_iso_duration_ms(text: str) -> int | None:
    """Milliseconds in an ISO-8601 duration as Java's ``Duration.parse`` reads it; None if
    ``text`` is not one."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or not any(match[k] for k in ("d", "h", "m", "s")):
        return None
    if text.strip().upper().endswith("T"):
        return None
    total_ms = 0.0
    for key, unit_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if match[key]:
            total_ms += float(match[key].replace(",", ".")) * unit_ms
    return round(-total_ms if match["sign"] == "-" else total_ms)

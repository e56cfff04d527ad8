"""A friendly client of the actuator Backup API (REFERENCE.md §1), behind ``zeebe-sim backup``.

Theory of operation
-------------------
:class:`BackupClient` makes one HTTP call per method and returns the server's JSON unchanged
(``--json`` prints exactly that). Failures become one of two errors: :class:`BackupApiError`
(the gateway answered with an error status; it carries the server's ``{"message"}``) and
:class:`GatewayUnreachable` (no connection, or no answer within the request timeout). The CLI
prints either on one line and exits 1.

Waiting (``take --wait``, ``delete --wait``) is a poll loop around a pure judge:
:class:`TakeProgress` turns each observed state into a verdict (COMPLETED succeeds, FAILED fails,
INCOMPLETE fails only once it has lasted ``incomplete_grace_s``, since right after a take a
partition may not have started yet), and the shell adds the overall timeout. 502/503/504 and an
unreachable gateway while waiting are retried until the timeout: a broker restarting mid-backup
is exactly what a waiting operator wants to ride out.

Tables (:func:`status_table`, :func:`list_table`) are pure functions of parsed
:class:`BackupInfo` values.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import attrs
from rich.table import Table

from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.errors import ZeebeSimError
from zeebe_sim.ground.ids import BackupId, PartitionId

DEFAULT_MANAGEMENT_URL = "http://localhost:9600"
# Above the gateway's own request timeout (15 s by default), so that a slow partition shows up
# as the gateway's 504 with its message rather than as our timeout.
REQUEST_TIMEOUT_S = 30.0
DEFAULT_WAIT_TIMEOUT_S = 300.0
DEFAULT_POLL_INTERVAL_S = 1.0
DEFAULT_INCOMPLETE_GRACE_S = 30.0
# Gateway answers worth retrying while waiting: broker unreachable, overloaded, timed out.
RETRIABLE_STATUSES = frozenset({502, 503, 504})
ERROR_BODY_CHARS_MAX = 200

STATE_STYLES = {
    BackupState.COMPLETED: "green",
    BackupState.IN_PROGRESS: "yellow",
    BackupState.INCOMPLETE: "magenta",
    BackupState.FAILED: "red",
    BackupState.DELETED: "dim",
    BackupState.DOES_NOT_EXIST: "dim",
}


class BackupClientError(ZeebeSimError):
    """Root of the client's errors; ``message`` is the one line the CLI prints."""


class BackupApiError(BackupClientError):
    """The gateway answered with an error status; ``message`` is the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GatewayUnreachable(BackupClientError):
    """No connection to the management port, or no answer within the request timeout."""


class MalformedAnswer(BackupClientError):
    """The gateway answered 2xx with something that is not the API's JSON."""


# --------------------------------------------------------------------------------------------
# Parsed answers and tables (pure)
# --------------------------------------------------------------------------------------------


@attrs.frozen
class PartitionBackup:
    """One entry of a BackupInfo's ``details``; absent fields are None."""

    partition_id: PartitionId
    state: BackupState
    created_at: str | None = None
    last_updated_at: str | None = None
    snapshot_id: str | None = None
    checkpoint_position: int | None = None
    broker_id: int | None = None
    broker_version: str | None = None
    failure_reason: str | None = None


@attrs.frozen
class BackupInfo:
    """A backup as the API describes it (``GET /actuator/backups/{id}`` or one list entry)."""

    backup_id: BackupId
    state: BackupState
    failure_reason: str | None
    details: tuple[PartitionBackup, ...]

    @property
    def created_at(self) -> str | None:
        """The earliest partition's creation time (ISO-8601 UTC strings sort as times)."""
        times = [d.created_at for d in self.details if d.created_at]
        return min(times) if times else None


def _optional(raw: dict[str, Any], name: str, kind: type) -> Any:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedAnswer(f"unexpected answer from the gateway: {name} is {value!r}")
    return value


def _state(raw: dict[str, Any]) -> BackupState | None:
    text = _optional(raw, "state", str)
    if text is None:
        return None
    try:
        return BackupState(text)
    except ValueError:
        raise MalformedAnswer(f"unexpected answer from the gateway: state {_clip(text)}") from None


def parse_backup_info(raw: Any) -> BackupInfo:
    """A :class:`BackupInfo` from the API's JSON. Raises :class:`MalformedAnswer`."""
    if not isinstance(raw, dict):
        raise MalformedAnswer(f"unexpected answer from the gateway: {_clip(repr(raw))}")
    backup_id = _optional(raw, "backupId", int)
    state = _state(raw)
    if backup_id is None or state is None:
        raise MalformedAnswer("unexpected answer from the gateway: no backupId or state")
    details_raw = raw.get("details")
    details_raw = [] if details_raw is None else details_raw
    if not isinstance(details_raw, list):
        raise MalformedAnswer("unexpected answer from the gateway: details is not a list")
    details = []
    for entry in details_raw:
        if not isinstance(entry, dict):
            raise MalformedAnswer("unexpected answer from the gateway: a detail is not an object")
        partition_id = _optional(entry, "partitionId", int)
        partition_state = _state(entry)
        if partition_id is None or partition_state is None:
            raise MalformedAnswer("unexpected answer from the gateway: a detail lacks its state")
        details.append(
            PartitionBackup(
                partition_id=PartitionId(partition_id),
                state=partition_state,
                created_at=_optional(entry, "createdAt", str),
                last_updated_at=_optional(entry, "lastUpdatedAt", str),
                snapshot_id=_optional(entry, "snapshotId", str),
                checkpoint_position=_optional(entry, "checkpointPosition", int),
                broker_id=_optional(entry, "brokerId", int),
                broker_version=_optional(entry, "brokerVersion", str),
                failure_reason=_optional(entry, "failureReason", str),
            )
        )
    return BackupInfo(
        backup_id=BackupId(backup_id),
        state=state,
        failure_reason=_optional(raw, "failureReason", str),
        details=tuple(sorted(details, key=lambda d: d.partition_id)),
    )


_ISO_UTC = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?Z$")


def format_time(timestamp: str | None) -> str:
    """``2022-12-08T13:00:55.344276672Z`` -> ``2022-12-08 13:00:55Z``; anything else unchanged
    (Python 3.11 cannot parse nanoseconds, and the table needs no more than seconds)."""
    if not timestamp:
        return ""
    match = _ISO_UTC.match(timestamp)
    return f"{match.group(1)} {match.group(2)}Z" if match else timestamp


def styled(state: BackupState) -> str:
    style = STATE_STYLES[state]
    return f"[{style}]{state}[/{style}]"


def partition_states(info: BackupInfo) -> str:
    """The per-partition states in one cell: ``COMPLETED x3`` when all agree, else
    ``1:COMPLETED 2:FAILED 3:IN_PROGRESS``."""
    states = {d.state for d in info.details}
    if not info.details:
        return ""
    if len(states) == 1:
        return f"{styled(info.details[0].state)} x{len(info.details)}"
    return " ".join(f"{d.partition_id}:{styled(d.state)}" for d in info.details)


def status_table(info: BackupInfo) -> Table:
    """One backup: its state (and failure reason) in the title, one row per partition."""
    title = f"Backup {info.backup_id}: {styled(info.state)}"
    if info.failure_reason:
        title += f"\n{info.failure_reason}"
    table = Table(title=title, title_justify="left")
    failures = any(d.failure_reason for d in info.details)
    # Ids and states never wrap; times may break between date and time on a narrow terminal.
    # (lastUpdatedAt and brokerVersion are left to --json: the table must fit 80 columns.)
    table.add_column("Partition", justify="right", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Created")
    table.add_column("Position", justify="right", no_wrap=True)
    table.add_column("Snapshot", no_wrap=True)
    table.add_column("Broker", justify="right", no_wrap=True)
    if failures:  # only FAILED partitions have one: no empty column otherwise
        table.add_column("Failure reason")
    for d in info.details:
        row = [
            str(d.partition_id),
            styled(d.state),
            format_time(d.created_at),
            "" if d.checkpoint_position is None else str(d.checkpoint_position),
            d.snapshot_id or "",
            "" if d.broker_id is None else str(d.broker_id),
        ]
        table.add_row(*row, *([d.failure_reason or ""] if failures else []))
    return table


def list_table(infos: list[BackupInfo]) -> Table:
    """Many backups, one row each, in the server's order (newest id first)."""
    table = Table(title_justify="left")
    table.add_column("Backup ID", justify="right", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Partitions")
    table.add_column("Created")
    table.add_column("Failure reason")
    for info in infos:
        table.add_row(
            str(info.backup_id),
            styled(info.state),
            partition_states(info),
            format_time(info.created_at),
            info.failure_reason or "",
        )
    return table


# --------------------------------------------------------------------------------------------
# Waiting (pure judge)
# --------------------------------------------------------------------------------------------


class Verdict(enum.Enum):
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed out"


@attrs.define
class TakeProgress:
    """Judges the states seen while waiting for a backup to finish."""

    incomplete_grace_s: float = DEFAULT_INCOMPLETE_GRACE_S
    incomplete_since_s: float | None = None

    def observe(self, state: BackupState, now_s: float) -> Verdict:
        """The verdict after seeing ``state`` (DOES_NOT_EXIST for a 404) at ``now_s``."""
        if state == BackupState.COMPLETED:
            return Verdict.SUCCEEDED
        if state == BackupState.FAILED:
            return Verdict.FAILED
        if state != BackupState.INCOMPLETE:
            # IN_PROGRESS, or DOES_NOT_EXIST (not visible yet): keep waiting.
            self.incomplete_since_s = None
            return Verdict.WAITING
        if self.incomplete_since_s is None:
            self.incomplete_since_s = now_s
        if now_s - self.incomplete_since_s >= self.incomplete_grace_s:
            return Verdict.FAILED
        return Verdict.WAITING


def progress_text(info: BackupInfo | None, backup_id: BackupId) -> str:
    """What the spinner says: the state and how many partitions are done."""
    if info is None:
        return f"Backup {backup_id}: not visible yet"
    done = sum(1 for d in info.details if d.state is BackupState.COMPLETED)
    return f"Backup {backup_id}: {info.state} ({done}/{len(info.details)} partitions completed)"


# --------------------------------------------------------------------------------------------
# The HTTP shell
# --------------------------------------------------------------------------------------------


def _clip(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= ERROR_BODY_CHARS_MAX else line[: ERROR_BODY_CHARS_MAX - 3] + "..."


def error_message(status: int, reason: str | None, body: bytes) -> str:
    """The server's ``{"message"}``, else the body's text, else the HTTP reason: one line."""
    text = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for field in ("message", "detail"):
            if isinstance(parsed.get(field), str) and parsed[field]:
                return _clip(parsed[field])
    if text.strip():
        return _clip(text)
    return f"HTTP {status} {reason or ''}".rstrip()


class BackupClient:
    """The actuator Backup API at ``base_url`` (e.g. ``http://localhost:9600``).

    Use as ``async with BackupClient(url) as client:``. Every method raises
    :class:`BackupApiError`, :class:`GatewayUnreachable` or :class:`MalformedAnswer`.
    """

    def __init__(self, base_url: str, request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = request_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BackupClient:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._session is not None, "use BackupClient in 'async with'"
        url = f"{self.base_url}/actuator/backups{path}"
        try:
            async with self._session.request(method, url, json=body) as response:
                payload = await response.read()
                if response.status >= 400:
                    raise BackupApiError(
                        response.status, error_message(response.status, response.reason, payload)
                    )
                if not payload:
                    return response.status, None
                try:
                    return response.status, json.loads(payload)
                except ValueError as exc:
                    text = _clip(payload.decode(errors="replace"))
                    raise MalformedAnswer(f"unexpected answer from the gateway: {text}") from exc
        except TimeoutError as exc:
            raise GatewayUnreachable(
                f"no answer from the gateway at {self.base_url} within {self._timeout_s:g}s"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            # "Connection refused" rather than aiohttp's "Cannot connect to host ... ssl:default".
            error = exc.os_error
            reason = os.strerror(error.errno) if error.errno and error.errno > 0 else None
            reason = reason or error.strerror or str(error)
            raise GatewayUnreachable(
                f"cannot reach the gateway at {self.base_url}: {reason}"
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise GatewayUnreachable(f"cannot reach the gateway at {self.base_url}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise GatewayUnreachable(
                f"request to the gateway at {self.base_url} failed: {exc}"
            ) from exc

    async def take(self, backup_id: BackupId | None) -> Any:
        """``POST /actuator/backups``: schedule backup ``backup_id``, or one whose id the cluster
        generates (None: no body); the raw 202 answer."""
        body = None if backup_id is None else {"backupId": backup_id}
        return (await self._call("POST", "", body))[1]

    async def status(self, backup_id: BackupId) -> Any:
        """``GET /actuator/backups/{id}``: the raw BackupInfo (404 raises BackupApiError)."""
        return (await self._call("GET", f"/{backup_id}"))[1]

    async def list_backups(self, prefix: str = "") -> Any:
        """``GET /actuator/backups`` or ``/actuator/backups/{prefix}*``: the raw list."""
        assert prefix == "" or prefix.isdigit(), prefix
        return (await self._call("GET", f"/{prefix}*" if prefix else ""))[1]

    async def delete(self, backup_id: BackupId) -> None:
        """``DELETE /actuator/backups/{id}`` (204 also when nothing existed)."""
        await self._call("DELETE", f"/{backup_id}")


def generated_id(answer: Any) -> BackupId:
    """The id of a backup the cluster generated, from the 202 answer to a POST without an id.

    Raises:
        MalformedAnswer: the answer names no id (a cluster that does not generate ids refuses
            the POST with 400 before this).
    """
    backup_id = answer.get("backupId") if isinstance(answer, dict) else None
    if not isinstance(backup_id, int) or isinstance(backup_id, bool) or backup_id <= 0:
        raise MalformedAnswer(f"the gateway's answer names no backup id: {_clip(str(answer))}")
    return BackupId(backup_id)


@attrs.frozen
class WaitResult:
    verdict: Verdict
    raw: Any = None
    info: BackupInfo | None = None
    last_error: str | None = None


Clock = Callable[[], float]
Sleep = Callable[[float], Any]
OnUpdate = Callable[[str], None]


async def wait_for_backup(
    client: BackupClient,
    backup_id: BackupId,
    *,
    timeout_s: float,
    poll_interval_s: float,
    incomplete_grace_s: float,
    clock: Clock,
    sleep: Sleep,
    on_update: OnUpdate,
) -> WaitResult:
    """Poll the backup's status until it succeeds, fails or ``timeout_s`` passes.

    Retriable failures (502/503/504, unreachable) are reported through ``on_update`` and retried;
    others raise (:class:`BackupApiError`, :class:`MalformedAnswer`).
    """
    judge = TakeProgress(incomplete_grace_s)
    deadline_s = clock() + timeout_s
    raw: Any = None
    info: BackupInfo | None = None
    last_error: str | None = None
    while True:
        try:
            raw = await client.status(backup_id)
            info = parse_backup_info(raw)
            state: BackupState | None = info.state
            last_error = None
        except BackupApiError as exc:
            if exc.status == 404:
                raw, info, state = None, None, BackupState.DOES_NOT_EXIST
            elif exc.status in RETRIABLE_STATUSES:
                state, last_error = None, exc.message
            else:
                raise
        except GatewayUnreachable as exc:
            state, last_error = None, exc.message
        verdict = judge.observe(state, clock()) if state is not None else Verdict.WAITING
        if verdict is not Verdict.WAITING:
            return WaitResult(verdict, raw, info)
        on_update(
            f"{progress_text(info, backup_id)} (retrying: {last_error})"
            if last_error
            else progress_text(info, backup_id)
        )
        remaining_s = deadline_s - clock()
        if remaining_s <= 0:
            return WaitResult(Verdict.TIMED_OUT, raw, info, last_error)
        await sleep(min(poll_interval_s, remaining_s))


async def wait_for_deletion(
    client: BackupClient,
    backup_id: BackupId,
    *,
    timeout_s: float,
    poll_interval_s: float,
    clock: Clock,
    sleep: Sleep,
    on_update: OnUpdate,
) -> WaitResult:
    """Poll until the backup's status is 404 (SUCCEEDED) or ``timeout_s`` passes (TIMED_OUT).

    Retriable failures are retried; others raise as in :func:`wait_for_backup`.
    """
    deadline_s = clock() + timeout_s
    raw: Any = None
    info: BackupInfo | None = None
    last_error: str | None = None
    while True:
        try:
            raw = await client.status(backup_id)
            info = parse_backup_info(raw)
            last_error = None
            on_update(f"Backup {backup_id}: still {info.state}")
        except BackupApiError as exc:
            if exc.status == 404:
                return WaitResult(Verdict.SUCCEEDED)
            if exc.status not in RETRIABLE_STATUSES:
                raise
            last_error = exc.message
            on_update(f"Backup {backup_id}: retrying: {last_error}")
        except GatewayUnreachable as exc:
            last_error = exc.message
            on_update(f"Backup {backup_id}: retrying: {last_error}")
        remaining_s = deadline_s - clock()
        if remaining_s <= 0:
            return WaitResult(Verdict.TIMED_OUT, raw, info, last_error)
        await sleep(min(poll_interval_s, remaining_s))

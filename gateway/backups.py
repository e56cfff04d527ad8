"""The Backup Management API on the management port (REFERENCE.md §1).

``POST/GET /actuator/backups``, ``GET/DELETE /actuator/backups/{id}``, prefix listing
``GET /actuator/backups/{digits}*``, all of it also under ``/actuator/backupRuntime`` (Zeebe
8.8). Every call fans out to the leader of every partition; the decisions (202 or 409, the
aggregated state) are pure functions below, tested over every combination of inputs.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from gateway.client import BrokerClient
from zeebe_sim.ground.backups import ID_REQUIRED, BackupState, aggregate_states, parse_backup_id
from zeebe_sim.ground.errors import AlreadyExists, InvalidArgument, NotFound
from zeebe_sim.ground.ids import NO_CHECKPOINT, BackupId, PartitionId
from zeebe_sim.ground.protocol import (
    BackupStatusRequest,
    BackupStatusResponse,
    DeleteBackupRequest,
    ListBackupsRequest,
    ListBackupsResponse,
    Message,
    PartitionBackupStatus,
    TakeBackupRequest,
    TakeBackupResponse,
)

CLIENT = web.AppKey("backup-client", BrokerClient)
FANOUT_JITTER_S = web.AppKey("backup-fanout-jitter-s", float)
_DIGITS = re.compile(r"[0-9]+")  # used with fullmatch: "7\n" is not an id
# BackupInfo detail fields (REFERENCE.md §1), by the wire field they come from.
DETAIL_FIELDS = {
    "partitionId": "partition_id",
    "state": "state",
    "failureReason": "failure_reason",
    "createdAt": "created_at",
    "lastUpdatedAt": "last_updated_at",
    "snapshotId": "snapshot_id",
    "checkpointPosition": "checkpoint_position",
    "brokerId": "broker_id",
    "brokerVersion": "broker_version",
}
# The list shows less per partition, but the version on every entry (REFERENCE.md §1).
LIST_DETAIL_FIELDS = ("partitionId", "state", "failureReason", "createdAt", "brokerVersion")


# -- pure decisions ---------------------------------------------------------------------------


def parse_path_id(raw: str) -> BackupId:
    """A backup id in a URL path: digits only (no sign, no spaces), by the one id rule.

    Raises:
        InvalidArgument: anything else (HTTP 400).
    """
    if not _DIGITS.fullmatch(raw):
        raise InvalidArgument(f"{ID_REQUIRED}, but it was {raw[:40]!r}")
    return parse_backup_id(raw)


def take_backup_outcome(backup_id: BackupId, answers: list[TakeBackupResponse]) -> None:
    """202 iff some partition created checkpoint ``backup_id`` and none is beyond it.

    Why not "every partition CREATED": a partition may already have created this checkpoint
    because an inter-partition command carried it (REFERENCE §3); it then answers IGNORED.

    Raises:
        AlreadyExists: HTTP 409 with Zeebe's message.
    """
    latest = max((a.checkpoint_id for a in answers), default=NO_CHECKPOINT)
    if any(a.created for a in answers) and latest == backup_id:
        return
    raise AlreadyExists(
        f"Requested backup has id {backup_id}. The latest backup has id {latest}. "
        "Id of new backups must be higher than the previous one."
    )


def detail_json(status: PartitionBackupStatus, fields: Iterable[str]) -> dict[str, Any]:
    """A BackupInfo detail; absent optional fields are omitted, not null (REFERENCE §1)."""
    body: dict[str, Any] = {}
    for name in fields:
        value = getattr(status, DETAIL_FIELDS[name])
        if value is not None:
            body[name] = value.value if isinstance(value, BackupState) else value
    return body


def aggregate(
    backup_id: BackupId,
    statuses: list[PartitionBackupStatus],
    fields: Iterable[str] = DETAIL_FIELDS,
) -> dict[str, Any]:
    """BackupInfo from one status per partition, by REFERENCE §1's ordered rules."""
    statuses = sorted(statuses, key=lambda s: s.partition_id)
    state = aggregate_states({s.state for s in statuses})
    info: dict[str, Any] = {"backupId": backup_id, "state": state.value}
    if state is BackupState.FAILED:
        info["failureReason"] = "".join(
            f"Backup on partition {s.partition_id} failed due to "
            f"{s.failure_reason or 'Unknown reason'}. "
            for s in statuses
            if s.state is BackupState.FAILED
        )
    info["details"] = [detail_json(s, fields) for s in statuses]
    return info


def aggregate_list(
    partition_ids: list[PartitionId], per_partition: list[list[PartitionBackupStatus]]
) -> list[dict[str, Any]]:
    """Merge each partition's list into one BackupInfo per backup id, newest id first. A
    partition with no entry for an id counts as DOES_NOT_EXIST, so a backup never looks
    COMPLETED while a partition is missing."""
    by_id: dict[BackupId, dict[PartitionId, PartitionBackupStatus]] = {}
    for statuses in per_partition:
        for status in statuses:
            by_id.setdefault(status.backup_id, {})[status.partition_id] = status
    return [
        aggregate(
            backup_id,
            [
                by_id[backup_id].get(
                    p, PartitionBackupStatus(backup_id, p, BackupState.DOES_NOT_EXIST)
                )
                for p in partition_ids
            ],
            LIST_DETAIL_FIELDS,
        )
        for backup_id in sorted(by_id, reverse=True)
    ]


# -- handlers ---------------------------------------------------------------------------------


async def _fan_out(
    client: BrokerClient,
    make: Any,
    *,
    idempotent: bool = True,
    delay_s: Callable[[], float] = lambda: 0.0,
) -> list[Message]:
    """One request per partition, concurrently; the first error wins (mapped by status)."""
    partitions = client.partition_ids()
    if not partitions:
        await client.refresh_topology()
        partitions = client.partition_ids()

    async def one(partition: PartitionId) -> Message:
        delay = delay_s()
        if delay:
            await asyncio.sleep(delay)
        return await client.to_partition(partition, make(partition), idempotent=idempotent)

    return list(await asyncio.gather(*(one(p) for p in partitions)))


async def take_backup(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    if not request.can_read_body:
        raise InvalidArgument(f"{ID_REQUIRED}, but the request has no body")
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, too deeply nested
        raise InvalidArgument(f"{ID_REQUIRED}, but the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict) or "backupId" not in body:
        raise InvalidArgument(f"{ID_REQUIRED}, but the body has no backupId")
    backup_id = parse_backup_id(body["backupId"])
    jitter_s = request.app[FANOUT_JITTER_S]
    answers = await _fan_out(
        client,
        lambda p: TakeBackupRequest(p, backup_id),
        idempotent=False,
        delay_s=lambda: random.uniform(0, jitter_s) if jitter_s else 0.0,
    )
    take_backup_outcome(backup_id, [a for a in answers if isinstance(a, TakeBackupResponse)])
    return web.json_response(
        {
            "message": f"A backup with id {backup_id} has been scheduled. Use GET "
            f"actuator/backups/{backup_id} to monitor the status."
        },
        status=202,
    )


async def get_backup(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    raw = request.match_info["backup"]
    if raw.endswith("*"):
        return await _list(client, raw[:-1])
    backup_id = parse_path_id(raw)
    answers = await _fan_out(client, lambda p: BackupStatusRequest(p, backup_id))
    statuses = [a.status for a in answers if isinstance(a, BackupStatusResponse)]
    info = aggregate(backup_id, statuses)
    if info["state"] == BackupState.DOES_NOT_EXIST.value:
        raise NotFound(f"Backup with id {backup_id} does not exist")
    return web.json_response(info)


async def list_backups(request: web.Request) -> web.Response:
    return await _list(request.app[CLIENT], "")


async def _list(client: BrokerClient, prefix: str) -> web.Response:
    if prefix and not _DIGITS.fullmatch(prefix):
        raise InvalidArgument(f"The backup id prefix must be digits, but it was '{prefix}'")
    answers = await _fan_out(client, lambda p: ListBackupsRequest(p, prefix or None))
    lists = [a.statuses for a in answers if isinstance(a, ListBackupsResponse)]
    return web.json_response(aggregate_list(client.partition_ids(), lists))


async def delete_backup(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    backup_id = parse_path_id(request.match_info["backup"])
    await _fan_out(client, lambda p: DeleteBackupRequest(p, backup_id))
    return web.Response(status=204)


def add_routes(app: web.Application, client: BrokerClient, fanout_jitter_s: float = 0.0) -> None:
    """Add the Backup API. ``fanout_jitter_s`` (teaching): TAKE_BACKUP reaches each partition
    after a random delay up to this long, as requests reach partitions at different times in a
    real cluster; with --unsafe-no-checkpoint-propagation that makes inconsistent cuts likely."""
    app[CLIENT] = client
    app[FANOUT_JITTER_S] = fanout_jitter_s
    for base in ("/actuator/backups", "/actuator/backupRuntime"):
        app.router.add_post(base, take_backup)
        app.router.add_get(base, list_backups)
        app.router.add_get(base + "/{backup}", get_backup)
        app.router.add_delete(base + "/{backup}", delete_backup)

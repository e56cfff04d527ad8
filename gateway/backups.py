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
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.client import BrokerClient
from zeebe_sim.ground.errors import AlreadyExists, InvalidArgument, NotFound
from zeebe_sim.ground.protocol import (
    BackupStatusRequest,
    BackupStatusResponse,
    DeleteBackupRequest,
    ListBackupsRequest,
    ListBackupsResponse,
    Message,
    TakeBackupRequest,
    TakeBackupResponse,
)

CLIENT = web.AppKey("backup-client", BrokerClient)
FANOUT_JITTER_S = web.AppKey("backup-fanout-jitter-s", float)
INT64_MAX = 2**63 - 1
ID_REQUIRED = "A backupId must be provided and it must be > 0"
_DIGITS = re.compile(r"[0-9]+")  # used with fullmatch: "7\n" is not an id
# int64's largest value has 19 digits: longer digit strings are refused before int() (which
# refuses beyond 4,300 digits with a ValueError of its own).
ID_DIGITS_MAX = 19
# Order of "goodness" of a partition's state: the best copy counts (REFERENCE §1).
STATE_ORDER = ("DOES_NOT_EXIST", "FAILED", "IN_PROGRESS", "COMPLETED")
LIST_DETAIL_FIELDS = ("partitionId", "state", "failureReason", "createdAt", "brokerVersion")


# -- pure decisions ---------------------------------------------------------------------------


def parse_backup_id(raw: Any) -> int:
    """A backupId from a JSON body: an integer > 0 in int64, or a string of such digits (the
    docs' own curl example sends ``"100"``).

    Raises:
        InvalidArgument: anything else (HTTP 400).
    """
    if isinstance(raw, bool):
        raise InvalidArgument(f"{ID_REQUIRED}, but it was a boolean")
    if isinstance(raw, str):
        text = raw.strip(" ")
        if not _DIGITS.fullmatch(text):
            raise InvalidArgument(f"{ID_REQUIRED}, but it was {_shown(raw)}")
        if len(text.lstrip("0")) > ID_DIGITS_MAX:
            raise InvalidArgument(
                f"{ID_REQUIRED} and at most {INT64_MAX}, but it was {_shown(raw)}"
            )
        raw = int(text)
    if isinstance(raw, float):
        raise InvalidArgument(f"{ID_REQUIRED} and a whole number, but it was {raw}")
    if not isinstance(raw, int):
        raise InvalidArgument(ID_REQUIRED)
    if raw <= 0:
        raise InvalidArgument(f"{ID_REQUIRED}, but it was {raw}")
    if raw > INT64_MAX:
        raise InvalidArgument(f"{ID_REQUIRED} and at most {INT64_MAX}, but it was {_shown(raw)}")
    return raw


def parse_path_id(raw: str) -> int:
    if not _DIGITS.fullmatch(raw):
        raise InvalidArgument(f"{ID_REQUIRED}, but it was {_shown(raw)}")
    return parse_backup_id(raw)


def _shown(raw: object) -> str:
    """A client's value in an error message: quoted and cut short."""
    text = repr(raw) if isinstance(raw, str) else str(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def take_backup_outcome(backup_id: int, answers: list[TakeBackupResponse]) -> None:
    """202 iff some partition created checkpoint ``backup_id`` and none is beyond it.

    Why not "every partition CREATED": a partition may already have created this checkpoint
    because an inter-partition command carried it (REFERENCE §3); it then answers IGNORED.

    Raises:
        AlreadyExists: HTTP 409 with Zeebe's message.
    """
    latest = max((a.checkpoint_id for a in answers), default=-1)
    if any(a.created for a in answers) and latest == backup_id:
        return
    raise AlreadyExists(
        f"Requested backup has id {backup_id}. The latest backup has id {latest}. "
        "Id of new backups must be higher than the previous one."
    )


def aggregate(backup_id: int, details: list[dict[str, Any]]) -> dict[str, Any]:
    """BackupInfo from one detail per partition, by REFERENCE §1's ordered rules."""
    details = sorted(details, key=lambda d: d["partitionId"])
    states = {d["state"] for d in details}
    info: dict[str, Any] = {"backupId": backup_id}
    if "FAILED" in states:
        info["state"] = "FAILED"
        info["failureReason"] = "".join(
            f"Backup on partition {d['partitionId']} failed due to "
            f"{d.get('failureReason') or 'Unknown reason'}. "
            for d in details
            if d["state"] == "FAILED"
        )
    elif "DOES_NOT_EXIST" in states and states & {"IN_PROGRESS", "COMPLETED"}:
        info["state"] = "INCOMPLETE"
    elif "IN_PROGRESS" in states:
        info["state"] = "IN_PROGRESS"
    elif states <= {"DOES_NOT_EXIST"}:
        info["state"] = "DOES_NOT_EXIST"
    else:
        info["state"] = "COMPLETED"
    info["details"] = details
    return info


def aggregate_list(
    partition_ids: list[int], per_partition: list[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Merge each partition's list into one BackupInfo per backup id, newest id first. A
    partition with no entry for an id counts as DOES_NOT_EXIST, so a backup never looks
    COMPLETED while a partition is missing."""
    by_id: dict[int, dict[int, dict[str, Any]]] = {}
    for entries in per_partition:
        for entry in entries:
            fields = {k: entry[k] for k in LIST_DETAIL_FIELDS if k in entry}
            by_id.setdefault(entry["backupId"], {})[entry["partitionId"]] = fields
    result = []
    for backup_id in sorted(by_id, reverse=True):
        found = by_id[backup_id]
        details = [
            found.get(p, {"partitionId": p, "state": "DOES_NOT_EXIST"}) for p in partition_ids
        ]
        result.append(aggregate(backup_id, details))
    return result


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

    async def one(partition: int) -> Message:
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
    details = [a.status for a in answers if isinstance(a, BackupStatusResponse)]
    info = aggregate(backup_id, details)
    if info["state"] == "DOES_NOT_EXIST":
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

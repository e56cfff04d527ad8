"""The backup API, once, served twice: the actuator on the management port (REFERENCE.md §1,
reference/backups-8.9-8.10.md A.6) and the 8.10 REST API on the REST port (A.7).

Actuator: ``POST/GET /actuator/backups``, ``GET/DELETE /actuator/backups/{id}``, prefix listing
``GET /actuator/backups/{digits}*``, the runtime state ``GET/DELETE .../state`` and
``POST .../state/sync``, all of it also under ``/actuator/backupRuntime``. REST:
``POST/GET /v2/backups/runtime``, ``GET/DELETE /v2/backups/runtime/{backupId}``,
``GET ?prefix=``, ``GET/DELETE /v2/backups/runtime/state`` and ``POST .../state/sync``.

Theory of operation
-------------------
Every call fans out to the leader of every partition; the decisions (the id to take, 202 or
409, the aggregated state, the runtime state) are pure functions below, tested over every
combination of inputs. One BackupInfo is built per backup with every field (``None`` where
unknown); the two APIs only differ in how they show it: the REST API writes every field, null
included, and every detail field; the actuator leaves absent fields out and shows less per
partition in a list (REFERENCE §1). Errors are raised as ``ZeebeSimError``; each app's error
middleware turns them into its own body (``{"message"}`` or Problem Details).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from gateway.client import BrokerClient
from gateway.rest_input import check_json_content_type
from zeebe_sim.ground.backups import (
    BACKUP_ID_MAX,
    ID_REQUIRED,
    BackupState,
    CheckpointInfo,
    CheckpointType,
    aggregate_states,
    parse_backup_id,
)
from zeebe_sim.ground.errors import (
    AlreadyExists,
    BrokerUnavailable,
    InvalidArgument,
    NotFound,
)
from zeebe_sim.ground.ids import NO_CHECKPOINT, BackupId, PartitionId
from zeebe_sim.ground.protocol import (
    BackupRuntimeStateRequest,
    BackupRuntimeStateResponse,
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

Status = PartitionBackupStatus
_Rendered = dict[BackupId, tuple[tuple[Status | None, ...], bytes]]
CLIENT = web.AppKey("backup-client", BrokerClient)
FANOUT_JITTER_S = web.AppKey("backup-fanout-jitter-s", float)
ACTUATOR_BASES = ("/actuator/backups", "/actuator/backupRuntime")
REST_BASE = "/v2/backups/runtime"
STATE = "state"
_SIGNED = re.compile(r"[+-]?[0-9]+")  # a Java long's text, as Zeebe parses a path id
_PREFIX = re.compile(r"-?[0-9]*")  # any decimal text; a sign matches no backup id
# PartitionBackupInfo fields (REST order, A.7), by the wire field they come from.
DETAIL_FIELDS = {
    "partitionId": "partition_id",
    "state": "state",
    "failureReason": "failure_reason",
    "createdAt": "created_at",
    "lastUpdatedAt": "last_updated_at",
    "snapshotId": "snapshot_id",
    "firstLogPosition": "first_log_position",
    "checkpointPosition": "checkpoint_position",
    "brokerId": "broker_id",
    "brokerVersion": "broker_version",
}
# The actuator's list shows less per partition, but the version on every entry (REFERENCE §1).
LIST_DETAIL_FIELDS = ("partitionId", "state", "failureReason", "createdAt", "brokerVersion")
# What the actuator shows of a FAILED partition in a status (REFERENCE §1).
FAILED_DETAIL_FIELDS = (
    "partitionId",
    "state",
    "failureReason",
    "createdAt",
    "lastUpdatedAt",
    "snapshotId",
)
GENERATED_ID_GIVEN = (
    "Cannot take backup with predetermined backupId when continuous backups and/or backup or "
    "checkpoint scheduler is enabled. Use POST actuator/backupRuntime without specifying a "
    "backupId."
)


# -- pure decisions ---------------------------------------------------------------------------


def parse_selector(raw: str, expected: str) -> BackupId:
    """A backup id in a URL path, as Zeebe reads it: any long, sign included. No backup has an
    id <= 0: GET answers 404 and DELETE 204 without asking anyone (REFERENCE §1).

    Raises:
        InvalidArgument: not a long; ``expected`` names what was (HTTP 400).
    """
    if not _SIGNED.fullmatch(raw) or len(raw.lstrip("+-").lstrip("0")) > len(str(BACKUP_ID_MAX)):
        raise InvalidArgument(f"Expected {expected}, but got '{raw[:40]}'.")
    value = int(raw)
    if not -BACKUP_ID_MAX - 1 <= value <= BACKUP_ID_MAX:
        raise InvalidArgument(f"Expected {expected}, but got '{raw[:40]}'.")
    return BackupId(value)


def parse_prefix(raw: str) -> str | None:
    """The decimal prefix of a listing (``17`` of ``17*``; ``""`` lists all). ``None`` when no
    backup id can start with it (``-1``): the list is empty.

    Raises:
        InvalidArgument: not decimal text (HTTP 400).
    """
    if not _PREFIX.fullmatch(raw) or len(raw) > len(str(BACKUP_ID_MAX)) + 1:
        raise InvalidArgument(f"Expected a backup ID or prefix ending with '*', but got '{raw}*'.")
    return None if raw.startswith("-") else raw


def backup_id_to_take(requested: BackupId | None, offset: int | None, now_ms: int) -> BackupId:
    """The id a POST takes: the one given, or in generated-id mode (``offset`` not None, the
    cluster generates ids) epoch milliseconds plus the offset (A.3, A.6).

    Raises:
        InvalidArgument: an id given in generated-id mode, or none given outside it (HTTP 400).
    """
    if offset is None:
        if requested is None:
            raise InvalidArgument(ID_REQUIRED)
        return requested
    if requested is not None:
        raise InvalidArgument(GENERATED_ID_GIVEN)
    return parse_backup_id(now_ms + offset)


def take_backup_outcome(backup_id: BackupId, answers: list[TakeBackupResponse]) -> None:
    """202 iff some partition created checkpoint ``backup_id`` and none is beyond it.

    Why not "every partition CREATED": a partition may already have created this checkpoint
    because an inter-partition command carried it (REFERENCE §3); it then answers IGNORED.

    Raises:
        AlreadyExists: HTTP 409 with Zeebe's newest message.
    """
    latest = max((a.checkpoint_id for a in answers), default=NO_CHECKPOINT)
    if any(a.created for a in answers) and latest == backup_id:
        return
    raise AlreadyExists(
        f"Requested backup has ID {backup_id}. The latest backup has ID {latest}. The backup "
        "ID must be greater than the ID of previous backups that are completed, failed, or "
        "deleted."
    )


def partition_info(status: PartitionBackupStatus) -> dict[str, Any]:
    """One PartitionBackupInfo with every field, ``None`` where unknown."""
    info = {name: getattr(status, wire) for name, wire in DETAIL_FIELDS.items()}
    info["state"] = status.state.value
    return info


def aggregate(backup_id: BackupId, statuses: list[PartitionBackupStatus]) -> dict[str, Any]:
    """BackupInfo from one status per partition, by the ordered rules (REFERENCE §1, A.6):
    every field, ``failureReason`` ``None`` unless FAILED, details by partition."""
    statuses = sorted(statuses, key=lambda s: s.partition_id)
    state = aggregate_states({s.state for s in statuses})
    reason = None
    if state is BackupState.FAILED:
        reason = "".join(
            f"Backup on partition {s.partition_id} failed due to "
            f"{s.failure_reason or 'Unknown reason'}. "
            for s in statuses
            if s.state is BackupState.FAILED
        )
    return {
        "backupId": backup_id,
        "state": state.value,
        "failureReason": reason,
        "details": [partition_info(s) for s in statuses],
    }


def _or_missing(
    backup_id: BackupId, partition_ids: Sequence[PartitionId], found: Sequence[Status | None]
) -> list[Status]:
    """Each partition's status of the backup, DOES_NOT_EXIST where it has none."""
    return [
        s or PartitionBackupStatus(backup_id, p, BackupState.DOES_NOT_EXIST)
        for p, s in zip(partition_ids, found, strict=True)
    ]


def actuator_view(info: dict[str, Any], listed: bool = False) -> dict[str, Any]:
    """The actuator's BackupInfo: absent fields left out; in a list only the list fields per
    partition, in a status a FAILED partition without what it never had (REFERENCE §1)."""
    view: dict[str, Any] = {k: v for k, v in info.items() if v is not None and k != "details"}

    def shown(detail: dict[str, Any]) -> Iterable[str]:
        if listed:
            return LIST_DETAIL_FIELDS
        return FAILED_DETAIL_FIELDS if detail["state"] == BackupState.FAILED else detail

    view["details"] = [{k: d[k] for k in shown(d) if d[k] is not None} for d in info["details"]]
    return view


def _timestamp(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checkpoint_state(info: CheckpointInfo, partition_id: int) -> dict[str, Any]:
    return {
        "checkpointId": info.checkpoint_id,
        "checkpointType": info.checkpoint_type.value,
        "partitionId": partition_id,
        "checkpointPosition": info.checkpoint_position,
        "checkpointTimestamp": _timestamp(info.checkpoint_timestamp_ms),
    }


def _backup_state(info: CheckpointInfo, partition_id: int | None) -> dict[str, Any]:
    """A backup's checkpoint; its type is a backup type, so a MARKER shows as null (A.6)."""
    return {
        "checkpointId": info.checkpoint_id,
        "checkpointType": (
            None if info.checkpoint_type is CheckpointType.MARKER else info.checkpoint_type.value
        ),
        "partitionId": partition_id,
        "checkpointPosition": info.checkpoint_position,
        "firstLogPosition": info.first_log_position,
        "checkpointTimestamp": _timestamp(info.checkpoint_timestamp_ms),
    }


def runtime_state_json(answers: list[BackupRuntimeStateResponse]) -> dict[str, Any]:
    """RuntimeBackupState (A.6, A.7) from every partition's answer: the latest checkpoint of
    any type, the latest confirmed backup, every range with its oldest and newest backup (no
    partition inside a range: null); each list by partition. Every field, None if unknown."""
    answers = sorted(answers, key=lambda a: a.partition_id)
    return {
        "checkpointStates": [
            _checkpoint_state(a.checkpoint, a.partition_id)
            for a in answers
            if a.checkpoint is not None
        ],
        "backupStates": [
            _backup_state(a.backup, a.partition_id) for a in answers if a.backup is not None
        ],
        "ranges": [
            {
                "partitionId": a.partition_id,
                "start": _backup_state(start, None),
                "end": _backup_state(end, None),
            }
            for a in answers
            for start, end in a.ranges
        ],
    }


def without_nulls(value: Any) -> Any:
    """The actuator's form of a REST body: absent fields left out, at any depth."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


# -- operations, shared by both APIs ----------------------------------------------------------


async def _fan_out(
    client: BrokerClient,
    make: Callable[[PartitionId], Message],
    *,
    idempotent: bool = True,
    delay_s: Callable[[], float] = lambda: 0.0,
) -> dict[PartitionId, Message]:
    """One request per partition, concurrently; each partition's answer. The first error
    wins (mapped by status).

    Raises:
        BrokerUnavailable: no partition is known at all (HTTP 502, Zeebe's incomplete
            topology).
    """
    partitions = client.partition_ids()
    if not partitions:
        await client.refresh_topology()
        partitions = client.partition_ids()
    if not partitions:
        raise BrokerUnavailable(
            "Expected to send request to all partitions, but found no partitions in topology."
        )

    async def one(partition: PartitionId) -> Message:
        delay = delay_s()
        if delay:
            await asyncio.sleep(delay)
        return await client.to_partition(partition, make(partition), idempotent=idempotent)

    return dict(zip(partitions, await asyncio.gather(*(one(p) for p in partitions)), strict=True))


async def take(client: BrokerClient, requested: BackupId | None, jitter_s: float = 0.0) -> BackupId:
    """Take a backup on every partition; the id taken.

    Raises:
        InvalidArgument: see :func:`backup_id_to_take`; AlreadyExists: 409; or the fan-out's.
    """
    if not client.partition_ids():
        await client.refresh_topology()
    backup_id = backup_id_to_take(requested, client.backup_id_offset, time.time_ns() // 1_000_000)
    answers = await _fan_out(
        client,
        lambda p: TakeBackupRequest(p, backup_id),
        idempotent=False,
        delay_s=lambda: random.uniform(0, jitter_s) if jitter_s else 0.0,
    )
    take_backup_outcome(
        backup_id, [a for a in answers.values() if isinstance(a, TakeBackupResponse)]
    )
    return backup_id


async def status(client: BrokerClient, backup_id: BackupId) -> dict[str, Any]:
    """The BackupInfo of one backup.

    Raises:
        NotFound: it does not exist on any partition (HTTP 404).
    """
    if backup_id > 0:
        answers = await _fan_out(client, lambda p: BackupStatusRequest(p, backup_id))
        statuses = [a.status for a in answers.values() if isinstance(a, BackupStatusResponse)]
        info = aggregate(backup_id, statuses)
        if info["state"] != BackupState.DOES_NOT_EXIST.value:
            return info
    raise NotFound(f"Backup with id {backup_id} does not exist")


class Listings:
    """One API's listings (every backup whose id starts with a prefix, newest first, as a
    rendered body), kept and brought up to date by what changed.

    Why: with thousands of backups, a listing is megabytes of statuses to read, send, merge
    and encode. Each partition's leader answers with its listing's version (the store's,
    see ``storage/backup/filesystem.py``); this keeps each partition's last statuses per
    prefix and sends their version along, so a partition answers only what changed since
    (nothing at all while nothing changed; see ``ListBackupsResponse``). Each backup's JSON
    is kept with the statuses it was made from, so only the changed backups are merged and
    encoded again, and the last body per prefix while no version moved. Every list still
    asks every partition: a change anywhere is seen at once. A store that cannot version
    its listing (S3) answers no version, and its statuses are not kept."""

    PREFIXES_MAX = 4

    def __init__(self, render: Callable[[dict[str, Any]], Any]) -> None:
        """``render``: one BackupInfo as the API shows it in a list."""
        self._render = render
        # Per (prefix, partition): the listing's version and its statuses by backup id.
        self._held: dict[tuple[str, PartitionId], tuple[str, dict[BackupId, Status]]] = {}
        # Per prefix: the listings' versions it was made from and, per backup id, the
        # statuses (by partition) its JSON was made from.
        self._rendered: dict[str, tuple[tuple[str | None, ...], _Rendered]] = {}
        self._bodies: dict[str, tuple[tuple[str | None, ...], bytes]] = {}

    async def body(self, client: BrokerClient, prefix: str | None) -> bytes:
        """The rendered list of the backups whose id starts with ``prefix`` ("" for all;
        ``None``, a prefix no id can have: none)."""
        if prefix is None:
            return b"[]"
        sent: dict[PartitionId, tuple[str, dict[BackupId, Status]] | None] = {}

        def request(partition: PartitionId) -> ListBackupsRequest:
            known = sent[partition] = self._held.get((prefix, partition))
            return ListBackupsRequest(partition, prefix or None, known[0] if known else None)

        answers = await _fan_out(client, request)
        partitions = sorted(answers)
        per_partition, versions = [], []
        # The backups the deltas name; None: a partition answered everything.
        touched: set[BackupId] | None = set()
        for partition in partitions:
            answer = answers[partition]
            assert isinstance(answer, ListBackupsResponse), answer
            statuses = {s.backup_id: s for s in answer.statuses}
            if not answer.delta:
                touched = None
            else:
                known = sent[partition]
                assert known is not None, "a delta against no listing"
                if touched is not None:
                    touched.update(statuses, answer.removed)
                if answer.statuses or answer.removed:
                    statuses = {**known[1], **statuses}
                    for backup_id in answer.removed:
                        statuses.pop(backup_id, None)
                else:
                    statuses = known[1]
            if answer.version is not None:
                self._held[(prefix, partition)] = (answer.version, statuses)
            per_partition.append(statuses)
            versions.append(answer.version)
        key = tuple(versions)
        cached = self._bodies.get(prefix)
        if cached is not None and cached[0] == key and None not in key:
            return cached[1]
        since = tuple(k[0] if k else None for k in (sent[p] for p in partitions))
        body = self.merged(prefix, partitions, per_partition, (since, key), touched)
        if None not in key:
            self._bodies.pop(prefix, None)
            self._bodies[prefix] = (key, body)
            while len(self._bodies) > self.PREFIXES_MAX:
                oldest = next(iter(self._bodies))
                del self._bodies[oldest]
                self._rendered.pop(oldest, None)
                for partition_key in [k for k in self._held if k[0] == oldest]:
                    del self._held[partition_key]
        return body

    def merged(
        self,
        prefix: str,
        partitions: list[PartitionId],
        per_partition: list[dict[BackupId, Status]],
        versions: tuple[tuple[str | None, ...], tuple[str | None, ...]],
        touched: set[BackupId] | None,
    ) -> bytes:
        """One BackupInfo per backup id, newest first; a partition with no entry for an id
        counts as DOES_NOT_EXIST, so a backup never looks COMPLETED while a partition is
        missing. No I/O (:meth:`body` gathers the listings). The JSON of each backup is kept
        with the statuses it was made from; after deltas against the listings the last body
        was made from (``versions``: those, and the new ones), only the ``touched`` backups
        are looked at, else each is encoded again only if its statuses changed."""
        made_from, before = self._rendered.get(prefix, ((), {}))
        since, now = versions
        if touched is not None and made_from == since and None not in since:
            rendered, ids = dict(before), touched
        else:
            rendered, ids = {}, set().union(*per_partition)
        for backup_id in ids:
            found = tuple(statuses.get(backup_id) for statuses in per_partition)
            kept = before.get(backup_id)
            if not any(found):
                rendered.pop(backup_id, None)
            elif kept is not None and kept[0] == found:
                rendered[backup_id] = kept
            else:
                info = aggregate(backup_id, _or_missing(backup_id, partitions, found))
                rendered[backup_id] = (found, _encoded(self._render(info)))
        self._rendered[prefix] = (now, rendered)
        order = sorted(rendered, reverse=True)
        return b"[" + b",".join(rendered[backup_id][1] for backup_id in order) + b"]"


LISTINGS = web.AppKey("backup-listings", Listings)


async def delete(client: BrokerClient, backup_id: BackupId) -> None:
    """Delete every copy of the backup; nothing to do is no error."""
    if backup_id > 0:
        await _fan_out(client, lambda p: DeleteBackupRequest(p, backup_id))


async def runtime_state(
    client: BrokerClient, action: Literal["GET", "RESET", "SYNC"]
) -> dict[str, Any]:
    """Every partition's runtime state after ``action`` (RESET clears it, SYNC writes it to the
    store's metadata again); a partition that cannot answer fails the whole request."""
    answers = await _fan_out(client, lambda p: BackupRuntimeStateRequest(p, action))
    return runtime_state_json(
        [a for a in answers.values() if isinstance(a, BackupRuntimeStateResponse)]
    )


async def _requested_id(request: web.Request) -> BackupId | None:
    """``backupId`` of a POST body; ``None`` without a body or without the field (a null
    included: the REST API's field is nullable). Other properties are ignored, whatever they
    hold.

    Raises:
        UnsupportedMediaType: a body that is not JSON (415).
        InvalidArgument: the body or id is bad (400).
    """
    raw = await request.read()
    if not raw:
        return None
    check_json_content_type(request)
    try:
        body = json.loads(raw)  # bytes: UTF-8, -16 or -32, as RFC 8259 allows
    except (ValueError, RecursionError) as exc:  # bad JSON or encoding, nested too deep
        raise InvalidArgument(f"{ID_REQUIRED}, but the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidArgument(f"{ID_REQUIRED}, but the body is not a JSON object")
    given = body.get("backupId")
    return None if given is None else parse_backup_id(given)


# -- the actuator -----------------------------------------------------------------------------


async def actuator_take(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    backup_id = await take(client, await _requested_id(request), request.app[FANOUT_JITTER_S])
    return web.json_response(
        {
            "backupId": backup_id,
            "message": f"A backup with id {backup_id} has been scheduled. Use GET "
            f"actuator/backups/{backup_id} to monitor the status.",
        },
        status=202,
    )


async def actuator_list(request: web.Request) -> web.Response:
    return _json_body(await request.app[LISTINGS].body(request.app[CLIENT], ""))


async def actuator_get(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    raw = request.match_info["backup"]
    if raw.endswith("*"):
        return _json_body(await request.app[LISTINGS].body(client, parse_prefix(raw[:-1])))
    backup_id = parse_selector(raw, "a backup ID or prefix ending with '*'")
    return _json(actuator_view(await status(client, backup_id)))


async def actuator_delete(request: web.Request) -> web.Response:
    backup_id = parse_selector(request.match_info["backup"], "a backup ID or 'state'")
    await delete(request.app[CLIENT], backup_id)
    return web.Response(status=204)


async def actuator_state(request: web.Request) -> web.Response:
    return _json(without_nulls(await runtime_state(request.app[CLIENT], "GET")))


async def reset_state(request: web.Request) -> web.Response:
    """DELETE .../state, on both APIs: clear every partition's runtime state."""
    await runtime_state(request.app[CLIENT], "RESET")
    return web.Response(status=204)


async def actuator_sync_state(request: web.Request) -> web.Response:
    return _json(without_nulls(await runtime_state(request.app[CLIENT], "SYNC")))


def _encoded(body: Any) -> bytes:
    # One encoder call with compact separators: a list of 10,000 backups is several MB.
    return json.dumps(body, separators=(",", ":")).encode()


def _json(body: Any, status: int = 200) -> web.Response:
    return _json_body(_encoded(body), status)


def _json_body(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def add_routes(app: web.Application, client: BrokerClient, fanout_jitter_s: float = 0.0) -> None:
    """Add the actuator's backup API. ``fanout_jitter_s`` (teaching): TAKE_BACKUP reaches each
    partition after a random delay up to this long, as requests reach partitions at different
    times in a real cluster; with --unsafe-no-checkpoint-propagation that makes inconsistent
    cuts likely."""
    app[CLIENT] = client
    app[FANOUT_JITTER_S] = fanout_jitter_s
    app[LISTINGS] = Listings(lambda info: actuator_view(info, True))
    for base in ACTUATOR_BASES:
        # Before ".../{backup}", which "state" would also match.
        app.router.add_get(f"{base}/{STATE}", actuator_state)
        app.router.add_delete(f"{base}/{STATE}", reset_state)
        app.router.add_post(f"{base}/{STATE}/sync", actuator_sync_state)
        app.router.add_post(base, actuator_take)
        app.router.add_get(base, actuator_list)
        app.router.add_get(base + "/{backup}", actuator_get)
        app.router.add_delete(base + "/{backup}", actuator_delete)


# -- the 8.10 REST API ------------------------------------------------------------------------


async def rest_take(request: web.Request) -> web.Response:
    backup_id = await take(request.app[CLIENT], await _requested_id(request))
    return _json({"backupId": backup_id}, status=202)


async def rest_list(request: web.Request) -> web.Response:
    raw = request.query.get("prefix", "*")
    if not raw.endswith("*"):
        raise InvalidArgument(f"Expected a prefix ending with '*', but got '{raw[:40]}'.")
    return _json_body(await request.app[LISTINGS].body(request.app[CLIENT], parse_prefix(raw[:-1])))


async def rest_get(request: web.Request) -> web.Response:
    backup_id = parse_selector(request.match_info["backupId"], "a backup ID")
    return _json(await status(request.app[CLIENT], backup_id))


async def rest_delete(request: web.Request) -> web.Response:
    backup_id = parse_selector(request.match_info["backupId"], "a backup ID")
    await delete(request.app[CLIENT], backup_id)
    return web.Response(status=204)


async def rest_state(request: web.Request) -> web.Response:
    return _json(await runtime_state(request.app[CLIENT], "GET"))


async def rest_sync_state(request: web.Request) -> web.Response:
    return _json(await runtime_state(request.app[CLIENT], "SYNC"))


def add_rest_routes(app: web.Application, client: BrokerClient) -> None:
    """Add the backup endpoints of the REST API (A.7) to the REST app."""
    app[CLIENT] = client
    app[LISTINGS] = Listings(lambda info: info)
    app.router.add_get(f"{REST_BASE}/{STATE}", rest_state)
    app.router.add_delete(f"{REST_BASE}/{STATE}", reset_state)
    app.router.add_post(f"{REST_BASE}/{STATE}/sync", rest_sync_state)
    app.router.add_post(REST_BASE, rest_take)
    app.router.add_get(REST_BASE, rest_list)
    app.router.add_get(REST_BASE + "/{backupId}", rest_get)
    app.router.add_delete(REST_BASE + "/{backupId}", rest_delete)

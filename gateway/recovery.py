"""In-process restore, the gateway's part (8.10, backups-8.9-8.10 A.7): ``PATCH /v2/mode``,
``POST``/``GET /v2/restore`` on the REST port and ``GET /actuator/cluster`` on the management
port.

Theory of operation
-------------------
A *cluster change* is a mode change or a restore, numbered by the gateway (``changeId``). At
most one runs at a time; it runs in a background task owned by the coordinator, and
``/actuator/cluster`` shows it as ``pendingChange`` until it ends, then as ``lastChange``.

- A mode change sends ``ModeChangeRequest`` to every broker (each answers once its partitions
  are paused or resumed).
- A restore first checks that every broker of the cluster is RECOVERING (else 409) and has one
  broker resolve the backups or the window against the store (``RestorePlanRequest``: 404 for
  a backup not COMPLETED on every partition, 400 for an empty window or a gap), answers 202
  with the plan, then restores each broker's partitions one at a time across the cluster
  (``RestorePartitionRequest``) and switches every broker back to PROCESSING.
  ``GET /v2/restore`` shows its progress per broker and partition while it runs, and a FAILED
  one until the next change; a completed restore is not kept (404), as in Zeebe.

Which status for a backup that is not COMPLETED: the 8.10 docs say 400, the SDK (generated
from the API's OpenAPI document) says 404 "a requested backup has no completed backup on at
least one partition". We answer 404: it is the contract clients are generated from, and
it matches ``GET /v2/backups/runtime/{id}`` for a backup that is not there.

The state lives in the gateway process: a gateway restarted during a restore forgets it (the
brokers stay RECOVERING, a new ``POST /v2/restore`` starts over, which is safe because
restoring a partition in place is repeatable).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from datetime import UTC, datetime
from typing import Any, Literal

import attrs
from aiohttp import web

from gateway.client import BrokerClient
from gateway.rest_input import json_body
from zeebe_sim.ground.errors import InvalidArgument, InvalidState, NotFound, ZeebeSimError
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.protocol import (
    BrokerMode,
    ModeChangeRequest,
    ModeChangeResponse,
    RestorePartitionRequest,
    RestorePlanRequest,
    RestorePlanResponse,
)
from zeebe_sim.ground.tasks import OwnedTasks

MODES: tuple[BrokerMode, ...] = ("RECOVERING", "PROCESSING")
MODE_CHANGE_TIMEOUT_S = 30.0
# Downloading and laying out one partition: generous, a backup can be gigabytes.
PARTITION_RESTORE_TIMEOUT_S = 600.0
PLAN_TIMEOUT_S = 60.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@attrs.define
class PartitionProgress:
    broker_id: NodeId
    partition_id: PartitionId
    backup_ids: list[int]
    state: Literal["PENDING", "RESTORING", "RESTORED"] = "PENDING"
    completed_ms: int | None = None


@attrs.define
class Change:
    id: int
    operations: list[dict[str, Any]]
    started_ms: int
    status: Literal["IN_PROGRESS", "COMPLETED", "FAILED"] = "IN_PROGRESS"
    completed_ms: int | None = None
    failure: str | None = None
    # a restore's progress; empty for a mode change
    partitions: list[PartitionProgress] = attrs.Factory(list)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "startedAt": _iso(self.started_ms),
            "completedAt": _iso(self.completed_ms),
        }


def mode_operations(brokers: list[NodeId], mode: BrokerMode) -> list[dict[str, Any]]:
    return [
        {"operation": operation, "brokerId": str(node), "mode": mode}
        for node in brokers
        for operation in ("ModeChangeOperation", "AwaitModeChangeOperation")
    ]


def restore_operations(partitions: list[PartitionProgress]) -> list[dict[str, Any]]:
    """The plan as Zeebe words it: per broker and partition, drop the local data and restore;
    then every broker back to PROCESSING. (Zeebe's UpdateIncarnationNumberOperation is left
    out: zeebe-sim has no incarnation number.)"""
    operations: list[dict[str, Any]] = []
    for p in partitions:
        where = {"brokerId": str(p.broker_id), "partitionId": p.partition_id}
        operations.append({"operation": "PartitionPreRestoreOperation", **where})
        operations.append(
            {"operation": "PartitionRestoreOperation", **where, "backupIds": p.backup_ids}
        )
    brokers = sorted({p.broker_id for p in partitions})
    return operations + mode_operations(brokers, "PROCESSING")


class RecoveryCoordinator:
    def __init__(self, client: BrokerClient) -> None:
        self._client = client
        self._next_id = 1
        self.last: Change | None = None
        self.pending: Change | None = None
        self._tasks = OwnedTasks("cluster changes")

    def _brokers(self) -> list[NodeId]:
        return [NodeId(n) for n in range(self._client.cluster_size)]

    def _refuse_if_pending(self) -> None:
        if self.pending is not None:
            raise InvalidState(
                f"Another cluster change ({self.pending.id}) is in progress; wait until "
                "GET /actuator/cluster shows it as lastChange"
            )

    def _begin(self, operations: list[dict[str, Any]], *, dry_run: bool) -> Change:
        self._refuse_if_pending()
        change = Change(self._next_id, operations, _now_ms())
        if not dry_run:  # a dry run changes nothing, its id is not used up
            self._next_id += 1
        return change

    # -- mode ---------------------------------------------------------------------------------

    def change_mode(self, mode: BrokerMode, *, dry_run: bool) -> Change:
        """Start switching every broker to ``mode``. Raises InvalidState while another change
        is in progress."""
        change = self._begin(mode_operations(self._brokers(), mode), dry_run=dry_run)
        if not dry_run:
            self._run(change, self._set_mode(mode))
        return change

    async def _set_mode(self, mode: BrokerMode) -> None:
        await asyncio.gather(
            *(
                self._client.to_broker(node, ModeChangeRequest(mode), MODE_CHANGE_TIMEOUT_S)
                for node in self._brokers()
            )
        )

    async def modes(self) -> dict[NodeId, str]:
        """Each broker's mode as it says now ("UNREACHABLE" if it does not answer)."""

        async def ask(node: NodeId) -> str:
            try:
                answer = await self._client.to_broker(node, ModeChangeRequest(None), 5.0)
            except ZeebeSimError:
                return "UNREACHABLE"
            assert isinstance(answer, ModeChangeResponse), answer
            return answer.mode

        nodes = self._brokers()
        return dict(zip(nodes, await asyncio.gather(*(ask(n) for n in nodes)), strict=True))

    # -- restore ------------------------------------------------------------------------------

    async def start_restore(self, request: RestorePlanRequest, *, dry_run: bool) -> Change:
        """Check the cluster is recovering, resolve the plan, start it (unless ``dry_run``).

        Raises:
            InvalidState: a broker is not RECOVERING, or another change is in progress (409).
            NotFound: a backup is not COMPLETED on every partition (404).
            InvalidArgument: an empty window or a gap (400).
        """
        self._refuse_if_pending()
        modes = await self.modes()
        if not modes or any(m != "RECOVERING" for m in modes.values()):
            shown = ", ".join(f"broker {n}: {m}" for n, m in sorted(modes.items()))
            raise InvalidState(
                "Cannot restore: every broker must be in RECOVERING mode (PATCH "
                f"/v2/mode?mode=RECOVERING), but {shown or 'no broker is known'}"
            )
        plan = await self._plan(request)
        # Every replica a broker hosts is restored, one at a time across the cluster.
        partitions = [
            PartitionProgress(node, p, [int(i) for i in plan.partitions[p].backup_ids])
            for node, answer in sorted(self._client.brokers.items())
            for p in sorted(answer.partitions)
        ]
        change = self._begin(restore_operations(partitions), dry_run=dry_run)
        change.partitions = partitions
        if not dry_run:
            self._run(change, self._restore(change, plan))
        return change

    async def _plan(self, request: RestorePlanRequest) -> RestorePlanResponse:
        last: ZeebeSimError = InvalidState("No broker answered the restore plan request")
        for node in self._brokers():
            try:
                answer = await self._client.to_broker(node, request, PLAN_TIMEOUT_S)
            except (NotFound, InvalidArgument):
                raise
            except ZeebeSimError as exc:
                last = exc
                continue
            assert isinstance(answer, RestorePlanResponse), answer
            return answer
        raise last

    async def _restore(self, change: Change, plan: RestorePlanResponse) -> None:
        for progress in change.partitions:
            progress.state = "RESTORING"
            await self._client.to_broker(
                progress.broker_id,
                RestorePartitionRequest(
                    progress.partition_id, plan.partitions[progress.partition_id]
                ),
                PARTITION_RESTORE_TIMEOUT_S,
            )
            progress.state = "RESTORED"
            progress.completed_ms = _now_ms()
        await self._set_mode("PROCESSING")

    def _run(self, change: Change, work: Any) -> None:
        self.pending = change

        async def run() -> None:
            try:
                await work
                change.status = "COMPLETED"
            except ZeebeSimError as exc:
                change.status, change.failure = "FAILED", exc.message
            finally:
                change.completed_ms = _now_ms()
                self.pending = None
                self.last = change

        self._tasks.spawn(run())

    def last_completed_id(self) -> str | None:
        """The id of the last cluster change that completed (``/v2/topology`` shows it)."""
        last = self.last
        return str(last.id) if last is not None and last.status == "COMPLETED" else None

    def restore_status(self) -> dict[str, Any]:
        """The restore in flight (or the last one, if it FAILED). Raises NotFound if none."""
        change = self.pending if self.pending is not None else self.last
        if change is None or not change.partitions or change.status == "COMPLETED":
            raise NotFound("No restore is in progress")
        brokers = []
        for node in sorted({p.broker_id for p in change.partitions}):
            mine = [p for p in change.partitions if p.broker_id == node]
            brokers.append(
                {
                    "brokerId": str(node),
                    "partitionsRestored": sum(p.state == "RESTORED" for p in mine),
                    "partitionsToRestore": len(mine),
                    "partitions": [
                        {
                            "partitionId": p.partition_id,
                            "state": p.state,
                            "backupIds": p.backup_ids,
                            "completedAt": _iso(p.completed_ms),
                        }
                        for p in mine
                    ],
                }
            )
        body: dict[str, Any] = {
            "status": change.status,
            "changeId": str(change.id),
            "startedAt": _iso(change.started_ms),
            "brokers": brokers,
        }
        if change.failure is not None:
            body["failureReason"] = change.failure
        return body

    async def close(self) -> None:
        await self._tasks.stop()


# One coordinator per broker client: the REST and the management apps of a gateway share it.
_COORDINATORS: weakref.WeakKeyDictionary[BrokerClient, RecoveryCoordinator] = (
    weakref.WeakKeyDictionary()
)


def coordinator_of(client: BrokerClient) -> RecoveryCoordinator:
    coordinator = _COORDINATORS.get(client)
    if coordinator is None:
        coordinator = _COORDINATORS[client] = RecoveryCoordinator(client)
    return coordinator


# -- HTTP ---------------------------------------------------------------------------------------

CLIENT = web.AppKey("recovery client", BrokerClient)


def _planned(change: Change) -> dict[str, Any]:
    return {
        "changeId": str(change.id),
        "plannedChanges": [{"physicalTenantId": None, "operations": change.operations}],
    }


def _dry_run(request: web.Request) -> bool:
    raw = request.query.get("dryRun", "false")
    if raw not in ("true", "false"):
        raise InvalidArgument(f"dryRun must be true or false, got {raw!r}")
    return raw == "true"


async def change_mode(request: web.Request) -> web.Response:
    mode = request.query.get("mode")
    if mode not in MODES:
        raise InvalidArgument(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    coordinator = coordinator_of(request.app[CLIENT])
    change = coordinator.change_mode(mode, dry_run=_dry_run(request))
    return web.json_response(_planned(change))


def _time_ms(body: dict[str, Any], name: str) -> int | None:
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidArgument(f"{name} must be an ISO-8601 date-time string, got {raw!r}")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidArgument(f"{name} must be an ISO-8601 date-time, got {raw!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def restore_request(body: dict[str, Any]) -> RestorePlanRequest:
    """The restore request of a ``POST /v2/restore`` body. Raises InvalidArgument (400)."""
    unknown = sorted(set(body) - {"backupIds", "from", "to"})
    if unknown:
        raise InvalidArgument(f"Unknown field(s) in the restore request: {', '.join(unknown)}")
    ids = body.get("backupIds")
    from_ms, to_ms = _time_ms(body, "from"), _time_ms(body, "to")
    if ids is not None and (from_ms is not None or to_ms is not None):
        raise InvalidArgument("backupIds and from/to exclude each other: give one of them")
    if ids is None:
        if to_ms is None:
            raise InvalidArgument(
                "Give backupIds, or a time range with to (and optionally from): without "
                "an exporter position there is no automatic restore point"
            )
        if from_ms is not None and from_ms > to_ms:
            raise InvalidArgument("from must not be after to")
        return RestorePlanRequest([], from_ms, to_ms)
    if (
        not isinstance(ids, list)
        or not ids
        or not all(type(i) is int and 0 < i < 2**63 for i in ids)
    ):
        raise InvalidArgument(f"backupIds must be a non-empty list of backup ids > 0, got {ids!r}")
    return RestorePlanRequest([BackupId(i) for i in sorted(set(ids))])


async def post_restore(request: web.Request) -> web.Response:
    dry_run = _dry_run(request)
    wanted = restore_request(await json_body(request, optional=True))
    change = await coordinator_of(request.app[CLIENT]).start_restore(wanted, dry_run=dry_run)
    return web.json_response(_planned(change), status=202)


async def get_restore(request: web.Request) -> web.Response:
    return web.json_response(coordinator_of(request.app[CLIENT]).restore_status())


async def cluster(request: web.Request) -> web.Response:
    """The cluster's brokers and partitions, and its last and pending change."""
    client = request.app[CLIENT]
    coordinator = coordinator_of(client)
    brokers = [
        {
            "id": node,
            "state": "ACTIVE",
            "version": answer.version,
            "partitions": [
                {"id": p, "state": "ACTIVE" if role != "INACTIVE" else "INACTIVE", "priority": 1}
                for p, role in sorted(answer.partitions.items())
            ],
        }
        for node, answer in sorted(client.brokers.items())
    ]
    body: dict[str, Any] = {"version": coordinator.last.id if coordinator.last else 0}
    body["brokers"] = brokers
    if coordinator.last is not None:
        body["lastChange"] = coordinator.last.view()
    if coordinator.pending is not None:
        pending = coordinator.pending
        body["pendingChange"] = {**pending.view(), "pending": pending.operations}
    return web.json_response(body)


def add_rest_routes(app: web.Application, client: BrokerClient) -> None:
    app[CLIENT] = client
    app.router.add_patch("/v2/mode", change_mode)
    app.router.add_post("/v2/restore", post_restore)
    app.router.add_get("/v2/restore", get_restore)


def add_management_routes(app: web.Application, client: BrokerClient) -> None:
    app[CLIENT] = client
    app.router.add_get("/actuator/cluster", cluster)

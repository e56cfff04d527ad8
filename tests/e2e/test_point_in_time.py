"""Restore to a point in time and in-process restore on real processes (issue 12 item 5).

An in-process restore through Camunda's own SDK (`camunda-orchestration-sdk`'s recovery calls)
brings a running cluster back to a chain of backups without restarting a process, and the
result passes `zeebe-sim verify`."""

from __future__ import annotations

from pathlib import Path

import pytest
from camunda_orchestration_sdk import CamundaAsyncClient
from camunda_orchestration_sdk.errors import NotFoundError
from camunda_orchestration_sdk.models import Mode, RestoreRequest

from tests.conftest import DEMO_BPMN, FAST_BROKER_ARGS
from zeebe_sim.harness import ApiError, ClusterApi, eventually, run_cli, running_cluster

pytestmark = pytest.mark.slow


async def exists(api: ClusterApi, key: int) -> bool:
    """Whether the gateway finds the instance (404 is "no")."""
    try:
        await api.get_instance(key)
    except ApiError as exc:
        assert exc.status == 404, exc.body
        return False
    return True


async def test_the_sdk_restores_a_running_cluster_in_place(tmp_path: Path) -> None:
    """RECOVERING through the SDK, a restore of backups 20 and 21, its progress through the
    SDK until 404; every process keeps its pid; instances up to backup 21 are there, later
    ones are gone, new ones can be created; the stopped cluster passes verify."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    args = [*FAST_BROKER_ARGS, "--backup-dir", str(backups)]
    async with running_cluster(data, broker_args=args) as cluster:
        api = cluster.api
        await api.deploy(DEMO_BPMN)
        kept = [
            await api.create_instance("demo-process", {"correlationKey": f"a{i}"}) for i in range(3)
        ]
        await api.take_backup(20)
        assert (await api.wait_for_backup(20))["state"] == "COMPLETED"
        kept += [
            await api.create_instance("demo-process", {"correlationKey": f"b{i}"}) for i in range(3)
        ]
        await api.take_backup(21)
        assert (await api.wait_for_backup(21))["state"] == "COMPLETED"
        lost = [
            await api.create_instance("demo-process", {"correlationKey": f"c{i}"}) for i in range(3)
        ]
        pids = {n: p.pid for n, p in cluster.brokers.items()}
        assert cluster.gateway is not None
        gateway_pid = cluster.gateway.pid

        sdk = CamundaAsyncClient(
            configuration={
                "CAMUNDA_REST_ADDRESS": cluster.rest_url,
                "CAMUNDA_AUTH_STRATEGY": "NONE",
            }
        )
        try:
            change = await sdk.change_cluster_mode(mode=Mode.RECOVERING)
            await api.cluster_change_done(change.change_id)
            planned = await sdk.restore(data=RestoreRequest(backup_ids=[20, 21]))
            # The SDK reads every operation as its first matching model (a broker operation);
            # the other fields are kept as additional properties.
            restores = [
                op.to_dict()
                for op in planned.planned_changes[0].operations
                if op.operation == "PartitionRestoreOperation"
            ]
            assert len(restores) == 3 and all(op["backupIds"] == [20, 21] for op in restores)
            seen: list[str] = []

            async def finished() -> bool:
                try:
                    status = await sdk.get_restore_status()
                except NotFoundError:
                    return True
                seen.append(status.status.value)
                return False

            await eventually(finished, timeout_s=120, interval_s=0.05)
            assert set(seen) <= {"IN_PROGRESS"}, seen  # never FAILED on the way
            last = await api.cluster_change_done(planned.change_id)
            assert last["status"] == "COMPLETED", last
        finally:
            await sdk.aclose()

        assert {n: p.pid for n, p in cluster.brokers.items()} == pids
        assert cluster.gateway.pid == gateway_pid
        assert all(p.process.returncode is None for p in cluster.brokers.values())
        for key in kept:
            assert await exists(api, key), key
        for key in lost:
            assert not await exists(api, key), key
        await api.create_instance("demo-process", {"correlationKey": "after"})
    code, report = await run_cli("verify", "--data-dir", str(data))
    assert code == 0, report

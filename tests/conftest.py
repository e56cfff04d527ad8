"""Shared fixtures: a real S3-compatible server (moto) for the session with a fresh bucket per
test, and settings for real clusters on OS-chosen ports."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest
from hypothesis import settings
from moto.server import ThreadedMotoServer

from tests.backup_store.kits import S3_ACCESS_KEY, S3_SECRET_KEY

# Hypothesis's per-example deadline (200 ms) measures the machine, not the code: on a loaded
# 2-core CI machine an ordinary example can take longer. Property tests bound their size
# instead (max_examples, sizes of the strategies).
settings.register_profile("zeebe-sim", deadline=None)
settings.load_profile("zeebe-sim")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_BPMN = EXAMPLES / "demo-process.bpmn"
ORDER_BPMN = EXAMPLES / "order-process.bpmn"
# Fast timers for tests: snapshots often, retries quickly, short gateway timeout.
FAST_BROKER_ARGS = ["--snapshot-period", "2s", "--retry-initial", "200ms", "--retry-max", "1s"]
FAST_GATEWAY_ARGS = ["--request-timeout", "5s"]
# What the actuator shows of a COMPLETED partition in a status (REFERENCE §1), but the
# snapshotId, which a backup taken before any snapshot has not.
COMPLETED_DETAIL_FIELDS = {
    "partitionId",
    "state",
    "createdAt",
    "lastUpdatedAt",
    "firstLogPosition",
    "checkpointPosition",
    "brokerId",
    "brokerVersion",
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on a free port (port 0: the OS picks, so suites can run side by side)."""
    # werkzeug logs every request at INFO; that is noise in test output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A new, empty bucket for this test."""
    name = f"backups-{uuid.uuid4().hex[:20]}"
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
    )
    client.create_bucket(Bucket=name)
    return name

"""Fixtures for the backup-store suites: a real S3-compatible server (moto) for the session, a
fresh bucket per test, and the ``kit`` fixture that parametrises the contract suite over every
store."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import boto3  # type: ignore[import-untyped]
import pytest
from moto.server import ThreadedMotoServer

from .kits import S3_ACCESS_KEY, S3_SECRET_KEY, FilesystemKit, MemoryKit, S3Kit, StoreKit


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


@pytest.fixture
def s3_kit(moto_endpoint: str, s3_bucket: str) -> S3Kit:
    return S3Kit(moto_endpoint, s3_bucket)


@pytest.fixture(params=["memory", "filesystem", "s3"])
async def kit(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[StoreKit]:
    """Each store in turn, on a fresh medium."""
    kit: StoreKit
    if request.param == "memory":
        kit = MemoryKit()
    elif request.param == "filesystem":
        kit = FilesystemKit(tmp_path_factory.mktemp("store"))
    else:
        kit = request.getfixturevalue("s3_kit")
    try:
        yield kit
    finally:
        await kit.close()

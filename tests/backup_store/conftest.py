"""Fixtures for the backup-store suites: the ``kit`` fixture that parametrises the contract suite
over every store (the S3 server and buckets come from ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .kits import FilesystemKit, MemoryKit, S3Kit, StoreKit


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
